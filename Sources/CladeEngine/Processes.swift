import CladeGuest
import CladeGuestProtocol
import CladeModel
import Foundation

/// Processes in a running sandbox (agent protocol v2): started with the image's environment,
/// directory and user unless the request says otherwise, streamed, fed, signalled, listed; and
/// code evaluated in a resident interpreter.
public struct Processes: EngineCapability {
    let engine: Engine

    /// The agent of a running sandbox, for the operations that need no defaults (stdin, signals,
    /// resize, the process table, files).
    public func agent(for id: String) throws -> AgentClient {
        AgentClient(port: try runningRecord(id).agentPort, sandbox: id)
    }

    /// `spec` with the image's defaults filled in, and the agent to send it to.
    public func prepare(id: String, _ spec: ProcessSpec) throws -> (agent: AgentClient, spec: ProcessSpec) {
        let record = try runningRecord(id)
        guard !spec.args.isEmpty else { throw EngineError.badInput("give the command to run") }
        if let timeout = spec.timeout, !(timeout > 0) { throw EngineError.badInput("a timeout must be a positive number of seconds") }
        let resolved = ExecDefaults(record.imageConfig).apply(env: spec.env, cwd: spec.cwd, user: spec.user)
        var filled = spec
        filled.env = resolved.env
        filled.cwd = resolved.cwd
        filled.user = resolved.user
        return (AgentClient(port: record.agentPort, sandbox: record.id), filled)
    }

    /// Runs a process, calling `onEvent` as its output arrives; returns how it ended.
    public func run(
        id: String, _ spec: ProcessSpec, session: (@Sendable (AgentSession, Int32) async throws -> Void)? = nil,
        onEvent: @escaping @Sendable (ProcessEvent) async throws -> Void
    ) async throws -> ProcessExit {
        let (agent, filled) = try prepare(id: id, spec)
        do {
            return try await agent.run(filled, session: session, onEvent: onEvent)
        } catch {
            throw await engine.sandboxes.explainingDeath(of: id, error)
        }
    }

    /// Starts a process that keeps running on its own; returns its pid.
    public func start(id: String, _ spec: ProcessSpec) async throws -> Int32 {
        let (agent, filled) = try prepare(id: id, spec)
        return try await agent.startDetached(filled)
    }

    /// Evaluates `code` in the sandbox's resident interpreter (see `clade bake --interpreter`).
    public func eval(id: String, code: String, tag: String = ResidentInterpreter.tag, timeout: Double = 600) async throws -> EvalResult {
        let response = try await agent(for: id).eval(code, tag: tag, timeout: timeout)
        return EvalResult(result: response.result, error: response.error, exitCode: response.exitCode ?? 1, stdout: response.stdout ?? "", stderr: response.stderr ?? "")
    }
}

/// What `eval` answered: forkd's `{result, error, exit_code}`, and what the code printed.
public struct EvalResult: Codable, Sendable, Equatable {
    /// `repr` of the last expression's value, when the code ended with one that was not None.
    public var result: String?
    /// The traceback, when the code raised.
    public var error: String?
    public var exitCode: Int32
    public var stdout: String
    public var stderr: String

    enum CodingKeys: String, CodingKey {
        case result, error, stdout, stderr
        case exitCode = "exit_code"
    }

    public init(result: String?, error: String?, exitCode: Int32, stdout: String, stderr: String) {
        self.result = result
        self.error = error
        self.exitCode = exitCode
        self.stdout = stdout
        self.stderr = stderr
    }
}
