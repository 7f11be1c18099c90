import CladeStore
import Foundation

/// Shared JSON settings for clade's metadata files: ISO-8601 dates, sorted keys.
public enum JSONFiles {
    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }

    public static func write<T: Encodable>(_ value: T, to url: URL) throws {
        try FileSystem.writeAtomically(try encoder().encode(value), to: url)
    }

    /// Reads a JSON file; nil when it does not exist, an error when it exists but cannot be decoded.
    public static func read<T: Decodable>(_ type: T.Type, from url: URL) throws -> T? {
        guard try FileSystem.exists(url) else { return nil }
        let data = try Data(contentsOf: url)
        do {
            return try decoder().decode(type, from: data)
        } catch let error as ModelError {
            throw error
        } catch let error as DecodingError {
            throw ModelError.corrupt(path: url.path, reason: error.fieldDescription)
        } catch {
            throw ModelError.corrupt(path: url.path, reason: "\(error)")
        }
    }
}
