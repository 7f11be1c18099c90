import Foundation

extension DecodingError {
    /// What is wrong, naming the field by its path (`manifests.[0].digest`), for messages a
    /// person can act on: a request body, a pack's manifest, a metadata file.
    public var fieldDescription: String {
        let path = Self.path(of: context)
        switch self {
        case .keyNotFound(let key, let context):
            let parent = Self.path(of: context)
            return parent.isEmpty ? "field '\(key.stringValue)' is required" : "field '\(key.stringValue)' is required in '\(parent)'"
        case .typeMismatch(let type, _): return "field '\(path)' must be \(Self.typeName(type))"
        case .valueNotFound(let type, _): return "field '\(path)' must be \(Self.typeName(type)), not null"
        case .dataCorrupted(let context):
            if path.isEmpty { return "the document is not valid JSON" + (context.underlyingError.map { ": \($0)" } ?? "") }
            return "field '\(path)': \(context.underlyingError.map { "\($0)" } ?? context.debugDescription)"
        @unknown default: return "\(self)"
        }
    }

    private var context: DecodingError.Context? {
        switch self {
        case .keyNotFound(_, let context), .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return context
        @unknown default: return nil
        }
    }

    private static func path(of context: DecodingError.Context?) -> String {
        (context?.codingPath ?? []).map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type, is Int32.Type, is Int64.Type, is UInt64.Type: return "an integer"
        case is Double.Type: return "a number"
        case is Bool.Type: return "a boolean"
        default:
            let name = "\(type)"
            return name.hasPrefix("Array") ? "an array" : name.hasPrefix("Dictionary") ? "an object" : "a \(name)"
        }
    }
}
