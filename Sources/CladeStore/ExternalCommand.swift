#if canImport(Glibc)
import Glibc
#endif
import CLinuxShims
import Foundation
import Logging

/// Runs a host program (qemu-img, mke2fs, ...) to completion and captures its output.
public struct ExternalCommand: Sendable {
    public struct Output: Sendable {
        public let status: Int32
        public let stdout: String
        public let stderr: String
    }

    public let executable: String
    public let arguments: [String]
    public var environment: [String: String]?
    public var currentDirectory: URL?

    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, currentDirectory: URL? = nil) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.currentDirectory = currentDirectory
    }

    /// The command as a shell-like string, for messages.
    public var commandLine: String { ([executable] + arguments).joined(separator: " ") }

    /// Finds `name` on PATH (or accepts an absolute path).
    public static func locate(_ name: String) -> URL? {
        if name.hasPrefix("/") { return FileManager.default.isExecutableFile(atPath: name) ? URL(fileURLWithPath: name) : nil }
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in (path + ":/usr/sbin:/sbin").split(separator: ":") {
            let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        }
        return nil
    }

    /// Runs and returns the output whatever the exit status.
    ///
    /// posix_spawn and one poll loop, not Foundation's `Process`: its `waitUntilExit` spins a
    /// run loop on the calling thread, and every pool thread that does so keeps an epoll, an
    /// eventfd and a timerfd open for good, which a long-running daemon sees as a leak.
    public func run(stdin: Data? = nil) throws -> Output {
        guard let url = Self.locate(executable) else {
            throw StoreError.commandNotFound(executable, fix: "run scripts/install-deps.sh to install clade's host dependencies")
        }
        _ = Self.ignoreBrokenPipes
        var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1], inPipe: [Int32] = [-1, -1]
        var opened: [Int32] = []
        defer { opened.forEach { close($0) } }
        for index in 0..<3 {
            var fds: [Int32] = [-1, -1]
            if index == 2, stdin == nil { break }
            guard clade_pipe_cloexec(&fds) == 0 else { throw StoreError.systemCall("pipe", path: executable, errno: errno) }
            opened += fds
            switch index {
            case 0: outPipe = fds
            case 1: errPipe = fds
            default: inPipe = fds
            }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if stdin != nil {
            posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
        } else {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
        if let currentDirectory { clade_spawn_addchdir(&actions, currentDirectory.path) }
        clade_spawn_addclosefrom(&actions, 3)
        var merged = ProcessInfo.processInfo.environment
        if let environment { merged.merge(environment) { _, new in new } }
        let argv = ([url.path] + arguments).map { strdup($0) } + [nil]
        let envp = merged.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = Spawn.withCleanSignals { attributes in posix_spawn(&pid, url.path, &actions, &attributes, argv, envp) }
        guard result == 0 else { throw StoreError.systemCall("posix_spawn", path: url.path, errno: result) }
        // The child holds its ends now; closing ours lets end-of-file arrive.
        for fd in [outPipe[1], errPipe[1], inPipe[0]] where fd >= 0 {
            close(fd)
            opened.removeAll { $0 == fd }
        }
        let (out, err) = Self.exchange(stdin: stdin ?? Data(), to: inPipe[1], stdout: outPipe[0], stderr: errPipe[0]) { fd in
            close(fd)
            opened.removeAll { $0 == fd }
        }
        let status = try Spawn.wait(pid, path: url.path)
        return Output(
            status: status,
            stdout: String(decoding: out, as: UTF8.self),
            stderr: String(decoding: err, as: UTF8.self))
    }

    private static let ignoreBrokenPipes: Void = { signal(SIGPIPE, SIG_IGN) }()

    /// Writes `stdin` and reads stdout and stderr until both end, all on this thread.
    private static func exchange(stdin: Data, to input: Int32, stdout: Int32, stderr: Int32, closing: (Int32) -> Void) -> (Data, Data) {
        var out = Data(), err = Data()
        var written = 0
        var input = input
        if input >= 0, stdin.isEmpty {
            closing(input)
            input = -1
        }
        // Non-blocking, so a child that stops reading its input cannot stall the output reads.
        if input >= 0 { _ = fcntl(input, F_SETFL, fcntl(input, F_GETFL) | O_NONBLOCK) }
        var readers = [stdout, stderr]
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !readers.isEmpty || input >= 0 {
            var fds = readers.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if input >= 0 { fds.append(pollfd(fd: input, events: Int16(POLLOUT), revents: 0)) }
            if poll(&fds, nfds_t(fds.count), -1) < 0 {
                if errno == EINTR { continue }
                break
            }
            for entry in fds where entry.revents != 0 {
                if entry.fd == input {
                    let count = stdin.withUnsafeBytes { write(input, $0.baseAddress.map { $0 + written }, stdin.count - written) }
                    if count > 0 { written += count }
                    if count < 0 && errno != EINTR && errno != EAGAIN || written >= stdin.count {
                        closing(input)
                        input = -1
                    }
                    continue
                }
                let count = read(entry.fd, &buffer, buffer.count)
                if count > 0 {
                    if entry.fd == stdout { out.append(contentsOf: buffer[0..<count]) } else { err.append(contentsOf: buffer[0..<count]) }
                } else if count == 0 || (errno != EINTR && errno != EAGAIN) {
                    readers.removeAll { $0 == entry.fd }
                }
            }
        }
        return (out, err)
    }

    /// Runs and throws ``StoreError/commandFailed(command:status:output:)`` on a non-zero exit.
    @discardableResult
    public func check(stdin: Data? = nil) throws -> Output {
        let output = try run(stdin: stdin)
        guard output.status == 0 else {
            throw StoreError.commandFailed(command: commandLine, status: output.status, output: output.stderr + output.stdout)
        }
        return output
    }
}
