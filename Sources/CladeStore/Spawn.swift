#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// What every program clade starts has in common: a clean signal state and a waited-for exit.
enum Spawn {
    /// posix_spawn attributes with no blocked signals and SIGPIPE at its default action, whatever
    /// the parent (a Swift runtime, NIO) blocks or ignores.
    static func withCleanSignals<T>(_ body: (inout posix_spawnattr_t) throws -> T) rethrows -> T {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptySet = sigset_t()
        sigemptyset(&emptySet)
        posix_spawnattr_setsigmask(&attributes, &emptySet)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        return try body(&attributes)
    }

    /// Waits for `pid`; returns its exit code, or 128 + the signal that ended it.
    static func wait(_ pid: pid_t, path: String) throws -> Int32 {
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { throw StoreError.systemCall("waitpid", path: path, errno: errno) }
        }
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}
