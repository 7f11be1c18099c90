import CladeGuestProtocol
import CladeVMM
import Foundation
import Logging
import NIOCore

/// Talks to `clade-agent` in a guest over its forwarded TCP port: one connection per request.
public struct AgentClient: Sendable {
    public let endpoint: LineEndpoint

    /// `sandbox` names the guest in every error, so a misbehaving guest is identified.
    public init(host: String = "127.0.0.1", port: Int, sandbox: String? = nil) {
        let address = LineEndpoint.tcp(host: host, port: port)
        endpoint = .named(sandbox.map { "sandbox \($0)'s agent" } ?? "the guest agent", address)
    }

    /// Sends one request and waits up to `timeout` seconds for its answer.
    public func send(_ request: AgentRequest, timeout: Double) async throws -> AgentResponse {
        let line = try AgentCodec.encodeLine(request)
        let endpoint = self.endpoint
        return try await withTimeout(timeout, what: "\(endpoint)") {
            try await withLineConnection(to: endpoint) { inbound, outbound in
                try await outbound.write(ByteBuffer(bytes: line))
                for try await reply in inbound {
                    return try Self.decodeReply(reply, from: endpoint)
                }
                throw ChannelError.closed("\(endpoint)")
            }
        }
    }

    /// Decodes one line from the agent. A line that is no agent message is the guest misbehaving:
    /// the error names the sandbox, and throwing it closes the connection.
    static func decodeReply(_ line: ByteBuffer, from endpoint: LineEndpoint) throws -> AgentResponse {
        do {
            return try AgentCodec.decode(AgentResponse.self, from: line.readableBytesView)
        } catch {
            throw ChannelError.malformed("\(endpoint) sent a \(line.readableBytes)-byte line that is not an agent message; clade closed the connection")
        }
    }

    /// Pings until the agent answers or `timeout` passes. `stillBooting` is consulted between
    /// attempts so a VM that died stops the wait at once with its reason.
    public func waitUntilReady(timeout: Double, stillBooting: @Sendable () async throws -> Void) async throws -> AgentResponse {
        let deadline = Date().addingTimeInterval(timeout)
        var lastError: Error?
        while Date() < deadline {
            try await stillBooting()
            do {
                let response = try await send(AgentRequest(action: .ping), timeout: 2)
                if response.pong == true { return response }
            } catch {
                lastError = error
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        throw GuestError.agent("the guest agent did not answer within \(Int(timeout)) s (last error: \(lastError.map { "\($0)" } ?? "none"))")
    }

    /// Runs a command; the reply arrives after it exits or its timeout kills it.
    public func exec(
        _ argv: [String], env: [String: String]? = nil, cwd: String? = nil, user: String? = nil, stdin: String? = nil, timeout: Double? = nil
    ) async throws -> AgentResponse {
        let request = AgentRequest(action: .exec, args: argv, env: env, cwd: cwd, user: user, stdin: stdin, timeout: timeout)
        // Leave the agent time to kill the command and report before giving up on it.
        return try await send(request, timeout: (timeout ?? 3600) + 15)
    }

    public func readFile(_ path: String) async throws -> Data {
        let response = try await send(AgentRequest(action: .readFile, path: path), timeout: 60)
        if let error = response.error { throw GuestError.agent(error) }
        guard let content = response.content, let data = Data(base64Encoded: content) else {
            throw GuestError.agent("the agent's read_file reply carried no valid content")
        }
        return data
    }

    public func writeFile(_ path: String, data: Data, mode: Int = 0o644) async throws {
        let request = AgentRequest(action: .writeFile, path: path, content: data.base64EncodedString(), mode: mode)
        _ = try await call(request, timeout: 60)
    }
}
