import CladeVMM
import Foundation

/// One message from QEMU's machine protocol.
public enum QMPMessage: Sendable, Equatable {
    /// The banner QEMU sends on connect, before capabilities are negotiated.
    case greeting(version: String)
    case success(id: String?, value: JSONValue)
    case failure(id: String?, errorClass: String, description: String)
    case event(name: String, data: JSONValue, timestamp: Double?)
}

/// QMP's wire format: one JSON object per line in each direction.
public enum QMPCodec {
    public static func encodeCommand(_ name: String, arguments: [String: JSONValue]? = nil, id: String) throws -> Data {
        var object: [String: JSONValue] = ["execute": .string(name), "id": .string(id)]
        if let arguments { object["arguments"] = .object(arguments) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        var data = try encoder.encode(JSONValue.object(object))
        data.append(0x0A)
        return data
    }

    public static func decode(_ line: some DataProtocol) throws -> QMPMessage {
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: Data(line))
        } catch {
            throw ChannelError.malformed("QMP sent a line that is not JSON: \(String(decoding: Data(line), as: UTF8.self).prefix(200))")
        }
        let id = value["id"]?.stringValue
        if let greeting = value["QMP"] {
            let qemu = greeting["version"]?["qemu"]
            let version = [qemu?["major"], qemu?["minor"], qemu?["micro"]]
                .map { $0?.numberValue.map { String(Int($0)) } ?? "?" }
                .joined(separator: ".")
            return .greeting(version: version)
        }
        if let result = value["return"] {
            return .success(id: id, value: result)
        }
        if let error = value["error"] {
            return .failure(
                id: id, errorClass: error["class"]?.stringValue ?? "GenericError",
                description: error["desc"]?.stringValue ?? "\(error)")
        }
        if let event = value["event"]?.stringValue {
            let timestamp = value["timestamp"].flatMap { stamp -> Double? in
                guard let seconds = stamp["seconds"]?.numberValue else { return nil }
                return seconds + (stamp["microseconds"]?.numberValue ?? 0) / 1e6
            }
            return .event(name: event, data: value["data"] ?? .null, timestamp: timestamp)
        }
        throw ChannelError.malformed("QMP message of unknown shape: \(value)")
    }
}
