#if canImport(Glibc)
import Glibc
#endif
import CladeStore

/// A layer that cannot be applied. Every case names the layer and, where there is one, the
/// entry, so a user can tell which part of which image is at fault.
public enum LayerError: Error, CustomStringConvertible, Sendable {
    /// The layer tries to write outside the root or in a way that could: refused, nothing kept.
    case hostileEntry(layer: String, entry: String, reason: String)
    /// The layer is not a readable tar stream (truncated, corrupt, unknown compression).
    case unreadable(layer: String, reason: String)
    /// The layers unpack to more than the image's size limit.
    case tooLarge(layer: String, limit: Int64)
    /// The layers hold more entries than the image's limit.
    case tooManyEntries(layer: String, limit: Int)
    /// An entry clade cannot represent in the root filesystem.
    case unsupportedEntry(layer: String, entry: String, reason: String)
    /// Writing the unpacked root on the host failed.
    case hostFailure(layer: String, entry: String, operation: String, errno: Int32)

    public var description: String {
        switch self {
        case .hostileEntry(let layer, let entry, let reason):
            return "layer \(layer) was refused: entry '\(entry)' \(reason); the image is unsafe to unpack and nothing of it was kept"
        case .unreadable(let layer, let reason):
            return "layer \(layer) is not a readable tar stream (\(reason)); the blob is truncated or corrupt: pull or import the image again"
        case .tooLarge(let layer, let limit):
            return "layer \(layer) unpacks past the image size limit of \(limit >> 20) MiB; raise --size-limit if the image is really that large"
        case .tooManyEntries(let layer, let limit):
            return "layer \(layer) brings the image past \(limit) files; the image is refused as a tar bomb"
        case .unsupportedEntry(let layer, let entry, let reason):
            return "layer \(layer): entry '\(entry)' cannot be stored: \(reason)"
        case .hostFailure(let layer, let entry, let operation, let code):
            return "unpacking layer \(layer) failed at '\(entry)': \(operation): \(String(cString: strerror(code))); check free space in the clade store"
        }
    }
}

extension LayerError: CategorizedError {
    public var category: ErrorCategory {
        switch self {
        case .hostileEntry, .tooLarge, .tooManyEntries, .unsupportedEntry: return .badInput
        case .unreadable: return .damaged
        case .hostFailure: return .internal
        }
    }
}
