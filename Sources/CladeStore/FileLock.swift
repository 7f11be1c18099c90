#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// An advisory, exclusive `flock` on a file under the store's `locks/` directory.
/// Released when the value is released or ``unlock()`` is called; the kernel also
/// releases it if the process dies, so a crash never leaves a stale lock.
public final class FileLock: @unchecked Sendable {
    private var fd: Int32

    /// Blocks until the lock named `name` is held (`LOCK_EX`, or `LOCK_SH` for a shared hold).
    public init(home: CladeHome, name: String, mode: Int32 = LOCK_EX) throws {
        try home.prepare()
        let url = home.locks.appendingPathComponent("\(name).lock")
        fd = try FileSystem.open(url, flags: O_RDWR | O_CREAT, mode: 0o600)
        while flock(fd, mode) != 0 {
            if errno == EINTR { continue }
            let code = errno
            close(fd)
            throw StoreError.systemCall("flock", path: url.path, errno: code)
        }
    }

    /// Takes the lock only if nobody holds it; nil when another process (or this one) does.
    public static func attempt(home: CladeHome, name: String) throws -> FileLock? {
        try home.prepare()
        let url = home.locks.appendingPathComponent("\(name).lock")
        let fd = try FileSystem.open(url, flags: O_RDWR | O_CREAT, mode: 0o600)
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            return nil
        }
        return FileLock(holding: fd)
    }

    private init(holding fd: Int32) {
        self.fd = fd
    }

    public func unlock() {
        guard fd >= 0 else { return }
        close(fd)
        fd = -1
    }

    deinit { unlock() }
}
