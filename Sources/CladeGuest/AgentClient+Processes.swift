import CladeGuestProtocol
import Foundation

/// What a process did, as the agent streams it.
public enum ProcessEvent: Sendable, Equatable {
    case started(pid: Int32)
    /// Attached to a process that was already running.
    case attached(pid: Int32)
    case stdout(Data)
    case stderr(Data)
    /// How it ended.
    case exited(ProcessExit)

    init?(_ line: AgentResponse) {
        switch line.event {
        case .started: self = .started(pid: line.pid ?? 0)
        case .attached: self = .attached(pid: line.pid ?? 0)
        case .stdout: self = .stdout(Data(base64Encoded: line.data ?? "") ?? Data())
        case .stderr: self = .stderr(Data(base64Encoded: line.data ?? "") ?? Data())
        case .exit: self = .exited(ProcessExit(code: line.exitCode ?? -1, signal: line.signal, timedOut: line.timedOut == true))
        default: return nil
        }
    }
}

/// How a process ended.
public struct ProcessExit: Sendable, Equatable, Codable {
    /// The exit code; 128 + n when signal n ended it; 124 when its timeout did.
    public var code: Int32
    public var signal: Int32?
    public var timedOut: Bool

    enum CodingKeys: String, CodingKey {
        case signal
        case code = "exit_code"
        case timedOut = "timed_out"
    }

    public init(code: Int32, signal: Int32?, timedOut: Bool) {
        self.code = code
        self.signal = signal
        self.timedOut = timedOut
    }
}

/// How to start a process with protocol v2.
public struct ProcessSpec: Sendable {
    public var args: [String]
    public var env: [String: String]?
    public var cwd: String?
    public var user: String?
    public var terminal: TerminalSize?
    public var tag: String?
    public var timeout: Double?
    /// Keep running when the starting connection closes.
    public var background: Bool
    /// The directory inside the guest the process runs chrooted in (a container's own root).
    public var root: String?
    /// Resource limits the process starts with (an agent without ``AgentFeature/resourceLimits`` ignores them).
    public var rlimits: [ResourceLimit]?

    /// `args` run as given; use `["/bin/sh", "-c", line]` for a shell command.
    public init(
        args: [String], env: [String: String]? = nil, cwd: String? = nil, user: String? = nil, terminal: TerminalSize? = nil, tag: String? = nil,
        timeout: Double? = nil, background: Bool = false, root: String? = nil
    ) {
        self.root = root
        self.args = args
        self.env = env
        self.cwd = cwd
        self.user = user
        self.terminal = terminal
        self.tag = tag
        self.timeout = timeout
        self.background = background
    }

    var request: AgentRequest {
        var request = AgentRequest(id: "start", action: .start, args: args, env: env, cwd: cwd, user: user, timeout: timeout)
        request.pty = terminal
        request.tag = tag
        request.background = background ? true : nil
        request.root = root
        request.rlimits = rlimits
        return request
    }
}

extension AgentClient {
    /// Starts a process and calls `onEvent` with each event as it arrives, until the exit (whose
    /// code is returned). `session` lets the caller write stdin or send signals on the same
    /// connection meanwhile. Closing the connection early kills a foreground process.
    public func run(
        _ spec: ProcessSpec, session body: (@Sendable (AgentSession, Int32) async throws -> Void)? = nil,
        onEvent: @escaping @Sendable (ProcessEvent) async throws -> Void
    ) async throws -> ProcessExit {
        try await stream(spec.request, session: body, onEvent: onEvent)
    }

    /// Streams a running process's further output and its exit, by pid or tag.
    public func attach(
        pid: Int32? = nil, tag: String? = nil, session body: (@Sendable (AgentSession, Int32) async throws -> Void)? = nil,
        onEvent: @escaping @Sendable (ProcessEvent) async throws -> Void
    ) async throws -> ProcessExit {
        var request = AgentRequest(id: "attach", action: .attach)
        request.pid = pid
        request.tag = tag
        return try await stream(request, session: body, onEvent: onEvent)
    }

    private func stream(
        _ request: AgentRequest, session body: (@Sendable (AgentSession, Int32) async throws -> Void)?,
        onEvent: @escaping @Sendable (ProcessEvent) async throws -> Void
    ) async throws -> ProcessExit {
        try await withSession { session in
            try await session.send(request)
            var control: Task<Void, Error>?
            defer { control?.cancel() }
            for try await line in session.lines where line.id == request.id {
                if let error = line.error, line.event == nil {
                    // A guest whose agent predates protocol 2 (a fork of an old snapshot).
                    if error.hasPrefix("unknown action") { throw GuestError.agentLacks(action: request.action) }
                    throw GuestError(agentError: error, kind: line.errorKind)
                }
                guard let event = ProcessEvent(line) else { continue }
                switch event {
                case .started(let pid), .attached(let pid):
                    if let body, control == nil { control = Task { try await body(session, pid) } }
                default: break
                }
                try await onEvent(event)
                if case .exited(let exit) = event { return exit }
            }
            throw GuestError.agent("the guest agent closed the stream before the process exited")
        }
    }

    /// Starts a process that runs on its own (no stream); returns its pid.
    public func startDetached(_ spec: ProcessSpec) async throws -> Int32 {
        var request = spec.request
        request.detach = true
        let response = try await call(request)
        guard let pid = response.pid else { throw GuestError.agent("the agent started the process but did not say its pid") }
        return pid
    }

    public func writeStdin(pid: Int32? = nil, tag: String? = nil, _ data: Data) async throws {
        try await control(.stdin, pid: pid, tag: tag) { $0.data = data.base64EncodedString() }
    }

    public func closeStdin(pid: Int32? = nil, tag: String? = nil) async throws {
        try await control(.closeStdin, pid: pid, tag: tag)
    }

    /// Sends `signal` (a name such as `TERM` or a number) to the process's group.
    public func signal(pid: Int32? = nil, tag: String? = nil, _ signal: String) async throws {
        try await control(.signal, pid: pid, tag: tag) { $0.signal = signal }
    }

    public func resize(pid: Int32? = nil, tag: String? = nil, to size: TerminalSize) async throws {
        try await control(.resize, pid: pid, tag: tag) { $0.pty = size }
    }

    /// One control request about the process named by `pid` or `tag`.
    private func control(_ action: AgentAction, pid: Int32?, tag: String?, _ fill: (inout AgentRequest) -> Void = { _ in }) async throws {
        var request = AgentRequest(action: action)
        request.pid = pid
        request.tag = tag
        fill(&request)
        _ = try await call(request)
    }

    /// The agent's process table: running processes and the last ones that ended.
    public func processes() async throws -> [GuestProcess] {
        try await call(AgentRequest(action: .processes)).processes ?? []
    }

    /// Evaluates `code` in the resident interpreter tagged `tag`.
    public func eval(_ code: String, tag: String = "interpreter", timeout: Double = 600) async throws -> AgentResponse {
        var request = AgentRequest(action: .eval, timeout: timeout)
        request.code = code
        request.tag = tag
        let response = try await send(request, timeout: timeout + 15)
        if let error = response.error, response.exitCode == nil { throw GuestError.agent(error) }
        return response
    }
}
