import CladeStore

/// Why a pack could not be written, read, pushed or pulled. Every refusal names the blob or
/// field at fault; nothing a refused pack carried is left in the store.
public enum PackError: Error, CustomStringConvertible, Sendable {
    case notALayout(path: String, reason: String)
    case malformed(what: String, reason: String)
    case newerFormat(what: String, found: String, supported: Int)
    case unknownMediaType(blob: String, mediaType: String)
    case missingBlob(Digest, what: String)
    case digestMismatch(what: String, expected: Digest, actual: Digest)
    case sizeMismatch(what: String, declared: Int64, actual: Int64)
    case tooLarge(what: String, declared: Int64, limit: Int64, reason: String)
    case corruptCompression(what: String, reason: String)
    case cycle([String])
    case ambiguousTag(String)
    case noSnapshot(String)
    case unsafeArchiveEntry(name: String, reason: String)
    case hostPath(what: String, value: String)
    case tagTaken(String)
    case snapshotIncomplete(tag: String, reason: String)
    case compression(String)
    case archive(String)
    case registry(String)
    case invalidReference(String, reason: String)

    public var description: String {
        switch self {
        case .notALayout(let path, let reason):
            return "\(path) is not a clade pack (OCI image layout): \(reason)"
        case .malformed(let what, let reason):
            return "\(what) is malformed: \(reason)"
        case .newerFormat(let what, let found, let supported):
            return "\(what) uses pack format \(found), but this clade reads format \(supported).x at most; upgrade clade to read it"
        case .unknownMediaType(let blob, let mediaType):
            return "\(blob) has media type '\(mediaType)', which this clade does not know and the pack does not mark optional; upgrade clade to read it"
        case .missingBlob(let digest, let what):
            return "\(what) names blob \(digest), which the pack does not contain; the pack is incomplete"
        case .digestMismatch(let what, let expected, let actual):
            return "\(what) should have digest \(expected) but its bytes hash to \(actual); the pack is corrupt or was tampered with"
        case .sizeMismatch(let what, let declared, let actual):
            return "\(what) is declared as \(declared) bytes but holds \(actual); the pack is truncated or lies about its size"
        case .tooLarge(let what, let declared, let limit, let reason):
            return "\(what) claims \(declared) bytes, more than \(limit) (\(reason)); refusing it"
        case .corruptCompression(let what, let reason):
            return "\(what) is not valid zstd data (\(reason)); the pack is truncated or corrupt"
        case .cycle(let chain):
            return "the pack's snapshots name each other as parents in a cycle (\(chain.joined(separator: " → "))); refusing it"
        case .ambiguousTag(let tag):
            return "the pack's index lists more than one manifest for tag '\(tag)'; refusing an ambiguous pack"
        case .noSnapshot(let reason):
            return "the pack holds no snapshot to restore: \(reason)"
        case .unsafeArchiveEntry(let name, let reason):
            return "the tar archive entry '\(name)' is refused: \(reason)"
        case .hostPath(let what, let value):
            return "\(what) names '\(value)', a path; a pack names content by digest only, so it is refused"
        case .tagTaken(let tag):
            return "snapshot '\(tag)' already exists in this store; choose another name with --tag NEW, or replace it with --force"
        case .snapshotIncomplete(let tag, let reason):
            return "snapshot '\(tag)' cannot be packed: \(reason)"
        case .compression(let reason):
            return "zstd compression failed: \(reason)"
        case .archive(let reason):
            return "tar archive error: \(reason)"
        case .registry(let reason):
            return reason
        case .invalidReference(let text, let reason):
            return "'\(text)' is not a registry reference (\(reason)); write HOST[:PORT]/REPOSITORY[:TAG], e.g. 127.0.0.1:5000/snapshots/py:v1"
        }
    }
}

extension PackError: CategorizedError {
    public var category: ErrorCategory {
        switch self {
        case .registry: return .guestFailure  // the remote end failed: a bad gateway
        case .tagTaken, .ambiguousTag: return .conflict
        case .snapshotIncomplete: return .damaged
        case .compression, .archive: return .internal
        case .newerFormat, .unknownMediaType: return .unsupported
        default: return .badInput  // what was handed to clade (a pack, a reference) is wrong
        }
    }
}
