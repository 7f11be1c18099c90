#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxShims
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The outcome of one `exec`.
struct CommandResult {
    var stdout: [UInt8]
    var stderr: [UInt8]
    var exitCode: Int32
    var timedOut: Bool
    var truncated: Bool
}

struct CommandError: Error, CustomStringConvertible {
    let description: String
    /// Sent as `error_kind`, so the host can answer "not found" rather than "the guest failed".
    var kind: String? = nil
}

/// Runs a program in its own session (so a timeout can kill everything it started),
/// feeding stdin and collecting stdout and stderr with one `poll` loop.
struct CommandRunner {
    /// Output beyond this, per stream, is dropped and the result marked truncated.
    static let outputCap = 32 * 1024 * 1024
    static let defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/.clade/bin"

    let reaper: ChildReaper

    func run(
        argv: [String], environment: [String: String], cwd: String?, user: String? = nil, stdin: [UInt8], timeout: Double?
    ) throws -> CommandResult {
        guard let program = argv.first, !program.isEmpty else {
            throw CommandError(description: "exec needs a non-empty args list")
        }
        var inPipe: [Int32] = [0, 0], outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0]
        guard clade_pipe_cloexec(&inPipe) == 0, clade_pipe_cloexec(&outPipe) == 0, clade_pipe_cloexec(&errPipe) == 0 else {
            throw CommandError(description: "cannot create pipes: \(String(cString: strerror(errno)))")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        if let cwd { clade_spawn_addchdir(&actions, cwd) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var emptySet = sigset_t()
        sigemptyset(&emptySet)
        var defaultSet = sigset_t()
        sigfillset(&defaultSet)
        posix_spawnattr_setsigmask(&attributes, &emptySet)
        posix_spawnattr_setsigdefault(&attributes, &defaultSet)
        posix_spawnattr_setflags(
            &attributes, clade_spawn_setsid_flag() | Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        var merged = ["PATH": Self.defaultPath, "HOME": "/root", "TERM": "dumb", "LANG": "C.UTF-8"]
        let identity = try user.map { try GuestUser.resolve($0) }
        if let identity { merged.merge(identity.environment) { _, new in new } }
        merged.merge(environment) { _, new in new }
        let envStrings = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }

        let pid: pid_t = try reaper.spawnWatched {
            var pid: pid_t = 0
            let result = withCStrings(argv) { argvPointers in
                withCStrings(envStrings) { envPointers in
                    // posix_spawn cannot change users; a forked child that drops privileges can.
                    guard let identity else { return posix_spawnp(&pid, program, &actions, &attributes, argvPointers, envPointers) }
                    return identity.groups.withUnsafeBufferPointer { groups in
                        clade_spawn_as(
                            program, argvPointers, envPointers, inPipe[0], outPipe[1], errPipe[1], cwd, identity.uid, identity.gid,
                            groups.baseAddress, Int32(groups.count), &pid)
                    }
                }
            }
            if result != 0 {
                for fd in inPipe + outPipe + errPipe { close(fd) }
                let who = identity.map { " as \($0.name)" } ?? ""
                throw CommandError(description: "cannot run \(program)\(who): \(String(cString: strerror(result)))")
            }
            return pid
        }
        close(inPipe[0]); close(outPipe[1]); close(errPipe[1])
        return collect(pid: pid, stdinFD: inPipe[1], stdoutFD: outPipe[0], stderrFD: errPipe[0], stdin: stdin, timeout: timeout)
    }

    private func collect(
        pid: pid_t, stdinFD: Int32, stdoutFD: Int32, stderrFD: Int32, stdin: [UInt8], timeout: Double?
    ) -> CommandResult {
        var result = CommandResult(stdout: [], stderr: [], exitCode: 0, timedOut: false, truncated: false)
        var inFD: Int32 = stdin.isEmpty ? -1 : stdinFD
        if stdin.isEmpty { close(stdinFD) }
        _ = fcntl(stdinFD, F_SETFL, O_NONBLOCK)
        var written = 0
        var outFD = stdoutFD, errFD = stderrFD
        let start = monotonicSeconds()
        var exitedAt: Double?
        var buffer = [UInt8](repeating: 0, count: 65536)

        while outFD >= 0 || errFD >= 0 || inFD >= 0 {
            let now = monotonicSeconds()
            if let timeout, !result.timedOut, now - start >= timeout {
                kill(-pid, SIGKILL)
                kill(pid, SIGKILL)
                result.timedOut = true
            }
            if exitedAt == nil, reaper.exitStatusIfFinished(pid) != nil { exitedAt = now }
            // Background processes may keep the pipes open after the command exits;
            // give them a moment to flush, then stop waiting for end-of-file.
            if let exitedAt, now - exitedAt > 0.25 { break }
            if result.timedOut, now - start > (timeout ?? 0) + 2 { break }

            var fds: [pollfd] = []
            if outFD >= 0 { fds.append(pollfd(fd: outFD, events: Int16(POLLIN), revents: 0)) }
            if errFD >= 0 { fds.append(pollfd(fd: errFD, events: Int16(POLLIN), revents: 0)) }
            if inFD >= 0 { fds.append(pollfd(fd: inFD, events: Int16(POLLOUT), revents: 0)) }
            let ready = poll(&fds, nfds_t(fds.count), 50)
            if ready <= 0 { continue }
            for entry in fds where entry.revents != 0 {
                if entry.fd == inFD {
                    let count = stdin[written...].withUnsafeBytes { write(inFD, $0.baseAddress, $0.count) }
                    if count > 0 { written += count }
                    if count < 0 && errno != EAGAIN || written >= stdin.count {
                        close(inFD)
                        inFD = -1
                    }
                    continue
                }
                let count = read(entry.fd, &buffer, buffer.count)
                if count <= 0 {
                    if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                    close(entry.fd)
                    if entry.fd == outFD { outFD = -1 } else { errFD = -1 }
                    continue
                }
                let isOut = entry.fd == outFD
                let current = isOut ? result.stdout.count : result.stderr.count
                let room = max(0, Self.outputCap - current)
                if room < count { result.truncated = true }
                let slice = buffer[0..<min(count, room)]
                if isOut { result.stdout.append(contentsOf: slice) } else { result.stderr.append(contentsOf: slice) }
            }
        }
        for fd in [inFD, outFD, errFD] where fd >= 0 { close(fd) }
        if result.timedOut { kill(-pid, SIGKILL) }
        let status = reaper.waitForExit(pid)
        if result.timedOut {
            result.exitCode = 124
        } else if status & 0x7f == 0 {
            result.exitCode = (status >> 8) & 0xff
        } else {
            result.exitCode = 128 + (status & 0x7f)
        }
        return result
    }
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// Calls `body` with a NULL-terminated C array of the given strings.
func withCStrings<R>(_ strings: [String], _ body: ([UnsafeMutablePointer<CChar>?]) throws -> R) rethrows -> R {
    let pointers = strings.map { strdup($0) }
    defer { pointers.forEach { free($0) } }
    return try body(pointers + [nil])
}
