import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// A redirected connection whose host has transforms: the proxy reads its HTTP requests (ending
/// the guest's TLS first on port 443, with a certificate from the store's ``EgressAuthority``),
/// sets the transform's headers on each, and sends them to the host over a connection of its
/// own (TLS verified against the host's trust store, and `SSL_CERT_FILE` when set).
enum EgressInterception {
    /// Replaces the handler of `context` (the router, which read `pending` to decide) with TLS
    /// termination, HTTP/1.1 and an ``InterceptedRequests`` relay; then feeds `pending` through
    /// them and lets the client read again.
    static func take(
        _ context: ChannelHandlerContext, pending: ByteBuffer, host: String, tls: Bool, headers: [String: String],
        upstream: @escaping InterceptedRequests.Connect, authority: EgressAuthority, logger: Logger
    ) throws {
        var handlers: [ChannelHandler] = []
        if tls { handlers.append(NIOSSLServerHandler(context: try authority.serverContext(for: host))) }
        handlers += [
            ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes)), HTTPResponseEncoder(),
            HTTPServerPipelineHandler(), HTTPServerProtocolErrorHandler(),
            InterceptedRequests(host: host, headers: headers, upstream: upstream, logger: logger),
        ]
        let pipeline = context.pipeline.syncOperations
        try pipeline.addHandlers(handlers, position: .after(context.handler))
        context.fireChannelRead(NIOAny(pending))
        pipeline.removeHandler(context: context, promise: nil)
        context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
    }

    /// The client side of connections to hosts, for every intercepted connection of the proxy.
    static func upstreamTLSContext(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        if let file = environment["SSL_CERT_FILE"], !file.isEmpty { configuration.additionalTrustRoots = [.file(file)] }
        configuration.applicationProtocols = ["http/1.1"]
        return try NIOSSLContext(configuration: configuration)
    }

    /// Connects to the first of `addresses` that answers and readies it for HTTP/1.1 requests
    /// to `host` (inside TLS when `tls` is set); `responses` gets what the host answers.
    static func connect(
        _ addresses: [SocketAddress], host: String, tls: NIOSSLContext?, on loop: EventLoop, responses: @escaping @Sendable () -> ChannelHandler
    ) -> EventLoopFuture<Channel> {
        let bootstrap = ClientBootstrap(group: loop).connectTimeout(.seconds(10))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let tls { try pipeline.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: host)) }
                    try pipeline.addHTTPClientHandlers()
                    try pipeline.addHandler(responses())
                }
            }
        return EgressRouter.connect(addresses, with: bootstrap, on: loop)
    }
}

/// The guest's side of an intercepted connection: each request, with the transform's headers
/// set, goes to the host; each response comes back. One host connection per guest connection,
/// made when the first request starts; `HTTPServerPipelineHandler` keeps requests in order.
final class InterceptedRequests: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let host: String
    private let headers: [String: String]
    /// Opens the host connection on the loop given, with the handler made by the closure last in its pipeline.
    typealias Connect = @Sendable (EventLoop, @escaping @Sendable () -> ChannelHandler) -> EventLoopFuture<Channel>

    private let connect: Connect
    private let logger: Logger
    private var context: ChannelHandlerContext?
    private var upstream: Channel?
    private var queued: [HTTPClientRequestPart] = []
    private var connecting = false

    init(host: String, headers: [String: String], upstream: @escaping Connect, logger: Logger) {
        self.host = host
        self.headers = headers
        self.connect = upstream
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(var head):
            for (name, value) in headers { head.headers.replaceOrAdd(name: name, value: value) }
            send(.head(head))
        case .body(let body): send(.body(.byteBuffer(body)))
        case .end(let trailers): send(.end(trailers))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        upstream?.close(promise: nil)
        context.fireChannelInactive()
    }

    /// The guest reads again: so may the host's connection.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { upstream?.setOption(.autoRead, value: true).whenComplete { _ in } }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.info("intercepted egress closed", metadata: ["host": "\(host)", "error": "\(error)"])
        context.close(promise: nil)
    }

    private func send(_ part: HTTPClientRequestPart) {
        if let upstream {
            upstream.writeAndFlush(part, promise: nil)
            // A host slower than the guest's upload stops the guest's side until it catches up.
            if !upstream.isWritable { context?.channel.setOption(.autoRead, value: false).whenComplete { _ in } }
            return
        }
        queued.append(part)
        guard !connecting, let context else { return }
        connecting = true
        let loop = context.eventLoop
        connect(loop, { InterceptedResponses(requests: self) }).whenComplete { [self] result in
            switch result {
            case .success(let channel):
                self.upstream = channel
                for part in self.queued { channel.write(part, promise: nil) }
                self.queued = []
                channel.flush()
                channel.closeFuture.whenComplete { _ in self.context?.close(promise: nil) }
            case .failure(let error):
                self.queued = []
                self.answerBadGateway("clade's egress proxy cannot reach \(self.host): \(error)")
            }
        }
    }

    /// A part of the host's answer, from ``InterceptedResponses``; false when the guest cannot
    /// take more for now (the host's side then stops reading until it can).
    func respond(_ part: HTTPServerResponsePart) -> Bool {
        guard let context else { return true }
        context.writeAndFlush(wrapOutboundOut(part), promise: nil)
        return context.channel.isWritable
    }

    /// The host's connection takes writes again: so may the guest's side read.
    func upstreamBecameWritable() {
        context?.channel.setOption(.autoRead, value: true).whenComplete { _ in }
    }

    private func answerBadGateway(_ reason: String) {
        guard let context else { return }
        logger.info("intercepted egress failed", metadata: ["host": "\(host)", "reason": "\(reason)"])
        let body = ByteBuffer(string: reason + "\n")
        var head = HTTPResponseHead(version: .http1_1, status: .badGateway)
        head.headers.add(name: "content-type", value: "text/plain")
        head.headers.add(name: "content-length", value: "\(body.readableBytes)")
        head.headers.add(name: "connection", value: "close")
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// The host's side of an intercepted connection: hands each part of its answers to the guest's side.
final class InterceptedResponses: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPClientResponsePart

    private let requests: InterceptedRequests

    init(requests: InterceptedRequests) { self.requests = requests }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let keepsUp: Bool
        switch unwrapInboundIn(data) {
        case .head(let head): keepsUp = requests.respond(.head(head))
        case .body(let body): keepsUp = requests.respond(.body(.byteBuffer(body)))
        case .end(let trailers): keepsUp = requests.respond(.end(trailers))
        }
        if !keepsUp { context.channel.setOption(.autoRead, value: false).whenComplete { _ in } }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { requests.upstreamBecameWritable() }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
