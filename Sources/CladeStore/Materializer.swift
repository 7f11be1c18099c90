#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// How a file was made to appear at a new path.
public enum MaterializeMethod: String, Codable, Sendable, CaseIterable {
    /// A new name for the same inode: no I/O, one shared page cache.
    case hardlink
    /// A new inode sharing the source's extents (FICLONE).
    case reflink
    /// A new inode with the source's data extents copied and its holes kept (SEEK_DATA/SEEK_HOLE).
    case sparseCopy = "sparse-copy"
    /// A byte-for-byte copy.
    case copy
    /// A symbolic link to the snapshot's copy in the memory tier (``MemoryTier``), made by the
    /// engine, never by ``Materializer``.
    case ramTier = "ram-tier"
    /// A symbolic link to the file a lazily pulled snapshot's FUSE server serves, made by the
    /// engine: pages arrive from the registry as the guest touches them.
    case lazyFetch = "lazy-fetch"
}

/// Puts files in place by the cheapest method that works, and keeps shared inodes safe.
public struct Materializer: Sendable {
    /// The fanout order: hardlink first (seed 003 measured per-fork reflinks 4× slower), then reflink, sparse copy, copy.
    public static let fanoutOrder: [MaterializeMethod] = [.hardlink, .reflink, .sparseCopy, .copy]
    /// For private copies the bytes must be new, so hardlinking is not an option.
    public static let privateCopyOrder: [MaterializeMethod] = [.reflink, .sparseCopy, .copy]

    private let logger: Logger

    public init(logger: Logger = Logger(label: "clade.materialize")) {
        self.logger = logger
    }

    /// Makes `source`'s content appear at `destination` (which must not exist), trying `order`
    /// in turn. Each fallback is logged with the reason the previous method failed.
    @discardableResult
    public func materialize(_ given: URL, at destination: URL, order: [MaterializeMethod] = Materializer.fanoutOrder) throws -> MaterializeMethod {
        var source = given
        var found = try FileSystem.status(of: given)
        // A sandbox's memory may be a link into the memory tier: its content is the target's.
        if found?.isSymbolicLink == true {
            source = given.resolvingSymlinksInPath()
            found = try FileSystem.status(of: source)
        }
        guard let status = found else {
            throw StoreError.systemCall("stat", path: source.path, errno: ENOENT)
        }
        guard status.isRegularFile else {
            throw StoreError.systemCall("materialize (not a regular file)", path: source.path, errno: EINVAL)
        }
        var failures: [String] = []
        for method in order {
            do {
                try perform(method, source: source, destination: destination, mode: mode_t(status.mode & 0o7777))
                if !failures.isEmpty {
                    logger.warning(
                        "materialized by fallback",
                        metadata: ["path": "\(destination.path)", "method": "\(method.rawValue)", "because": "\(failures.joined(separator: "; "))"])
                }
                return method
            } catch let error as StoreError {
                unlink(destination.path)
                failures.append("\(method.rawValue) failed: \(error)")
                if case .systemCall(_, _, let code) = error, !Self.isUnsupported(code) { throw error }
            }
        }
        throw StoreError.systemCall("materialize (\(failures.joined(separator: "; ")))", path: destination.path, errno: EXDEV)
    }

    /// The unshare guard: if `path` has other names (link count > 1, or it is a symbolic link), replace it with a private
    /// copy of the same bytes, so an in-place write cannot reach the other names' inode.
    /// Returns true when a copy was made.
    @discardableResult
    public func makeExclusive(_ path: URL) throws -> Bool {
        guard let status = try FileSystem.status(of: path) else {
            throw StoreError.systemCall("stat", path: path.path, errno: ENOENT)
        }
        // A symbolic link (into the memory tier) names a file other sandboxes map too.
        guard status.linkCount > 1 || status.isSymbolicLink else { return false }
        let temporary = path.deletingLastPathComponent().appendingPathComponent(".\(path.lastPathComponent).private-\(getpid())")
        unlink(temporary.path)
        let method = try materialize(path, at: temporary, order: Self.privateCopyOrder)
        guard rename(temporary.path, path.path) == 0 else {
            let code = errno
            unlink(temporary.path)
            throw StoreError.systemCall("rename", path: path.path, errno: code)
        }
        logger.info("unshared a file before writing it in place", metadata: ["path": "\(path.path)", "method": "\(method.rawValue)", "links_before": "\(status.linkCount)"])
        return true
    }

    /// Moves a file: a rename when both paths are on one filesystem, else a private copy
    /// (reflink or sparse copy), synced, then the source unlinked.
    public func move(_ source: URL, to destination: URL) throws {
        if rename(source.path, destination.path) == 0 { return }
        let code = errno
        guard code == EXDEV else { throw StoreError.systemCall("rename", path: source.path, errno: code) }
        let method = try materialize(source, at: destination, order: Self.privateCopyOrder)
        try FileSystem.sync(destination)
        guard unlink(source.path) == 0 else { throw StoreError.systemCall("unlink", path: source.path, errno: errno) }
        logger.warning("moved across filesystems by copying", metadata: ["from": "\(source.path)", "to": "\(destination.path)", "method": "\(method.rawValue)"])
    }

    /// Errors that mean "this method cannot work here", as opposed to real I/O failures.
    static func isUnsupported(_ code: Int32) -> Bool {
        [EXDEV, EPERM, EOPNOTSUPP, ENOTSUP, EINVAL, ENOSYS, EMLINK, ENOTTY, EBADF].contains(code)
    }

    private func perform(_ method: MaterializeMethod, source: URL, destination: URL, mode: mode_t) throws {
        switch method {
        case .hardlink:
            if let inject = Self.injectedFailure, let code = inject(.hardlink) { throw StoreError.systemCall("link", path: destination.path, errno: code) }
            guard link(source.path, destination.path) == 0 else { throw StoreError.systemCall("link", path: destination.path, errno: errno) }
        case .reflink:
            if let inject = Self.injectedFailure, let code = inject(.reflink) { throw StoreError.systemCall("FICLONE", path: destination.path, errno: code) }
            try FileSystem.reflink(from: source, to: destination)
            chmod(destination.path, mode)
        case .sparseCopy:
            try Self.copy(from: source, to: destination, mode: mode, sparse: true)
        case .copy:
            try Self.copy(from: source, to: destination, mode: mode, sparse: false)
        case .ramTier, .lazyFetch:
            throw StoreError.systemCall("materialize by \(method.rawValue) (the engine places those links)", path: destination.path, errno: EINVAL)
        }
    }

    /// Test hook: force a method to fail with an errno.
    nonisolated(unsafe) public static var injectedFailure: ((MaterializeMethod) -> Int32?)?

    /// Copies data; with `sparse`, only the source's data extents are read and written and its
    /// holes stay holes. Zero bytes inside data extents are written as data, never punched out.
    public static func copy(from source: URL, to destination: URL, mode: mode_t, sparse: Bool) throws {
        let input = try FileSystem.open(source, flags: O_RDONLY)
        defer { close(input) }
        let output = try FileSystem.open(destination, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o600)
        var succeeded = false
        defer {
            close(output)
            if !succeeded { unlink(destination.path) }
        }
        var info = stat()
        guard fstat(input, &info) == 0 else { throw StoreError.systemCall("fstat", path: source.path, errno: errno) }
        let size = Int64(info.st_size)
        guard ftruncate(output, off_t(size)) == 0 else { throw StoreError.systemCall("ftruncate", path: destination.path, errno: errno) }
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: Int64 = 0
        while offset < size {
            var start = offset
            var end = size
            if sparse {
                let data = lseek(input, off_t(offset), FileSystem.seekData)
                if data < 0 {
                    if errno == ENXIO { break }  // only a hole remains
                    throw StoreError.systemCall("lseek(SEEK_DATA)", path: source.path, errno: errno)
                }
                start = Int64(data)
                let hole = lseek(input, off_t(start), FileSystem.seekHole)
                guard hole >= 0 else { throw StoreError.systemCall("lseek(SEEK_HOLE)", path: source.path, errno: errno) }
                end = Int64(hole)
            }
            var position = start
            while position < end {
                let want = Int(min(Int64(chunk), end - position))
                let got = pread(input, buffer, want, off_t(position))
                if got < 0 {
                    if errno == EINTR { continue }
                    throw StoreError.systemCall("read", path: source.path, errno: errno)
                }
                if got == 0 { break }
                var written = 0
                while written < got {
                    let count = pwrite(output, buffer + written, got - written, off_t(position) + off_t(written))
                    if count < 0 {
                        if errno == EINTR { continue }
                        throw StoreError.systemCall("write", path: destination.path, errno: errno)
                    }
                    written += count
                }
                position += Int64(got)
            }
            offset = end
        }
        guard fchmod(output, mode) == 0 else { throw StoreError.systemCall("fchmod", path: destination.path, errno: errno) }
        succeeded = true
    }
}
