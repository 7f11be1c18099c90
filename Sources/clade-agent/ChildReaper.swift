#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Collects the exit status of every child of the agent.
///
/// The agent may be PID 1, so orphans are re-parented to it and must be reaped; a single
/// reaper calling `waitpid(-1)` does that, and hands the statuses of the processes that
/// `exec` is waiting for to their waiters. SIGCHLD is blocked in every thread and taken
/// with `sigwait` here, so no thread polls.
final class ChildReaper: @unchecked Sendable {
    private struct State {
        var watched: Set<pid_t> = []
        var finished: [pid_t: Int32] = [:]
    }

    private let state = Guarded(State())

    /// Blocks SIGCHLD for the calling thread; call before any other thread starts.
    static func blockChildSignal() {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGCHLD)
        pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    func start() {
        startThread { [self] in
            var set = sigset_t()
            sigemptyset(&set)
            sigaddset(&set, SIGCHLD)
            while true {
                reapAll()
                var signal: Int32 = 0
                sigwait(&set, &signal)
            }
        }
    }

    /// Spawns with the reaper locked so that a child which exits at once is not discarded
    /// as an unknown orphan before it is registered.
    func spawnWatched(_ spawn: () throws -> pid_t) rethrows -> pid_t {
        try state.withLock { state in
            let pid = try spawn()
            state.watched.insert(pid)
            return pid
        }
    }

    /// Blocks until the watched process `pid` exits; returns its raw wait status.
    func waitForExit(_ pid: pid_t) -> Int32 {
        state.wait { state in
            guard let status = state.finished.removeValue(forKey: pid) else { return nil }
            state.watched.remove(pid)
            return status
        }
    }

    /// `waitForExit`, giving up (nil) once `seconds` have passed.
    func waitForExit(_ pid: pid_t, atMost seconds: Double) -> Int32? {
        state.wait(until: { state in
            guard let status = state.finished.removeValue(forKey: pid) else { return nil }
            state.watched.remove(pid)
            return status
        }, atMost: max(0, seconds))
    }

    /// Non-blocking: the raw status if the process has exited.
    func exitStatusIfFinished(_ pid: pid_t) -> Int32? {
        state.withLock { $0.finished[pid] }
    }

    private func reapAll() {
        while true {
            var status: Int32 = 0
            let pid = waitpid(-1, &status, WNOHANG)
            if pid <= 0 { return }
            state.withLock { state in
                if state.watched.contains(pid) { state.finished[pid] = status }
            }
        }
    }
}
