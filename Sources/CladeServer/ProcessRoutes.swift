import CladeEngine
import CladeGuest
import CladeGuestProtocol
import Foundation
import Hummingbird
import NIOCore

/// Processes, eval and files over HTTP (agent protocol v2 underneath).
extension CladeAPI {
    static let processRoutes: [(method: String, path: String)] = [
        ("POST", "/v1/sandboxes/{id}/processes"), ("GET", "/v1/sandboxes/{id}/processes"),
        ("GET", "/v1/sandboxes/{id}/processes/{process}/output"), ("POST", "/v1/sandboxes/{id}/processes/{process}/stdin"),
        ("POST", "/v1/sandboxes/{id}/processes/{process}/signal"), ("POST", "/v1/sandboxes/{id}/processes/{process}/resize"),
        ("POST", "/v1/sandboxes/{id}/eval"),
        ("GET", "/v1/sandboxes/{id}/fs"), ("DELETE", "/v1/sandboxes/{id}/fs"), ("GET", "/v1/sandboxes/{id}/fs/stat"),
        ("POST", "/v1/sandboxes/{id}/fs/mkdir"), ("POST", "/v1/sandboxes/{id}/fs/move"),
        ("GET", "/v1/sandboxes/{id}/fs/content"), ("PUT", "/v1/sandboxes/{id}/fs/content"), ("GET", "/v1/sandboxes/{id}/fs/watch"),
    ]

    func addProcessRoutes(to router: Router<Context>) {
        let api = self
        router.post("/v1/sandboxes/:id/processes") { request, context in try await api.startProcess(try api.sandboxID(context), request) }
        router.get("/v1/sandboxes/:id/processes") { _, context in
            try JSONIO.response(try await api.engine.processes.agent(for: try api.sandboxID(context)).processes())
        }
        router.get("/v1/sandboxes/:id/processes/:process/output") { _, context in
            try await api.attach(try api.sandboxID(context), process: try context.parameters.require("process"))
        }
        router.post("/v1/sandboxes/:id/processes/:process/stdin") { request, context in
            try await api.writeStdin(try api.sandboxID(context), process: try context.parameters.require("process"), request)
        }
        router.post("/v1/sandboxes/:id/processes/:process/signal") { request, context in
            let body = try await JSONIO.decode(SignalRequest.self, from: request, limit: api.limits.maxBodyBytes)
            let (pid, tag) = Self.processReference(try context.parameters.require("process"))
            try await api.engine.processes.agent(for: try api.sandboxID(context)).signal(pid: pid, tag: tag, body.signal)
            return JSONIO.noContent()
        }
        router.post("/v1/sandboxes/:id/processes/:process/resize") { request, context in
            let size = try await JSONIO.decode(TerminalSize.self, from: request, limit: api.limits.maxBodyBytes)
            let (pid, tag) = Self.processReference(try context.parameters.require("process"))
            try await api.engine.processes.agent(for: try api.sandboxID(context)).resize(pid: pid, tag: tag, to: size)
            return JSONIO.noContent()
        }
        router.post("/v1/sandboxes/:id/eval") { request, context in
            let body = try await JSONIO.decode(EvalRequest.self, from: request, limit: api.limits.maxBodyBytes)
            if let timeout = body.timeoutSecs, !(timeout > 0 && timeout <= 86_400) {
                throw APIError(.badRequest, "field 'timeout_secs' must be between 0 and 86400")
            }
            return try JSONIO.response(try await api.engine.processes.eval(id: try api.sandboxID(context), code: body.code, timeout: body.timeoutSecs ?? 600))
        }
        addFileRoutes(to: router)
    }

    /// A `{process}` path segment: digits are a pid, anything else a tag.
    static func processReference(_ text: String) -> (pid: Int32?, tag: String?) {
        if let pid = Int32(text) { return (pid, nil) }
        return (nil, text)
    }

    func startProcess(_ id: String, _ request: Request) async throws -> Response {
        let body = try await JSONIO.decode(ProcessStartRequest.self, from: request, limit: limits.maxBodyBytes)
        var args = body.args ?? []
        if let command = body.command { args = ["/bin/sh", "-c", command] }
        guard !args.isEmpty else { throw APIError(.badRequest, "give the process as 'args' (a list) or 'command' (a shell line)") }
        if let timeout = body.timeoutSecs, !(timeout > 0 && timeout <= 86_400) {
            throw APIError(.badRequest, "field 'timeout_secs' must be between 0 and 86400")
        }
        let spec = ProcessSpec(
            args: args, env: body.env, cwd: body.cwd, user: body.user, terminal: body.pty, tag: body.tag, timeout: body.timeoutSecs,
            background: body.background ?? false)
        if body.detach == true {
            let pid = try await engine.processes.start(id: id, spec)
            return try JSONIO.response(["pid": pid], status: .created)
        }
        let (agent, filled) = try engine.processes.prepare(id: id, spec)
        let stdin = body.stdin.map { Data($0.utf8) }
        let closeStdin = body.closeStdin ?? true
        return NDJSONStream.response({ emit in
            _ = try await agent.run(filled, session: { session, pid in
                if let stdin, !stdin.isEmpty {
                    var write = AgentRequest(action: .stdin)
                    write.pid = pid
                    write.data = stdin.base64EncodedString()
                    try await session.send(write)
                }
                if closeStdin {
                    var close = AgentRequest(action: .closeStdin)
                    close.pid = pid
                    try await session.send(close)
                }
            }, onEvent: { event in try await emit(try NDJSONStream.line(ProcessStreamLine(event))) })
        }, onError: Self.errorLine)
    }

    func attach(_ id: String, process: String) async throws -> Response {
        let agent = try engine.processes.agent(for: id)
        let (pid, tag) = Self.processReference(process)
        // Fail with a status (not a stream) when the process is unknown.
        guard try await agent.processes().contains(where: { $0.pid == pid || ($0.tag != nil && $0.tag == tag) }) else {
            throw APIError(.notFound, "no process '\(process)' in sandbox \(id); list them with GET /v1/sandboxes/\(id)/processes")
        }
        return NDJSONStream.response({ emit in
            _ = try await agent.attach(pid: pid, tag: tag) { event in try await emit(try NDJSONStream.line(ProcessStreamLine(event))) }
        }, onError: Self.errorLine)
    }

    func writeStdin(_ id: String, process: String, _ request: Request) async throws -> Response {
        let body = try await JSONIO.decode(ProcessStdinRequest.self, from: request, limit: limits.maxBodyBytes)
        let agent = try engine.processes.agent(for: id)
        let (pid, tag) = Self.processReference(process)
        var bytes = Data((body.text ?? "").utf8)
        if let encoded = body.data {
            guard let decoded = Data(base64Encoded: encoded) else { throw APIError(.badRequest, "field 'data' must be base64") }
            bytes = decoded
        }
        if !bytes.isEmpty { try await agent.writeStdin(pid: pid, tag: tag, bytes) }
        if body.eof == true { try await agent.closeStdin(pid: pid, tag: tag) }
        return JSONIO.noContent()
    }

    static func errorLine(_ error: Error) -> ByteBuffer? {
        try? NDJSONStream.line(ProcessStreamLine(event: "error", message: "\(error)"))
    }
}

extension ProcessStreamLine {
    init(_ event: ProcessEvent) {
        switch event {
        case .started(let pid): self.init(event: "started", pid: pid)
        case .attached(let pid): self.init(event: "attached", pid: pid)
        case .stdout(let data): self.init(event: "stdout", data: data.base64EncodedString())
        case .stderr(let data): self.init(event: "stderr", data: data.base64EncodedString())
        case .exited(let exit): self.init(event: "exit", exitCode: exit.code, signal: exit.signal, timedOut: exit.timedOut)
        }
    }
}
