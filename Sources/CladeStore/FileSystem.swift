#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import Foundation

/// Thin, error-preserving wrappers over the POSIX calls the store needs.
///
/// The rule from seed 003: only ENOENT means "absent". Every other failure of `stat` or
/// `open` propagates, so an unreadable file never silently switches a code path.
public enum FileSystem {
    /// `lseek` whence values Glibc's Swift overlay does not export.
    public static let seekData: Int32 = 3
    public static let seekHole: Int32 = 4

    /// The subset of `stat` the store uses.
    public struct Status: Sendable, Equatable {
        public let inode: UInt64
        public let device: UInt64
        public let linkCount: UInt64
        public let size: Int64
        public let mode: UInt32
        /// Bytes actually allocated on disk (512-byte blocks × 512).
        public let allocatedBytes: Int64

        public var isRegularFile: Bool { mode & S_IFMT == S_IFREG }
        public var isDirectory: Bool { mode & S_IFMT == S_IFDIR }
        public var isSymbolicLink: Bool { mode & S_IFMT == S_IFLNK }
    }

    /// Hook for tests: when set, `status(of:)` consults it first and a non-nil errno is thrown.
    nonisolated(unsafe) public static var injectedStatError: ((String) -> Int32?)?

    /// `lstat`; nil only when the path does not exist.
    public static func status(of url: URL) throws -> Status? {
        if let inject = injectedStatError, let code = inject(url.path) {
            if code == ENOENT { return nil }
            throw StoreError.systemCall("stat", path: url.path, errno: code)
        }
        var info = stat()
        guard lstat(url.path, &info) == 0 else {
            let code = errno
            if code == ENOENT { return nil }
            throw StoreError.systemCall("stat", path: url.path, errno: code)
        }
        return Status(
            inode: UInt64(info.st_ino), device: UInt64(info.st_dev), linkCount: UInt64(info.st_nlink),
            size: Int64(info.st_size), mode: UInt32(info.st_mode), allocatedBytes: Int64(info.st_blocks) * 512)
    }

    /// True when something exists at `url`; errors other than ENOENT propagate.
    public static func exists(_ url: URL) throws -> Bool { try status(of: url) != nil }

    /// Opens a file, throwing a `StoreError` carrying the real errno on failure.
    public static func open(_ url: URL, flags: Int32, mode: mode_t = 0o644) throws -> Int32 {
        let fd = Glibc.open(url.path, flags | O_CLOEXEC, mode)
        guard fd >= 0 else { throw StoreError.systemCall("open", path: url.path, errno: errno) }
        return fd
    }

    /// Calls `body` with successive chunks of the file; returns the total byte count.
    @discardableResult
    public static func forEachChunk(of url: URL, chunkSize: Int = 4 << 20, _ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Int64 {
        let fd = try open(url, flags: O_RDONLY)
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var total: Int64 = 0
        while true {
            let count = read(fd, buffer.baseAddress, chunkSize)
            if count < 0 {
                if errno == EINTR { continue }
                throw StoreError.systemCall("read", path: url.path, errno: errno)
            }
            if count == 0 { return total }
            try body(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            total += Int64(count)
        }
    }

    /// Reads a procfs file to its end. (procfs reports size 0, so size-based reads return nothing.)
    public static func readProcFile(_ path: String) throws -> Data {
        let fd = try open(URL(fileURLWithPath: path), flags: O_RDONLY)
        defer { close(fd) }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 {
                if errno == EINTR { continue }
                throw StoreError.systemCall("read", path: path, errno: errno)
            }
            if count == 0 { return data }
            data.append(contentsOf: buffer[0..<count])
        }
    }

    /// fsyncs a file or directory by path.
    public static func sync(_ url: URL) throws {
        let fd = try open(url, flags: O_RDONLY)
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw StoreError.systemCall("fsync", path: url.path, errno: errno) }
    }

    /// Writes `data` to `url` atomically: a temporary file in the same directory, fsync, rename, fsync of the directory.
    public static func writeAtomically(_ data: Data, to url: URL, mode: mode_t = 0o644) throws {
        let directory = url.deletingLastPathComponent()
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let fd = try open(temporary, flags: O_WRONLY | O_CREAT | O_EXCL, mode: mode)
        var failure: StoreError?
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let count = write(fd, raw.baseAddress! + offset, raw.count - offset)
                if count < 0 {
                    if errno == EINTR { continue }
                    failure = .systemCall("write", path: temporary.path, errno: errno)
                    return
                }
                offset += count
            }
        }
        if failure == nil, fsync(fd) != 0 { failure = .systemCall("fsync", path: temporary.path, errno: errno) }
        close(fd)
        if failure == nil, rename(temporary.path, url.path) != 0 { failure = .systemCall("rename", path: url.path, errno: errno) }
        if let failure {
            unlink(temporary.path)
            throw failure
        }
        try? sync(directory)
    }

    /// Removes a file or directory tree; absence is not an error.
    /// Removes a file or directory tree. Something already gone is success, also when another
    /// process removes it (or part of it) at the same time.
    public static func remove(_ url: URL) throws {
        var attempt = 0
        while try exists(url) {
            attempt += 1
            do {
                try FileManager.default.removeItem(at: url)
                return
            } catch {
                guard try exists(url) else { return }
                // Sealed blobs and snapshot directories are read-only: make them writable and retry.
                // A concurrent remover can also make one pass fail on an entry it took first.
                _ = chmod(url.path, 0o755)
                if attempt >= 3 { throw error }
            }
        }
    }

    /// Moves `source` to `destination`, replacing it; across filesystems by copy and remove.
    public static func moveReplacing(_ source: URL, to destination: URL) throws {
        if rename(source.path, destination.path) == 0 { return }
        let error = errno
        guard error == EXDEV else { throw StoreError.systemCall("rename", path: destination.path, errno: error) }
        try? remove(destination)
        try FileManager.default.copyItem(at: source, to: destination)
        try remove(source)
    }

    /// Makes `destination` name the same bytes as `source`: a hard link where the filesystem
    /// allows one, else a copy.
    public static func linkOrCopy(_ source: URL, to destination: URL) throws {
        if link(source.path, destination.path) == 0 { return }
        try FileManager.default.copyItem(at: source, to: destination)
    }

    /// Free bytes available to this user on the filesystem holding `url`.
    public static func freeBytes(at url: URL) throws -> Int64 {
        var info = statvfs()
        guard statvfs(url.path, &info) == 0 else { throw StoreError.systemCall("statvfs", path: url.path, errno: errno) }
        return Int64(info.f_bavail) * Int64(info.f_frsize)
    }

    /// A name for the filesystem type holding `url` (ext4, xfs, btrfs, tmpfs, ...).
    public static func filesystemType(at url: URL) throws -> String {
        var type: UInt = 0
        guard clade_statfs_type(url.path, &type) == 0 else { throw StoreError.systemCall("statfs", path: url.path, errno: errno) }
        switch UInt64(type) {
        case 0xEF53: return "ext4"
        case 0x5846_5342: return "xfs"
        case 0x9123_683E: return "btrfs"
        case 0x0102_1994: return "tmpfs"
        case 0x794C_7630: return "overlayfs"
        case 0x6969: return "nfs"
        case 0x2FC1_2FC1: return "zfs"
        case let other: return String(format: "0x%llx", other)
        }
    }

    /// Clones `source` into a new file at `destination` with FICLONE; throws with the errno when the filesystem cannot.
    public static func reflink(from source: URL, to destination: URL) throws {
        let input = try open(source, flags: O_RDONLY)
        defer { close(input) }
        let output = try open(destination, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
        if clade_ficlone(output, input) != 0 {
            let code = errno
            close(output)
            unlink(destination.path)
            throw StoreError.systemCall("FICLONE", path: destination.path, errno: code)
        }
        close(output)
    }

    /// Whether files in `directory` can be reflinked, tested with a real FICLONE of a small file.
    public static func supportsReflink(in directory: URL) -> Bool {
        let source = directory.appendingPathComponent(".reflink-probe-\(getpid())-a")
        let clone = directory.appendingPathComponent(".reflink-probe-\(getpid())-b")
        defer { unlink(source.path); unlink(clone.path) }
        guard (try? Data(repeating: 7, count: 4096).write(to: source)) != nil else { return false }
        return (try? reflink(from: source, to: clone)) != nil
    }
}
