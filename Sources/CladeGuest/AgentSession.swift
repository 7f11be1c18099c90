import CladeGuestProtocol
import CladeVMM
import Foundation
import NIOCore

/// One open connection to the agent: requests go out in order, and every line the agent sends
/// back (replies, and the events of streams started on it) comes out of ``lines``.
public struct AgentSession: Sendable {
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    let reader: LineReader
    let endpoint: LineEndpoint

    /// The connection's one inbound iterator (NIO allows only one), shared by every read.
    /// Reads happen one at a time: a session has one reader task.
    final class LineReader: @unchecked Sendable {
        private var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
        private let endpoint: LineEndpoint
        init(_ inbound: NIOAsyncChannelInboundStream<ByteBuffer>, endpoint: LineEndpoint) {
            iterator = inbound.makeAsyncIterator()
            self.endpoint = endpoint
        }
        func next() async throws -> AgentResponse? {
            guard let line = try await iterator.next() else { return nil }
            return try AgentClient.decodeReply(line, from: endpoint)
        }
    }

    /// The agent's lines as a sequence (see ``lines``).
    public struct Lines: AsyncSequence, Sendable {
        public typealias Element = AgentResponse
        let reader: LineReader
        public struct AsyncIterator: AsyncIteratorProtocol {
            let reader: LineReader
            public mutating func next() async throws -> AgentResponse? { try await reader.next() }
        }
        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(reader: reader) }
    }

    /// Sends a request on this connection.
    public func send(_ request: AgentRequest) async throws {
        try await outbound.write(ByteBuffer(bytes: try AgentCodec.encodeLine(request)))
    }

    /// Every line from the agent, decoded, until it closes the connection.
    public var lines: Lines { Lines(reader: reader) }

    /// Sends a request and returns the next line, failing with the agent's error if it has one.
    public func call(_ request: AgentRequest) async throws -> AgentResponse {
        try await send(request)
        guard let line = try await reader.next() else { throw ChannelError.closed("\(endpoint)") }
        if let error = line.error { throw GuestError(agentError: error, kind: line.errorKind) }
        return line
    }
}

extension AgentClient {
    /// Opens one connection for several requests (a chunked transfer, a stream with its controls).
    public func withSession<R: Sendable>(_ body: @Sendable (AgentSession) async throws -> R) async throws -> R {
        let endpoint = self.endpoint
        return try await withLineConnection(to: endpoint) { inbound, outbound in
            try await body(AgentSession(outbound: outbound, reader: AgentSession.LineReader(inbound, endpoint: endpoint), endpoint: endpoint))
        }
    }

    /// One request and its answer; an answer carrying `error` throws it.
    public func call(_ request: AgentRequest, timeout: Double = 60) async throws -> AgentResponse {
        let response = try await send(request, timeout: timeout)
        if let error = response.error { throw GuestError(agentError: error, kind: response.errorKind) }
        return response
    }
}

extension GuestError {
    /// The agent's `error`, typed by its `error_kind` when it gave one.
    init(agentError message: String, kind: String?) {
        if let kind { self = .guestRequest(message, kind: kind) } else { self = .agent(message) }
    }
}
