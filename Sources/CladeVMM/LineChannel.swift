import Foundation
import NIOCore
import NIOExtras
import NIOPosix

/// Where a line-oriented peer listens.
public indirect enum LineEndpoint: Sendable, CustomStringConvertible {
    case unix(String)
    case tcp(host: String, port: Int)
    /// An endpoint that errors call by a name of its own ("sandbox 4f2a…'s agent").
    case named(String, LineEndpoint)

    public var description: String {
        switch self {
        case .unix(let path): return path
        case .tcp(let host, let port): return "\(host):\(port)"
        case .named(let name, let endpoint): return "\(name) (\(endpoint))"
        }
    }

    func socketAddress() throws -> SocketAddress {
        switch self {
        case .unix(let path): return try SocketAddress(unixDomainSocketPath: path)
        case .tcp(let host, let port): return try SocketAddress(ipAddress: host, port: port)
        case .named(_, let endpoint): return try endpoint.socketAddress()
        }
    }
}

/// Failures talking to a line-oriented peer (QMP, the guest agent).
public enum ChannelError: Error, CustomStringConvertible, Sendable {
    case timedOut(what: String, seconds: Double)
    case closed(String)
    case malformed(String)

    public var description: String {
        switch self {
        case .timedOut(let what, let seconds): return "\(what) did not answer within \(seconds) s"
        case .closed(let what): return "\(what) closed the connection"
        case .malformed(let what): return "malformed message: \(what)"
        }
    }
}

/// Opens a newline-framed connection and runs `body` with its inbound lines and an outbound writer;
/// the connection is closed when `body` returns or throws.
public func withLineConnection<R: Sendable>(
    to endpoint: LineEndpoint,
    _ body: @Sendable (NIOAsyncChannelInboundStream<ByteBuffer>, NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws -> R
) async throws -> R {
    let bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .connectTimeout(.seconds(5))
    let address = try endpoint.socketAddress()
    let channel = try await bootstrap.connect(to: address) { channel in
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(
                ByteToMessageHandler(BoundedLineDecoder(peer: endpoint.description)))
            return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
        }
    }
    return try await channel.executeThenClose { inbound, outbound in
        try await body(inbound, outbound)
    }
}

/// Runs `operation`, throwing ``ChannelError/timedOut(what:seconds:)`` if it takes longer than `seconds`.
public func withTimeout<R: Sendable>(
    _ seconds: Double, what: String, _ operation: @escaping @Sendable () async throws -> R
) async throws -> R {
    try await withThrowingTaskGroup(of: R?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next(), let result = first else {
            throw ChannelError.timedOut(what: what, seconds: seconds)
        }
        return result
    }
}
