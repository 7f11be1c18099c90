import Foundation
import NIOCore
import NIOPosix
import SwiftProtobuf

/// A ttrpc client on a unix socket: each call takes the next odd stream id and waits for the
/// response with that id.
public final class TTRPCClient: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel
    private let pending: TTRPCPendingCalls

    /// Connects to `path`.
    public static func connect(path: String) async throws -> TTRPCClient {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let pending = TTRPCPendingCalls()
        do {
            let channel = try await ClientBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(TTRPCFrameDecoder()))
                        try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(TTRPCFrameEncoder()))
                        try channel.pipeline.syncOperations.addHandler(TTRPCResponseHandler(pending: pending))
                    }
                }
                .connect(unixDomainSocketPath: path).get()
            return TTRPCClient(group: group, channel: channel, pending: pending)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private init(group: MultiThreadedEventLoopGroup, channel: Channel, pending: TTRPCPendingCalls) {
        self.group = group
        self.channel = channel
        self.pending = pending
    }

    /// Calls `service`/`method` and decodes the answer as `Response`.
    public func call<Response: SwiftProtobuf.Message>(
        _ service: String, _ method: String, _ request: some SwiftProtobuf.Message, metadata: [String: String] = [:],
        as _: Response.Type = Response.self
    ) async throws -> Response {
        var wire = Ttrpc_Request()
        wire.service = service
        wire.method = method
        wire.payload = try request.serializedData()
        wire.metadata = metadata.map { key, value in
            var pair = Ttrpc_KeyValue()
            pair.key = key
            pair.value = value
            return pair
        }
        let promise = channel.eventLoop.makePromise(of: Ttrpc_Response.self)
        let stream = pending.register(promise)
        channel.writeAndFlush(TTRPCFrame(streamID: stream, kind: .request, payload: try wire.serializedBytes()), promise: nil)
        let response = try await promise.futureResult.get()
        guard response.status.code == TTRPCCode.ok.rawValue else {
            throw TTRPCError.status(TTRPCCode(rawValue: response.status.code) ?? .unknown, response.status.message)
        }
        return try Response(serializedBytes: response.payload)
    }

    public func close() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

/// Calls waiting for their answers, by stream id.
final class TTRPCPendingCalls: @unchecked Sendable {
    private let lock = NSLock()
    private var next: UInt32 = 1
    private var waiting: [UInt32: EventLoopPromise<Ttrpc_Response>] = [:]

    func register(_ promise: EventLoopPromise<Ttrpc_Response>) -> UInt32 {
        lock.withLock {
            let id = next
            next &+= 2
            waiting[id] = promise
            return id
        }
    }

    func finish(_ id: UInt32, with response: Ttrpc_Response) {
        lock.withLock { waiting.removeValue(forKey: id) }?.succeed(response)
    }

    func failAll(_ error: Error) {
        let all = lock.withLock {
            defer { waiting.removeAll() }
            return Array(waiting.values)
        }
        for promise in all { promise.fail(error) }
    }
}

final class TTRPCResponseHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = TTRPCFrame
    let pending: TTRPCPendingCalls

    init(pending: TTRPCPendingCalls) { self.pending = pending }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard frame.kind == TTRPCFrame.Kind.response.rawValue, let response = try? Ttrpc_Response(serializedBytes: frame.payload) else { return }
        pending.finish(frame.streamID, with: response)
    }

    func channelInactive(context: ChannelHandlerContext) {
        pending.failAll(TTRPCError.closed)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        pending.failAll(error)
        context.close(promise: nil)
    }
}
