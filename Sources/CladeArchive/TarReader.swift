import CArchive

/// A libarchive reader over one tar file, set up the way every clade reader needs: POSIX and
/// GNU tar, and optionally gzip or zstd compression and an empty file read as an empty archive.
/// Each caller turns ``Failure`` into its own typed error, naming what it was reading.
public final class TarReader {
    /// Why the archive could not be opened or read further; `message` is libarchive's.
    public enum Failure: Error, Sendable {
        case cannotAllocate
        case cannotOpen(message: String)
        case unreadable(message: String)

        public var message: String {
            switch self {
            case .cannotAllocate: return "cannot allocate a tar reader"
            case .cannotOpen(let message), .unreadable(let message): return message
            }
        }
    }

    /// The libarchive handle, for reading an entry's data.
    public let handle: OpaquePointer

    /// Opens `path`, reading `blockBytes` at a time.
    public init(path: String, blockBytes: Int = 1 << 20, compressed: Bool = false, allowEmpty: Bool = false) throws(Failure) {
        guard let handle = archive_read_new() else { throw .cannotAllocate }
        if compressed {
            archive_read_support_filter_gzip(handle)
            archive_read_support_filter_zstd(handle)
        }
        archive_read_support_format_tar(handle)
        archive_read_support_format_gnutar(handle)
        if allowEmpty { archive_read_support_format_empty(handle) }
        guard archive_read_open_filename(handle, path, blockBytes) == ARCHIVE_OK else {
            let message = Self.message(handle)
            archive_read_free(handle)
            throw .cannotOpen(message: message)
        }
        self.handle = handle
    }

    deinit {
        archive_read_close(handle)
        archive_read_free(handle)
    }

    /// The next entry's header, or nil at the end. A warning counts as readable.
    public func next() throws(Failure) -> OpaquePointer? {
        var entry: OpaquePointer?
        let status = archive_read_next_header(handle, &entry)
        if status == ARCHIVE_EOF { return nil }
        guard status == ARCHIVE_OK || status == ARCHIVE_WARN, let entry else { throw .unreadable(message: errorMessage) }
        return entry
    }

    /// libarchive's description of the last failure.
    public var errorMessage: String { Self.message(handle) }

    /// libarchive's description of the last failure on any handle.
    public static func message(_ handle: OpaquePointer) -> String {
        archive_error_string(handle).map { String(cString: $0) } ?? "unknown error"
    }
}
