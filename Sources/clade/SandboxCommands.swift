import ArgumentParser
import CladeEngine
import CladeGuestProtocol
import CladeModel
import Foundation

/// Machine options shared by `run` and `boot`.
struct MachineOptions: ParsableArguments {
    @Option(help: "Image to boot.") var image = "default"
    @Option(help: "Guest memory, MiB.") var memory = 256
    @Option(help: "Virtual CPUs.") var cpus = 1
    @Option(help: "What the guest may reach: none, outbound (default: anything but the host) or allow:CIDR[:PORT],...")
    var network: NetworkPolicy?
    @OptionGroup var limits: LimitOptions

    var boot: BootOptions {
        var options = BootOptions(image: image, memoryMiB: memory, cpus: cpus)
        options.network = network
        options.limits = limits.request
        return options
    }
}

/// Host resource limits, for `boot`, `run`, `bake` and `fork`.
struct LimitOptions: ParsableArguments {
    @Option(help: "Host CPU time the VM may use, in cores (e.g. 0.5); default: unlimited.") var cpuQuota: Double?
    @Option(help: "Host memory for the whole VM (guest RAM plus QEMU), MiB; default: guest RAM + \(SandboxLimits.vmmOverheadMiB).")
    var hostMemory: Int?
    @Option(help: "Processes and threads the VM's QEMU may have (default \(SandboxLimits.defaultProcesses)).") var pidsLimit: Int?

    var request: LimitRequest? {
        cpuQuota == nil && hostMemory == nil && pidsLimit == nil ? nil : LimitRequest(cpuCores: cpuQuota, memoryMiB: hostMemory, processes: pidsLimit)
    }
}

extension NetworkPolicy: ExpressibleByArgument {
    public init?(argument: String) {
        do {
            try self.init(parsing: argument)
        } catch {
            writeStandardError("clade: \(error)\n")
            return nil
        }
    }
}

/// What `boot --json` and `ls --json` print for a sandbox.
struct SandboxView: Encodable {
    let id: String
    let image: String
    let state: String
    let pid: Int32?
    let agentEndpoint: String
    let memoryMiB: Int
    let cpus: Int
    let accelerator: String
    let createdAt: Date
    let expiresAt: Date?
    let onTimeout: String?
    let network: String
    let confinement: SandboxConfinement?
    /// "full", or "weaker" when the sandbox lacks protections its policy needs (opted out, or
    /// started by a clade older than the refusal); `isolationGaps` says which.
    let isolation: String
    let isolationGaps: [String]
    let limits: SandboxLimits?
    let deathCause: String?

    init(_ record: SandboxRecord) {
        id = record.id
        image = record.image
        state = record.state.rawValue
        pid = record.pid
        agentEndpoint = record.agentEndpoint
        memoryMiB = record.memoryMiB
        cpus = record.cpus
        accelerator = record.accelerator
        createdAt = record.createdAt
        expiresAt = record.expiresAt
        onTimeout = record.onTimeout?.rawValue
        network = (record.network ?? .standard).description
        confinement = record.confinement
        isolationGaps = record.confinement?.gaps(network: record.network ?? .standard) ?? ["no confinement recorded"]
        isolation = isolationGaps.isEmpty ? "full" : "weaker"
        limits = record.limits
        deathCause = record.deathCause
    }

    enum CodingKeys: String, CodingKey {
        case id, image, state, pid, cpus, accelerator, network, confinement, limits, isolation
        case isolationGaps = "isolation_gaps"
        case deathCause = "death_cause"
        case agentEndpoint = "agent_endpoint"
        case memoryMiB = "memory_mib"
        case createdAt = "created_at"
        case expiresAt = "expires_at"
        case onTimeout = "on_timeout"
    }
}

/// Prints an exec result the way a local command would, and returns its exit code.
func emit(_ response: AgentResponse) -> Int32 {
    if let stdout = response.stdout { writeStandardOutput(Data(stdout.utf8)) }
    if let stderr = response.stderr { writeStandardError(Data(stderr.utf8)) }
    if response.timedOut == true {
        writeStandardError("clade: \(response.error ?? "command timed out")\n")
        return 124
    }
    if let error = response.error, response.exitCode == nil {
        writeStandardError("clade: \(error)\n")
        return 127
    }
    return response.exitCode ?? 1
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Cold-boot a VM, run a command in it, print its output and exit with its exit code.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var machine: MachineOptions
    @Option(help: "Seconds before the command's process group is killed.") var timeout: Double?
    @Option(name: .customLong("env"), help: "KEY=VALUE, repeatable; merged over the image's environment.") var environment: [String] = []
    @Option(help: "User to run as (name, uid, name:group or uid:gid); default: the image's.") var user: String?
    @Argument(parsing: .postTerminator, help: "The command, after --; default: the image's Entrypoint and Cmd.") var command: [String] = []

    func run() async throws {
        let engine = await global.makeEngine()
        let progress = ProgressReporter(quiet: !isInteractive)
        var options = machine.boot
        let env = try parseEnvironment(environment)
        options.env = env.isEmpty ? nil : env
        options.user = user
        let response = try await engine.sandboxes.run(options, argv: command, timeout: timeout, progress: { progress.update($0) })
        progress.finish()
        throw ExitCode(emit(response))
    }
}

/// Spinners only on a terminal: `run` output is usually piped or captured.
var isInteractive: Bool { isatty(2) == 1 }

/// `--timeout S [--on-timeout kill|standby]` on commands that start sandboxes.
struct LifetimeOptions: ParsableArguments {
    @Option(name: .customLong("timeout"), help: "End the sandbox after this many seconds (it is killed, or see --on-timeout).") var seconds: Double?
    @Option(help: "What happens at the end time: kill or standby.") var onTimeout: TimeoutAction = .kill

    var lifetime: Lifetime? { seconds.map { Lifetime(seconds: $0, action: onTimeout) } }
}

extension TimeoutAction: ExpressibleByArgument {}

struct Boot: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "boot", abstract: "Cold-boot a VM and leave it running; prints its id.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var machine: MachineOptions
    @OptionGroup var lifetime: LifetimeOptions
    @Flag(help: "Print the sandbox as JSON.") var json = false

    func run() async throws {
        let engine = await global.makeEngine()
        let progress = ProgressReporter(quiet: json || !isInteractive)
        var options = machine.boot
        options.lifetime = lifetime.lifetime
        let record = try await engine.sandboxes.boot(options, progress: { progress.update($0) })
        progress.finish()
        if json { try printJSON(SandboxView(record)) } else { print(record.id) }
    }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List sandboxes (and clean up ones whose VM died).")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false

    func run() async throws {
        let records = try await global.makeEngine().sandboxes.list()
        if json { return try printJSON(records.map(SandboxView.init)) }
        print("ID            STATE     IMAGE         AGENT            PID      ENDS")
        var weaker: [String] = []
        for record in records {
            if record.state != .dead, let gaps = record.confinement?.gaps(network: record.network ?? .standard), !gaps.isEmpty {
                weaker.append("\(record.id): \(gaps.joined(separator: "; "))")
            }
            let ends = record.expiresAt.map { "in \(max(0, Int($0.timeIntervalSinceNow)))s (\(record.onTimeout?.rawValue ?? "kill"))" } ?? "-"
            print(record.id.padding(toLength: 14, withPad: " ", startingAt: 0)
                + record.state.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)
                + record.image.padding(toLength: 14, withPad: " ", startingAt: 0)
                + record.agentEndpoint.padding(toLength: 17, withPad: " ", startingAt: 0)
                + (record.pid.map(String.init) ?? "-").padding(toLength: 9, withPad: " ", startingAt: 0)
                + ends + (weaker.last?.hasPrefix(record.id + ":") == true ? "  WEAKER ISOLATION" : ""))
        }
        for line in weaker { writeStandardError("warning: weaker isolation: \(line)\n") }
    }
}

struct Kill: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kill", abstract: "Stop sandboxes and remove their files.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Kill every sandbox.") var all = false
    @Argument(help: "Sandbox ids.") var ids: [String] = []

    func validate() throws {
        if all == !ids.isEmpty { throw ValidationError("give sandbox ids or --all (not both)") }
    }

    func run() async throws {
        let engine = await global.makeEngine()
        let targets = all ? try await engine.sandboxes.list().filter { $0.state != .dead }.map(\.id) : ids
        var failed = false
        for id in targets {
            do {
                try await engine.sandboxes.kill(id: id)
                print(id)
            } catch {
                writeStandardError("clade: cannot kill \(id): \(error)\n")
                failed = true
            }
        }
        if failed { throw ExitCode(1) }
    }
}

struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "pause", abstract: "Stop a running sandbox's vCPUs (it keeps its process and memory).")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox id.") var id: String

    func run() async throws {
        try await global.makeEngine().sandboxes.pause(id: id)
        print(id)
    }
}

struct Unpause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "unpause", abstract: "Continue a paused sandbox.")
    @OptionGroup var global: GlobalOptions
    @Argument(help: "Sandbox id.") var id: String

    func run() async throws {
        try await global.makeEngine().sandboxes.unpause(id: id)
        print(id)
    }
}

struct Standby: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "standby", abstract: "Capture a running sandbox to disk and stop its process.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print the report as JSON.") var json = false
    @Flag(help: "Keep only the disk (no memory): `clade resume` then boots the sandbox from it, files kept, processes gone.") var diskOnly = false
    @Argument(help: "Sandbox id.") var id: String

    func run() async throws {
        let report = try await global.makeEngine().standby.enter(id: id, keepMemory: !diskOnly)
        if json { try printJSON(report) } else { print(id) }
    }
}

struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Restore a standby sandbox in place (same id, disk and endpoint).")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print the sandbox as JSON.") var json = false
    @Argument(help: "Sandbox id.") var id: String

    func run() async throws {
        let record = try await global.makeEngine().standby.resume(id: id)
        if json { try printJSON(SandboxView(record)) } else { print(id) }
    }
}

/// `KEY=VALUE` options as a dictionary.
func parseEnvironment(_ pairs: [String]) throws -> [String: String] {
    var env: [String: String] = [:]
    for pair in pairs {
        guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
            throw ValidationError("--env takes KEY=VALUE, got '\(pair)'")
        }
        env[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
    }
    return env
}

struct SetTimeout: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "timeout", abstract: "Move a sandbox's end time to SECONDS from now, or remove it with 'none'.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "What happens at the end time: kill or standby (default: kill).") var onTimeout: TimeoutAction = .kill
    @Flag(help: "Print the sandbox as JSON.") var json = false
    @Argument(help: "Sandbox id.") var id: String
    @Argument(help: "Seconds from now, or none.") var seconds: String

    func run() async throws {
        let lifetime: Lifetime?
        if seconds == "none" {
            lifetime = nil
        } else if let value = Double(seconds) {
            lifetime = Lifetime(seconds: value, action: onTimeout)
        } else {
            throw ValidationError("SECONDS is a number of seconds or 'none', not '\(seconds)'")
        }
        let record = try await global.makeEngine().lifetimes.set(id: id, lifetime: lifetime)
        if json { return try printJSON(SandboxView(record)) }
        print(record.expiresAt.map { "\(id) ends at \(ISO8601DateFormatter().string(from: $0)) (\(record.onTimeout?.rawValue ?? "kill"))" } ?? "\(id) has no end time")
    }
}

struct Port: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "port",
        abstract: "Publish a guest TCP port on the host's loopback; prints 127.0.0.1:HOST_PORT.",
        discussion: "The forward lives as long as the sandbox's VM; resume re-applies it on the same host port. Forks do not inherit it.")
    @OptionGroup var global: GlobalOptions
    @Flag(help: "Print JSON.") var json = false
    @Argument(help: "Sandbox id.") var id: String
    @Argument(help: "Guest TCP port.") var guestPort: Int

    func run() async throws {
        let published = try await global.makeEngine().sandboxes.publishPort(id: id, guestPort: guestPort)
        if json { return try printJSON(published) }
        print(published.hostAddress)
    }
}
