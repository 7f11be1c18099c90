import CladeEngine
import CladeGuest
import CladeGuestProtocol
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// envd's `process.Process` Connect service over the agent's process protocol (v2).
extension E2BService {
    static let processMethods = ["List", "Connect", "Start", "Update", "StreamInput", "SendInput", "SendSignal", "CloseStdin"]

    func addEnvdRoutes(to router: Router<E2BContext>) {
        let service = self
        func rpc(_ body: @escaping @Sendable (Request, String) async throws -> Response) -> @Sendable (Request, E2BContext) async throws -> Response {
            { request, _ in
                guard let sandbox = service.envdSandbox(of: request) else { return ConnectRPC.unaryError(ConnectError(.invalidArgument, "no sandbox named")) }
                do { return try await body(request, sandbox) } catch { return ConnectRPC.unaryError(ConnectRPC.connectError(from: error)) }
            }
        }
        router.post("/process.Process/Start", use: rpc { request, id in try await service.startProcess(request, id) })
        router.post("/process.Process/Connect", use: rpc { request, id in try await service.connectProcess(request, id) })
        router.post("/process.Process/List", use: rpc { _, id in try await service.listProcesses(id) })
        router.post("/process.Process/SendInput", use: rpc { request, id in
            let message = try await ConnectRPC.message(of: request, streaming: false)
            let (pid, tag) = try Self.selector(message.message("process"))
            let input = message.message("input")
            guard let data = input?.bytes("stdin") ?? input?.bytes("pty") else { throw ConnectError(.invalidArgument, "'input' needs 'stdin' or 'pty' bytes") }
            try await service.engine.processes.agent(for: id).writeStdin(pid: pid, tag: tag, data)
            return ConnectRPC.unary([:])
        })
        router.post("/process.Process/StreamInput", use: rpc { request, id in try await service.streamInput(request, id) })
        router.post("/process.Process/CloseStdin", use: rpc { request, id in
            let (pid, tag) = try Self.selector(try await ConnectRPC.message(of: request, streaming: false).message("process"))
            try await service.engine.processes.agent(for: id).closeStdin(pid: pid, tag: tag)
            return ConnectRPC.unary([:])
        })
        router.post("/process.Process/SendSignal", use: rpc { request, id in
            let message = try await ConnectRPC.message(of: request, streaming: false)
            let (pid, tag) = try Self.selector(message.message("process"))
            let signal: String
            switch message.enumName("signal", names: [9: "SIGNAL_SIGKILL", 15: "SIGNAL_SIGTERM"]) {
            case "SIGNAL_SIGKILL": signal = "KILL"
            case "SIGNAL_SIGTERM": signal = "TERM"
            default: throw ConnectError(.invalidArgument, "'signal' must be SIGNAL_SIGKILL or SIGNAL_SIGTERM")
            }
            try await service.engine.processes.agent(for: id).signal(pid: pid, tag: tag, signal)
            return ConnectRPC.unary([:])
        })
        router.post("/process.Process/Update", use: rpc { request, id in
            let message = try await ConnectRPC.message(of: request, streaming: false)
            let (pid, tag) = try Self.selector(message.message("process"))
            if let size = message.message("pty")?.message("size") {
                try await service.engine.processes.agent(for: id).resize(pid: pid, tag: tag, to: Self.terminal(size))
            }
            return ConnectRPC.unary([:])
        })
        addFilesystemRoutes(to: router, rpc: rpc)
        addFileTransferRoutes(to: router)
        router.get("/health") { request, _ in
            if service.envdSandbox(of: request) != nil { return Response(status: .noContent) }
            return Self.json(["message": "Health check successful"])
        }
    }

    func startProcess(_ request: Request, _ id: String) async throws -> Response {
        let message = try await ConnectRPC.message(of: request, streaming: true)
        guard let config = message.message("process"), let command = config.string("cmd"), !command.isEmpty else {
            throw ConnectError(.invalidArgument, "'process.cmd' is required")
        }
        let terminal = message.message("pty")?.message("size").map(Self.terminal)
        var env = states.get(id)?.envVars ?? [:]
        env.merge(config.map("envs")) { $1 }
        // envd resolves a relative working directory from the user's home, as it does paths.
        let user = Self.user(of: request)
        let cwd = try config.string("cwd").flatMap { $0.isEmpty ? nil : try Self.resolve($0, user: user) }
        let spec = ProcessSpec(
            args: [command] + config.strings("args"), env: env.isEmpty ? nil : env, cwd: cwd, user: user,
            terminal: terminal, tag: message.string("tag"), background: true)
        let (agent, filled) = try engine.processes.prepare(id: id, spec)
        let keepStdin = message.bool("stdin") || terminal != nil
        let started = PidCell()
        return ConnectRPC.stream(
            deadline: ConnectRPC.timeout(of: request), keepalive: Self.keepalive(request),
            onDeadline: { if let pid = started.pid { try? await agent.signal(pid: pid, "KILL") } }
        ) { send in
            _ = try await agent.run(filled, session: { session, pid in
                started.set(pid)
                if !keepStdin {
                    var close = AgentRequest(action: .closeStdin)
                    close.pid = pid
                    try await session.send(close)
                }
            }, onEvent: { event in
                if let event = Self.processEvent(event, terminal: terminal != nil) { try await send(event) }
            })
        }
    }

    func connectProcess(_ request: Request, _ id: String) async throws -> Response {
        let message = try await ConnectRPC.message(of: request, streaming: true)
        let (pid, tag) = try Self.selector(message.message("process"))
        let agent = try engine.processes.agent(for: id)
        guard let process = try await agent.processes().first(where: { $0.running && (($0.pid == pid && pid != nil) || ($0.tag == tag && tag != nil)) }) else {
            throw ConnectError(.notFound, "process \(pid.map { "\($0)" } ?? tag ?? "") is not running in sandbox \(id)")
        }
        return ConnectRPC.stream(deadline: ConnectRPC.timeout(of: request), keepalive: Self.keepalive(request)) { send in
            _ = try await agent.attach(pid: process.pid) { event in
                if let event = Self.processEvent(event, terminal: process.pty) { try await send(event) }
            }
        }
    }

    func listProcesses(_ id: String) async throws -> Response {
        let env = states.get(id)?.envVars ?? [:]
        let processes = try await engine.processes.agent(for: id).processes().filter(\.running).map { process -> [String: Any] in
            var config: [String: Any] = ["cmd": process.args.first ?? "", "args": Array(process.args.dropFirst()), "envs": env]
            if let cwd = process.cwd { config["cwd"] = cwd }
            var info: [String: Any] = ["config": config, "pid": process.pid]
            if let tag = process.tag { info["tag"] = tag }
            return info
        }
        return ConnectRPC.unary(["processes": processes])
    }

    /// Client-streaming input: a `start` naming the process, then `data` messages, read as they arrive.
    func streamInput(_ request: Request, _ id: String) async throws -> Response {
        let agent = try engine.processes.agent(for: id)
        var target: (Int32?, String?)?
        var pending = ByteBuffer()
        for try await var chunk in request.body {
            pending.writeBuffer(&chunk)
            while pending.readableBytes >= 5,
                let flags = pending.getInteger(at: pending.readerIndex, as: UInt8.self),
                let length = pending.getInteger(at: pending.readerIndex + 1, as: UInt32.self),
                pending.readableBytes >= 5 + Int(length) {
                pending.moveReaderIndex(forwardBy: 5)
                let bytes = pending.readBytes(length: Int(length)) ?? []
                if flags & ConnectRPC.endStreamFlag != 0 { continue }
                guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
                    throw ConnectError(.invalidArgument, "a StreamInput message is not a JSON object")
                }
                let message = ProtoJSON(object)
                if let start = message.message("start") {
                    target = try Self.selector(start.message("process"))
                } else if let data = message.message("data")?.message("input") {
                    guard let target else { throw ConnectError(.failedPrecondition, "StreamInput must start with a 'start' message naming the process") }
                    if let bytes = data.bytes("stdin") ?? data.bytes("pty") { try await agent.writeStdin(pid: target.0, tag: target.1, bytes) }
                }
            }
        }
        return Response(status: .ok, headers: [.contentType: "application/connect+json"], body: .init(byteBuffer: ConnectRPC.endOfStream(nil)))
    }

    /// A `ProcessEvent` message for the SDK (nil for events it has no form for).
    static func processEvent(_ event: ProcessEvent, terminal: Bool) -> [String: Any]? {
        let payload: [String: Any]
        switch event {
        case .started(let pid), .attached(let pid): payload = ["start": ["pid": pid]]
        case .stdout(let data): payload = ["data": [terminal ? "pty" : "stdout": data.base64EncodedString()]]
        case .stderr(let data): payload = ["data": [terminal ? "pty" : "stderr": data.base64EncodedString()]]
        case .exited(let exit):
            var end: [String: Any] = [:]
            if let signal = exit.signal {
                end["exitCode"] = -1
                end["status"] = "signal: \(Self.signalName(signal))"
            } else {
                end["exitCode"] = Int(exit.code)
                end["exited"] = true
                end["status"] = "exit status \(exit.code)"
            }
            if exit.timedOut { end["error"] = "the process's timeout passed" }
            payload = ["end": end]
        }
        return ["event": payload]
    }

    static func signalName(_ signal: Int32) -> String {
        switch signal {
        case 9: "killed"
        case 15: "terminated"
        case 2: "interrupt"
        case 1: "hangup"
        default: "signal \(signal)"
        }
    }

    static func selector(_ message: ProtoJSON?) throws -> (Int32?, String?) {
        if let pid = message?.int("pid") { return (Int32(clamping: pid), nil) }
        if let tag = message?.string("tag") { return (nil, tag) }
        throw ConnectError(.invalidArgument, "'process' must name a pid or a tag")
    }

    static func terminal(_ size: ProtoJSON) -> TerminalSize {
        TerminalSize(rows: UInt16(clamping: size.int("rows") ?? 24), cols: UInt16(clamping: size.int("cols") ?? 80))
    }

    /// The user named by `Authorization: Basic base64("user:")`, as envd takes it.
    static func user(of request: Request) -> String? {
        guard let header = request.headers[.authorization], header.lowercased().hasPrefix("basic "),
            let decoded = Data(base64Encoded: String(header.dropFirst(6)).trimmingCharacters(in: .whitespaces)),
            let text = String(data: decoded, encoding: .utf8) else { return nil }
        let user = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).first.map { String($0) } ?? ""
        return user.isEmpty ? nil : user
    }

    /// `Keepalive-Ping-Interval` (seconds), bounded to 1...300.
    static func keepalive(_ request: Request, message: [String: Any] = ["event": ["keepalive": [String: Any]()]]) -> (interval: Double, message: Data)? {
        guard let text = request.headers[HTTPField.Name("Keepalive-Ping-Interval")!], let seconds = Double(text), seconds > 0 else { return nil }
        return (min(max(seconds, 1), 300), ConnectRPC.json(message))
    }
}

/// The pid a stream's process got, once the agent says it.
final class PidCell: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Int32?
    var pid: Int32? { lock.withLock { value } }
    func set(_ pid: Int32) { lock.withLock { value = pid } }
}
