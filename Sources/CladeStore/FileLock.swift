#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// An advisory, exclusive `flock` on a file under the store's `locks/` directory.
/// Released when the value is released or ``unlock()`` is called; the kernel also
/// releases it if the process dies, so a crash never leaves a stale lock.
public final class FileLock: @unchecked Sendable {
    private var fd: Int32

    /// Blocks until the lock named `name` is held.
    public init(home: CladeHome, name: String) throws {
        try home.prepare()
        let url = home.locks.appendingPathComponent("\(name).lock")
        fd = try FileSystem.open(url, flags: O_RDWR | O_CREAT, mode: 0o600)
        while flock(fd, LOCK_EX) != 0 {
            if errno == EINTR { continue }
            let code = errno
            close(fd)
            throw StoreError.systemCall("flock", path: url.path, errno: code)
        }
    }

    public func unlock() {
        guard fd >= 0 else { return }
        close(fd)
        fd = -1
    }

    deinit { unlock() }
}
