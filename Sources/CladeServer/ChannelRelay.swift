import NIOCore

/// One direction of a spliced connection: what its channel reads, the partner's channel writes.
/// A partner that cannot keep up stops this side reading (backpressure), and a close on either
/// side closes both.
final class ChannelRelay: ChannelDuplexHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    var partner: ChannelRelay?

    /// Joins `client` (whose pipeline the handler of `context` reads for) and `partner` with a
    /// pair of relays: `pending` (what the client sent before) goes to the partner first, that
    /// handler leaves the pipeline, and the client reads again. A relay that cannot be added closes the
    /// partner, and the failure is returned for the caller to answer the client. `clientDone`
    /// says the client already half-closed (sent all it will), which the partner is then told.
    static func splice(
        _ context: ChannelHandlerContext, client: Channel, partner: Channel, pending: ByteBuffer?,
        clientDone: Bool = false
    ) -> EventLoopFuture<Void> {
        let toPartner = ChannelRelay(), toClient = ChannelRelay()
        toPartner.partner = toClient
        toClient.partner = toPartner
        do {
            try partner.pipeline.syncOperations.addHandler(toClient)
        } catch {
            partner.close(promise: nil)
            return context.eventLoop.makeFailedFuture(error)
        }
        // The replaced handler is removed on the client's event loop, where `map` runs.
        let onLoop = NIOLoopBound(context, eventLoop: context.eventLoop)
        return context.pipeline.addHandler(toPartner).map {
            if let pending { partner.writeAndFlush(pending, promise: nil) }
            if clientDone { partner.close(mode: .output, promise: nil) }
            onLoop.value.pipeline.syncOperations.removeHandler(context: onLoop.value, promise: nil)
            client.setOption(.autoRead, value: true).whenComplete { _ in }
        }.flatMapErrorThrowing { error in
            partner.close(promise: nil)
            client.close(promise: nil)
            throw error
        }
    }
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    private func write(_ data: NIOAny) { context?.write(data, promise: nil) }
    private func flush() { context?.flush() }
    private func closeFromPartner() { context?.close(promise: nil) }
    private var writable: Bool { context?.channel.isWritable ?? false }

    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.write(data) }
    func channelReadComplete(context: ChannelHandlerContext) { partner?.flush() }
    func channelInactive(context: ChannelHandlerContext) { partner?.closeFromPartner() }
    /// A side that half-closes (on a channel that allows it) has its partner stop writing too,
    /// so a client that sends its request and then shuts its output still gets the answer.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed { partner?.context?.close(mode: .output, promise: nil) }
        context.fireUserInboundEventTriggered(event)
    }
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
    }

    func read(context: ChannelHandlerContext) {
        if partner?.writable ?? false {
            context.read()
        } else {
            pendingRead = true
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }
}
