#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxShims
import CladeGuestProtocol

/// A process the agent started for `start`, with the host-side ends of its standard streams.
struct LaunchedProcess {
    var pid: pid_t
    /// Where stdin bytes go: a pipe, or the terminal's controller side.
    var inputFD: Int32
    /// stdout (the terminal's controller side for a PTY process, which carries both streams).
    var outputFD: Int32
    /// stderr; -1 for a PTY process.
    var errorFD: Int32
    /// The terminal's controller side, for resizing; nil without a PTY.
    var terminalFD: Int32?
}

/// Starts processes in their own session, as the requested user, on pipes or on a new PTY.
struct ProcessLauncher {
    let reaper: ChildReaper

    /// The environment a command gets: the agent's defaults, then the user's login variables,
    /// then what the request asked for.
    static func environment(_ requested: [String: String], account: UserDatabase.Account?, terminal: Bool) -> [String] {
        var merged = ["PATH": CommandRunner.defaultPath, "HOME": "/root", "USER": "root", "LOGNAME": "root", "LANG": "C.UTF-8"]
        merged["TERM"] = terminal ? "xterm-256color" : "dumb"
        if let account { merged.merge(account.environment) { _, new in new } }
        merged.merge(requested) { _, new in new }
        return merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    }

    func launch(
        argv: [String], environment: [String: String], cwd: String?, user: String?, terminal: TerminalSize?, root: String? = nil,
        limits: [ResourceLimit] = []
    ) throws -> LaunchedProcess {
        guard let program = argv.first, !program.isEmpty else {
            throw CommandError(description: "start needs a non-empty args list or a command")
        }
        let resourceLimits = try limits.map { limit -> clade_resource_limit in
            guard let resource = Self.resourceNumbers[limit.type] else {
                throw CommandError(description: "\(limit.type) is not a resource limit this guest knows (one of \(Self.resourceNumbers.keys.sorted().joined(separator: ", ")))")
            }
            guard limit.soft <= limit.hard else { throw CommandError(description: "\(limit.type)'s soft limit \(limit.soft) is above its hard limit \(limit.hard)") }
            return clade_resource_limit(resource: resource, soft: limit.soft, hard: limit.hard)
        }
        if let root {
            var status = stat()
            guard root.hasPrefix("/"), stat(root, &status) == 0, (status.st_mode & S_IFMT) == S_IFDIR else {
                throw CommandError(description: "the root \(root) is not a directory in this guest")
            }
        }
        // A container's user is one of its own root's accounts.
        let account = try user.map { try GuestUser.resolve($0, passwd: (root ?? "") + "/etc/passwd", group: (root ?? "") + "/etc/group") }
        let envStrings = Self.environment(environment, account: account, terminal: terminal != nil)
        var parentEnds: [Int32] = []
        var childEnds: [Int32] = []
        defer { childEnds.forEach { close($0) } }
        var launched: LaunchedProcess
        var controllingTerminal: Int32 = -1
        if let terminal {
            var controller: Int32 = -1, device: Int32 = -1
            guard clade_open_pty(&controller, &device, terminal.rows, terminal.cols) == 0 else {
                throw CommandError(description: "cannot open a pseudo-terminal: \(String(cString: strerror(errno)))")
            }
            parentEnds = [controller]
            childEnds = [device, device, device]
            controllingTerminal = device
            launched = LaunchedProcess(pid: 0, inputFD: controller, outputFD: controller, errorFD: -1, terminalFD: controller)
        } else {
            var input: [Int32] = [0, 0], output: [Int32] = [0, 0], errors: [Int32] = [0, 0]
            guard clade_pipe_cloexec(&input) == 0, clade_pipe_cloexec(&output) == 0, clade_pipe_cloexec(&errors) == 0 else {
                throw CommandError(description: "cannot create pipes: \(String(cString: strerror(errno)))")
            }
            parentEnds = [input[1], output[0], errors[0]]
            childEnds = [input[0], output[1], errors[1]]
            launched = LaunchedProcess(pid: 0, inputFD: input[1], outputFD: output[0], errorFD: errors[0], terminalFD: nil)
        }
        let descriptors = childEnds
        do {
            launched.pid = try reaper.spawnWatched {
                var pid: pid_t = 0
                let groups = account?.groups ?? []
                let result = withCStrings(argv) { argvPointers in
                    withCStrings(envStrings) { envPointers in
                        groups.withUnsafeBufferPointer { groupList in
                            resourceLimits.withUnsafeBufferPointer { limitList in
                                clade_spawn_child(
                                    program, argvPointers, envPointers, descriptors[0], descriptors[1], descriptors[2], controllingTerminal, root, cwd,
                                    account == nil ? 0 : 1, account?.uid ?? 0, account?.gid ?? 0, groupList.baseAddress, Int32(groupList.count),
                                    limitList.baseAddress, Int32(limitList.count), &pid)
                            }
                        }
                    }
                }
                if result != 0 {
                    let who = account.map { " as \($0.name)" } ?? ""
                    throw CommandError(description: "cannot run \(program)\(who): \(String(cString: strerror(result)))")
                }
                return pid
            }
        } catch {
            parentEnds.forEach { close($0) }
            throw error
        }
        return launched
    }

    /// The resource limits the OCI runtime spec names, by their Linux numbers (asm-generic).
    static let resourceNumbers: [String: Int32] = [
        "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3, "RLIMIT_CORE": 4, "RLIMIT_RSS": 5,
        "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7, "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10,
        "RLIMIT_SIGPENDING": 11, "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
    ]
}
