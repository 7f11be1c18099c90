import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// A Connect RPC status (connectrpc.com/docs/protocol): the codes, their HTTP statuses for unary
/// errors, and the error body `{"code": "...", "message": "..."}`.
struct ConnectError: Error, Sendable, CustomStringConvertible {
    enum Code: String, Sendable {
        case canceled, unknown, invalidArgument = "invalid_argument", deadlineExceeded = "deadline_exceeded"
        case notFound = "not_found", alreadyExists = "already_exists", permissionDenied = "permission_denied"
        case resourceExhausted = "resource_exhausted", failedPrecondition = "failed_precondition", aborted
        case outOfRange = "out_of_range", unimplemented, `internal`, unavailable, dataLoss = "data_loss", unauthenticated

        var httpStatus: HTTPResponse.Status {
            switch self {
            case .canceled: .init(code: 499)
            case .invalidArgument, .failedPrecondition, .outOfRange: .badRequest
            case .deadlineExceeded: .gatewayTimeout
            case .notFound: .notFound
            case .alreadyExists, .aborted: .conflict
            case .permissionDenied: .forbidden
            case .resourceExhausted: .tooManyRequests
            case .unimplemented: .notImplemented
            case .unavailable: .serviceUnavailable
            case .unauthenticated: .unauthorized
            case .unknown, .internal, .dataLoss: .internalServerError
            }
        }
    }

    var code: Code
    var message: String

    init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    var description: String { "\(code.rawValue): \(message)" }

    var json: [String: Any] { ["code": code.rawValue, "message": message] }
}

/// The Connect protocol's framing over HTTP/1.1 or HTTP/2 with the JSON codec: unary calls are a
/// plain JSON body each way; server-streaming calls send and receive envelopes (a flags byte, a
/// big-endian length, the message), the last response envelope flagged end-of-stream and
/// carrying the error, if any.
enum ConnectRPC {
    static let endStreamFlag: UInt8 = 0x02
    static let compressedFlag: UInt8 = 0x01
    /// Largest request message this server reads (file contents travel over `/files`, not RPC).
    static let maxRequestBytes = 4 << 20

    /// The deadline a client set with `Connect-Timeout-Ms`, in seconds, if any.
    static func timeout(of request: Request) -> Double? {
        guard let text = request.headers[HTTPField.Name("Connect-Timeout-Ms")!], let ms = Double(text), ms > 0 else { return nil }
        return ms / 1000
    }

    /// Reads the request message: the whole body for unary calls, the one envelope for streaming ones.
    static func message(of request: Request, streaming: Bool) async throws -> ProtoJSON {
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: maxRequestBytes)
        } catch {
            throw ConnectError(.resourceExhausted, "the request message is larger than \(maxRequestBytes) bytes")
        }
        var bytes = Data(buffer.readableBytesView)
        if streaming {
            guard bytes.count >= 5 else { throw ConnectError(.invalidArgument, "a streaming request must carry one enveloped message") }
            let flags = bytes[bytes.startIndex]
            guard flags & compressedFlag == 0 else { throw ConnectError(.unimplemented, "compressed messages are not supported; send them uncompressed") }
            let length = bytes[(bytes.startIndex + 1)..<(bytes.startIndex + 5)].reduce(0) { $0 << 8 | Int($1) }
            guard bytes.count >= 5 + length else { throw ConnectError(.invalidArgument, "the request envelope says \(length) bytes but the body is shorter") }
            bytes = bytes.subdata(in: (bytes.startIndex + 5)..<(bytes.startIndex + 5 + length))
        }
        if bytes.isEmpty { return ProtoJSON([:]) }
        guard let object = try? JSONSerialization.jsonObject(with: bytes), let fields = object as? [String: Any] else {
            throw ConnectError(.invalidArgument, "the request message is not a JSON object")
        }
        return ProtoJSON(fields)
    }

    /// A unary success.
    static func unary(_ message: [String: Any]) -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: json(message))))
    }

    /// A unary failure: the code's HTTP status and the Connect error body.
    static func unaryError(_ error: ConnectError) -> Response {
        Response(status: error.code.httpStatus, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: json(error.json))))
    }

    static func envelope(_ message: [String: Any], flags: UInt8 = 0) -> ByteBuffer {
        envelope(json(message), flags: flags)
    }

    static func envelope(_ payload: Data, flags: UInt8 = 0) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(payload.count + 5)
        buffer.writeInteger(flags)
        buffer.writeInteger(UInt32(payload.count))
        buffer.writeBytes(payload)
        return buffer
    }

    /// The end-of-stream envelope: `{}` or `{"error": {...}}`.
    static func endOfStream(_ error: ConnectError?) -> ByteBuffer {
        envelope(error.map { ["error": $0.json] } ?? [:], flags: endStreamFlag)
    }

    /// A server-streaming response. `produce` sends messages through `send`; whatever it throws
    /// becomes the end-of-stream error. With a deadline, the stream ends `deadline_exceeded` when
    /// it passes and `onDeadline` runs (e.g. to kill the process the stream was about). With a
    /// keepalive interval, an empty `keepalive` message goes out that often so proxies keep the
    /// connection.
    static func stream(
        deadline: Double?, keepalive: (interval: Double, message: Data)?,
        onDeadline: @escaping @Sendable () async -> Void = {},
        _ produce: @escaping @Sendable (_ send: @escaping @Sendable ([String: Any]) async throws -> Void) async throws -> Void
    ) -> Response {
        let producer = ProducerTask()
        let (stream, writer) = BackpressuredStream.make(buffered: 64) { producer.cancel() }
        let send: @Sendable (ByteBuffer) async throws -> Void = { buffer in try await writer.write(buffer) }
        let sendMessage: @Sendable ([String: Any]) async throws -> Void = { message in try await send(envelope(message)) }
        let task = Task {
            let outcome: ConnectError? = await withTaskGroup(of: ConnectError??.self) { group in
                group.addTask {
                    do {
                        try await produce(sendMessage)
                        return .some(nil)
                    } catch is CancellationError {
                        return nil
                    } catch {
                        return .some(connectError(from: error))
                    }
                }
                if let deadline {
                    group.addTask {
                        try? await Task.sleep(nanoseconds: UInt64(deadline * 1e9))
                        if Task.isCancelled { return nil }
                        await onDeadline()
                        return .some(ConnectError(.deadlineExceeded, "the request's deadline (\(deadline) s) passed"))
                    }
                }
                if let keepalive {
                    group.addTask {
                        while !Task.isCancelled {
                            try? await Task.sleep(nanoseconds: UInt64(keepalive.interval * 1e9))
                            if Task.isCancelled { break }
                            do { try await send(envelope(keepalive.message)) } catch { break }
                        }
                        return nil
                    }
                }
                var result: ConnectError?? = nil
                while let next = await group.next() {
                    if let finished = next {
                        result = finished
                        break
                    }
                }
                group.cancelAll()
                return result ?? nil
            }
            try? await send(endOfStream(outcome))
            writer.finish()
        }
        producer.set(task)
        return Response(status: .ok, headers: [.contentType: "application/connect+json"], body: ResponseBody(asyncSequence: stream))
    }

    /// Maps clade's errors to Connect codes through the same categories the rest of the API uses.
    static func connectError(from error: Error) -> ConnectError {
        let failure = E2BFailure(error)
        return ConnectError(failure.code, failure.message)
    }

    static func json(_ object: [String: Any]) -> Data {
        (try? JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])) ?? Data("{}".utf8)
    }
}

/// A decoded proto3 JSON message: fields by their JSON name (lowerCamelCase) or proto name
/// (snake_case), both of which the proto3 JSON mapping accepts.
struct ProtoJSON: @unchecked Sendable {
    let fields: [String: Any]

    init(_ fields: [String: Any]) { self.fields = fields }

    private func raw(_ name: String) -> Any? {
        if let value = fields[name] { return value }
        return fields[Self.snakeCase(name)]
    }

    func string(_ name: String) -> String? { raw(name) as? String }
    func bool(_ name: String) -> Bool { (raw(name) as? Bool) ?? false }
    func has(_ name: String) -> Bool { raw(name) != nil && !(raw(name) is NSNull) }

    /// Integers arrive as numbers, or as strings for 64-bit fields.
    func int(_ name: String) -> Int? {
        switch raw(name) {
        case let number as NSNumber: number.intValue
        case let text as String: Int(text)
        default: nil
        }
    }

    func message(_ name: String) -> ProtoJSON? { (raw(name) as? [String: Any]).map(ProtoJSON.init) }
    func strings(_ name: String) -> [String] { (raw(name) as? [Any])?.compactMap { $0 as? String } ?? [] }
    func map(_ name: String) -> [String: String] { (raw(name) as? [String: Any])?.compactMapValues { $0 as? String } ?? [:] }
    func bytes(_ name: String) -> Data? { string(name).flatMap { Data(base64Encoded: $0) ?? Data(base64URL: $0) } }

    /// An enum field: its name, or its number mapped through `names`.
    func enumName(_ name: String, names: [Int: String]) -> String? {
        switch raw(name) {
        case let text as String: text
        case let number as NSNumber: names[number.intValue]
        default: nil
        }
    }

    static func snakeCase(_ name: String) -> String {
        var out = ""
        for character in name {
            if character.isUppercase { out += "_" + character.lowercased() } else { out.append(character) }
        }
        return out
    }

    /// A `google.protobuf.Timestamp` in JSON: RFC 3339 in UTC.
    static func timestamp(_ seconds: Double) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date(timeIntervalSince1970: seconds))
    }

    /// An RFC 3339 time as clients write it: any number of fractional digits (Python's
    /// `isoformat` writes six), `Z` or an offset, or none (read as UTC).
    static func date(rfc3339 text: String) -> Date? {
        var whole = text
        var fraction = 0.0
        if let dot = text.firstIndex(of: ".") {
            let digits = text[text.index(after: dot)...].prefix { $0.isNumber }
            fraction = Double("0." + digits) ?? 0
            whole = String(text[..<dot]) + String(text[text.index(after: dot)...].dropFirst(digits.count))
        }
        if whole.count == 19 { whole += "Z" }
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: whole).map { $0.addingTimeInterval(fraction) }
    }
}

extension Data {
    /// Base64 in the URL-safe alphabet, unpadded (the proto3 JSON mapping accepts both alphabets).
    init?(base64URL text: String) {
        var standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while standard.count % 4 != 0 { standard += "=" }
        self.init(base64Encoded: standard)
    }
}
