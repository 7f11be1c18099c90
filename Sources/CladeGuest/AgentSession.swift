import CladeGuestProtocol
import CladeVMM
import Foundation
import NIOCore

/// One open connection to the agent: requests go out in order, and every line the agent sends
/// back (replies, and the events of streams started on it) comes out of ``lines``.
public struct AgentSession: Sendable {
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let inbound: NIOAsyncChannelInboundStream<ByteBuffer>
    let endpoint: LineEndpoint

    /// Sends a request on this connection.
    public func send(_ request: AgentRequest) async throws {
        try await outbound.write(ByteBuffer(bytes: try AgentCodec.encodeLine(request)))
    }

    /// Every line from the agent, decoded, until it closes the connection.
    public var lines: AsyncThrowingMapSequence<NIOAsyncChannelInboundStream<ByteBuffer>, AgentResponse> {
        inbound.map { try AgentCodec.decode(AgentResponse.self, from: Array($0.readableBytesView)) }
    }

    /// Sends a request and returns the next line, failing with the agent's error if it has one.
    public func call(_ request: AgentRequest) async throws -> AgentResponse {
        try await send(request)
        for try await line in lines {
            if let error = line.error { throw GuestError.agent(error) }
            return line
        }
        throw ChannelError.closed("the guest agent at \(endpoint)")
    }
}

extension AgentClient {
    /// Opens one connection for several requests (a chunked transfer, a stream with its controls).
    public func withSession<R: Sendable>(_ body: @Sendable (AgentSession) async throws -> R) async throws -> R {
        let endpoint = self.endpoint
        return try await withLineConnection(to: endpoint) { inbound, outbound in
            try await body(AgentSession(outbound: outbound, inbound: inbound, endpoint: endpoint))
        }
    }

    /// One request and its answer; an answer carrying `error` throws it.
    public func call(_ request: AgentRequest, timeout: Double = 60) async throws -> AgentResponse {
        let response = try await send(request, timeout: timeout)
        if let error = response.error { throw GuestError.agent(error) }
        return response
    }
}
