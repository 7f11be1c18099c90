import Foundation
import Logging
import NIOCore
import NIOPosix
import SwiftProtobuf

/// What a ttrpc method receives besides its payload.
public struct TTRPCContext: Sendable {
    /// The request's metadata (containerd sends `containerd-namespace-ttrpc`).
    public var metadata: [String: String]
    /// How long the caller waits, when it said so.
    public var timeout: Duration?
}

/// Maps `service`/`method` to handlers that take and return marshalled messages.
public struct TTRPCRouter: Sendable {
    public typealias Handler = @Sendable (_ payload: Data, _ context: TTRPCContext) async throws -> Data
    private var handlers: [String: Handler] = [:]
    /// Runs after each answer has been written, with the method's name (the shim exits after
    /// answering Shutdown, not before).
    public var afterAnswer: (@Sendable (_ method: String) async -> Void)?

    public init() {}

    /// Registers `body` for `service`/`method`, decoding its request and encoding its answer.
    public mutating func add<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ service: String, _ method: String, _ body: @escaping @Sendable (Request, TTRPCContext) async throws -> Response
    ) {
        handlers["\(service)/\(method)"] = { payload, context in
            let request: Request
            do {
                request = try Request(serializedBytes: payload)
            } catch {
                throw TTRPCError.status(.invalidArgument, "\(method): the request does not decode as \(Request.protoMessageName): \(error)")
            }
            return try await body(request, context).serializedData()
        }
    }

    func handler(service: String, method: String) -> Handler? { handlers["\(service)/\(method)"] }
}

/// A ttrpc server on a unix socket. Each request runs in a task of its own and is answered when
/// it ends, so a blocking `Wait` never holds up the `Start` behind it on the same connection.
public final class TTRPCServer: Sendable {
    private let group: MultiThreadedEventLoopGroup
    private let channel: Channel

    /// Serves `router` on a listening socket this process already holds (the shim's fd 3).
    public static func adopting(listener descriptor: CInt, router: TTRPCRouter, logger: Logger) async throws -> TTRPCServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await bootstrap(group, router, logger).withBoundSocket(descriptor).get()
        return TTRPCServer(group: group, channel: channel)
    }

    /// Serves `router` on a new socket at `path`.
    public static func binding(path: String, router: TTRPCRouter, logger: Logger) async throws -> TTRPCServer {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let channel = try await bootstrap(group, router, logger).bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        return TTRPCServer(group: group, channel: channel)
    }

    private init(group: MultiThreadedEventLoopGroup, channel: Channel) {
        self.group = group
        self.channel = channel
    }

    private static func bootstrap(_ group: MultiThreadedEventLoopGroup, _ router: TTRPCRouter, _ logger: Logger) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(TTRPCFrameDecoder()))
                    try channel.pipeline.syncOperations.addHandler(MessageToByteHandler(TTRPCFrameEncoder()))
                    try channel.pipeline.syncOperations.addHandler(TTRPCRequestHandler(router: router, logger: logger))
                }
            }
    }

    /// Stops accepting connections and ends the event loop.
    public func close() async {
        try? await channel.close()
        try? await group.shutdownGracefully()
    }
}

/// Turns each request frame into a task that answers on the same stream id.
final class TTRPCRequestHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = TTRPCFrame

    let router: TTRPCRouter
    let logger: Logger

    init(router: TTRPCRouter, logger: Logger) {
        self.router = router
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        guard frame.kind == TTRPCFrame.Kind.request.rawValue else { return }
        let channel = context.channel
        let router = router
        let logger = logger
        Task {
            let (method, response) = await Self.answer(frame.payload, router: router, logger: logger)
            let bytes = (try? response.serializedBytes()) ?? [UInt8]()
            try? await channel.writeAndFlush(TTRPCFrame(streamID: frame.streamID, kind: .response, payload: bytes))
            await router.afterAnswer?(method)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.warning("ttrpc connection closed", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    static func answer(_ payload: [UInt8], router: TTRPCRouter, logger: Logger) async -> (method: String, response: Ttrpc_Response) {
        var response = Ttrpc_Response()
        var method = ""
        do {
            let request = try Ttrpc_Request(serializedBytes: payload)
            method = request.method
            guard let handler = router.handler(service: request.service, method: request.method) else {
                throw TTRPCError.status(.unimplemented, "\(request.service)/\(request.method) is not implemented by clade's shim")
            }
            var context = TTRPCContext(metadata: [:], timeout: request.timeoutNano > 0 ? .nanoseconds(request.timeoutNano) : nil)
            for pair in request.metadata { context.metadata[pair.key] = pair.value }
            logger.debug("ttrpc request", metadata: ["method": "\(request.method)"])
            response.payload = try await handler(request.payload, context)
            response.status.code = TTRPCCode.ok.rawValue
        } catch TTRPCError.status(let code, let message) {
            response.status.code = code.rawValue
            response.status.message = message
        } catch {
            response.status.code = TTRPCCode.unknown.rawValue
            response.status.message = "\(error)"
        }
        return (method, response)
    }
}
