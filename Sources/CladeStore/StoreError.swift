/// Failures of the on-disk store. Every message names the path involved and, where
/// there is one, the command that fixes it.
public enum StoreError: Error, CustomStringConvertible, Sendable {
    case systemCall(String, path: String, errno: Int32)
    case notWritable(path: String, reason: String)
    case digestMismatch(path: String, expected: String, actual: String)
    case sizeMismatch(path: String, expected: Int64, actual: Int64)
    case invalidDigest(String)
    case missingBlob(String)
    case commandFailed(command: String, status: Int32, output: String)
    case commandNotFound(String, fix: String)
    case invalidName(String, reason: String)

    public var description: String {
        switch self {
        case .systemCall(let call, let path, let code):
            return "\(call) \(path) failed: \(errnoDescription(code))"
        case .notWritable(let path, let reason):
            return "the store at \(path) is not writable (\(reason)); choose another with --home DIR or CLADE_HOME"
        case .digestMismatch(let path, let expected, let actual):
            return "content of \(path) has digest \(actual), expected \(expected); the file is corrupt or was changed"
        case .sizeMismatch(let path, let expected, let actual):
            return "\(path) is \(actual) bytes, expected \(expected); the file is truncated or corrupt"
        case .invalidDigest(let text):
            return "'\(text)' is not a digest of the form sha256:<64 lowercase hex digits>"
        case .missingBlob(let digest):
            return "blob \(digest) is missing from the store; rebuild or re-import what referenced it"
        case .commandFailed(let command, let status, let output):
            let tail = output.split(separator: "\n").suffix(8).joined(separator: "\n")
            return "\(command) exited with status \(status)\(tail.isEmpty ? "" : ":\n\(tail)")"
        case .commandNotFound(let command, let fix):
            return "\(command) was not found on PATH; \(fix)"
        case .invalidName(let name, let reason):
            return "'\(name)' is not a valid name: \(reason)"
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The text for an errno value, e.g. "No such file or directory (errno 2)".
public func errnoDescription(_ code: Int32) -> String {
    "\(String(cString: strerror(code))) (errno \(code))"
}

extension StoreError: CategorizedError {
    public var category: ErrorCategory {
        switch self {
        case .invalidName, .invalidDigest: return .badInput
        case .digestMismatch, .sizeMismatch, .missingBlob: return .damaged
        case .commandNotFound: return .unsupported
        case .systemCall, .notWritable, .commandFailed: return .internal
        }
    }
}
