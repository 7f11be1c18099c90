import CladeEngine
import CladeModel
import Foundation
import Logging
import NIOCore
import NIOPosix

/// One redirected connection of the egress proxy: finds its sandbox and destination, reads the
/// host name it is for, decides, and then either splices it to where it may go or closes it.
final class EgressRouter: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let engine: Engine
    private let settings: EgressSettings
    private let counts: EgressConnectionCounts
    private let logger: Logger
    /// What the connection sent before a verdict (the name is in it); it goes on first.
    private var buffered = ByteBuffer()
    /// Whose connection this is and where the guest sent it.
    private typealias Origin = (sandbox: String, uid: UInt32, policy: NetworkPolicy, destination: SocketAddress)
    private var origin: Origin?
    private var decided = false
    /// The guest shut its side after sending what it had (a half-close).
    private var inputClosed = false

    init(engine: Engine, settings: EgressSettings, counts: EgressConnectionCounts, logger: Logger) {
        self.engine = engine
        self.settings = settings
        self.counts = counts
        self.logger = logger
    }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel, engine = self.engine, loop = context.eventLoop
        // The callbacks below run on the channel's event loop, where the context may be used.
        let onLoop = NIOLoopBound(context, eventLoop: loop)
        guard let peer = channel.remoteAddress, let peerIP = peer.ipAddress, let peerPort = peer.port else { return close(context, "no peer address") }
        loop.scheduleTask(in: EgressProxy.nameTimeout) { [self] in
            if !self.decided { self.close(onLoop.value, "no host name within \(EgressProxy.nameTimeout.nanoseconds / 1_000_000_000) s") }
        }
        originalDestination(of: channel).flatMap { destination in
            loop.makeFutureWithTask { () -> Origin in
                guard let uid = EgressPeers.owner(ofIPv4: peerIP, port: peerPort) else {
                    throw EgressRefusal("no sandbox VMM owns the connection from \(peerIP):\(peerPort)")
                }
                guard let record = engine.sandbox(runningAs: uid) else { throw EgressRefusal("uid \(uid) belongs to no live sandbox of this store") }
                return (record.id, uid, record.network ?? .standard, destination)
            }
        }.whenComplete { [self] result in
            switch result {
            case .failure(let error):
                self.close(onLoop.value, "\(error)")
            case .success(let found):
                guard self.counts.take(found.uid) else {
                    return self.close(onLoop.value, "sandbox \(found.sandbox) has \(EgressProxy.maxConnectionsPerSandbox) connections open through the proxy")
                }
                // Released when the connection closes, whichever handler it then has: the router
                // leaves the pipeline once the connection is spliced or intercepted.
                let counts = self.counts
                onLoop.value.channel.closeFuture.whenComplete { _ in counts.release(found.uid) }
                self.origin = found
                self.decideIfNamed(onLoop.value)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        buffered.writeBuffer(&incoming)
        decideIfNamed(context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            decideIfNamed(context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        decided = true
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) { context.close(promise: nil) }

    private func decideIfNamed(_ context: ChannelHandlerContext) {
        guard !decided, let origin, let port = origin.destination.port else { return }
        let reading = EgressNames.read(Array(buffered.readableBytesView), port: port)
        if reading == .incomplete {
            if inputClosed { close(context, "the connection ended before naming its host") }
            return
        }
        decided = true
        let loop = context.eventLoop
        let onLoop = NIOLoopBound(context, eventLoop: loop)
        context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
        let named: String?
        let host: String? = if case .name(let name) = reading { name } else { nil }
        // This daemon's own E2B edge serves sandbox hosts under its domain wherever they are asked for.
        let edge = host.flatMap { settings.edge?.address(for: $0, port: port) }
        let unresolved: EventLoopFuture<[SocketAddress]>
        switch reading {
        case .name(let name) where origin.policy.admits(name: name):
            named = name
            let pinned = settings.pinned
            unresolved = edge.map { loop.makeSucceededFuture([$0]) }
                ?? loop.makeFutureWithTask { try await EgressPeers.resolve(name, port: port, pinned: pinned) }
        default:
            named = nil
            guard case .v4(let v4) = origin.destination, origin.policy.admits(address: UInt32(bigEndian: v4.address.sin_addr.s_addr), port: port) else {
                if port == 80 { refuseHTTP(context, reading) }
                return close(context, "sandbox \(origin.sandbox): \(Self.describe(reading)) is not admitted, nor is \(origin.destination.ipAddress ?? "?"):\(port)")
            }
            unresolved = loop.makeSucceededFuture([edge ?? origin.destination])
        }
        let targets = unresolved.flatMapThrowing { addresses -> [SocketAddress] in
            if edge != nil { return addresses }
            let hostAddresses = EgressPeers.hostAddresses()
            let allowed = addresses.filter { !EgressPeers.isForbidden($0, hostAddresses: hostAddresses) }
            guard !allowed.isEmpty else { throw EgressRefusal("\(named ?? "the destination") is on the host, link-local or unroutable (\(addresses.compactMap(\.ipAddress)))") }
            return allowed
        }
        if let host, let headers = origin.policy.headers(forHost: host) {
            return intercept(context, host: host, port: port, headers: headers, targets: targets, sandbox: origin.sandbox)
        }
        targets.flatMap { addresses in
            Self.connect(addresses, with: ClientBootstrap(group: loop).connectTimeout(.seconds(10)).channelOption(.allowRemoteHalfClosure, value: true), on: loop)
        }.whenComplete { [self] result in
            switch result {
            case .failure(let error):
                self.close(onLoop.value, "sandbox \(origin.sandbox): \(error)")
            case .success(let upstream):
                self.logger.debug("egress relayed", metadata: [
                    "sandbox": "\(origin.sandbox)", "name": "\(named ?? "-")", "to": "\(upstream.remoteAddress?.description ?? "?")",
                ])
                let pending = self.buffered
                self.buffered = ByteBuffer()
                let context = onLoop.value
                ChannelRelay.splice(context, client: context.channel, partner: upstream, pending: pending, clientDone: self.inputClosed).whenFailure { error in
                    self.close(onLoop.value, "cannot relay: \(error)")
                }
            }
        }
    }

    /// Hands the connection to ``EgressInterception`` once its destination is known: its
    /// requests to `host` get `headers`.
    private func intercept(
        _ context: ChannelHandlerContext, host: String, port: Int, headers: [String: String], targets: EventLoopFuture<[SocketAddress]>, sandbox: String
    ) {
        guard let interception = settings.interception else {
            return close(context, "sandbox \(sandbox): requests to \(host) must be changed, and this proxy cannot: \(settings.interceptionUnavailable ?? "no interception authority")")
        }
        let onLoop = NIOLoopBound(context, eventLoop: context.eventLoop)
        let logger = self.logger
        targets.whenComplete { [self] result in
            let context = onLoop.value
            switch result {
            case .failure(let error):
                self.close(context, "sandbox \(sandbox): \(error)")
            case .success(let addresses):
                let upstreamTLS = port == 443 ? interception.upstreamTLS : nil
                let pending = self.buffered
                self.buffered = ByteBuffer()
                do {
                    try EgressInterception.take(
                        context, pending: pending, host: host, tls: port == 443, headers: headers,
                        upstream: { loop, responses in EgressInterception.connect(addresses, host: host, tls: upstreamTLS, on: loop, responses: responses) },
                        authority: interception.authority, logger: logger)
                    logger.debug("egress intercepted", metadata: ["sandbox": "\(sandbox)", "name": "\(host)", "headers": "\(headers.keys.sorted())"])
                } catch {
                    self.close(context, "sandbox \(sandbox): cannot intercept \(host): \(error)")
                }
            }
        }
    }

    /// Connects `bootstrap` to the first of `addresses` that answers.
    static func connect(_ addresses: [SocketAddress], with bootstrap: ClientBootstrap, on loop: EventLoop) -> EventLoopFuture<Channel> {
        guard let first = addresses.first else { return loop.makeFailedFuture(EgressRefusal("no address to connect to")) }
        return bootstrap.connect(to: first).flatMapError { error in
            addresses.count > 1 ? connect(Array(addresses.dropFirst()), with: bootstrap, on: loop) : loop.makeFailedFuture(error)
        }
    }

    /// A plain-HTTP client gets a reason it can read; a TLS one only sees the connection close.
    private func refuseHTTP(_ context: ChannelHandlerContext, _ reading: EgressNames.Reading) {
        let body = "clade: this sandbox's network policy does not admit \(Self.describe(reading))\n"
        let response = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response)), promise: nil)
    }

    private static func describe(_ reading: EgressNames.Reading) -> String {
        switch reading {
        case .name(let name): return "host \(name)"
        case .unnamed(let why): return "a connection without a host name (\(why))"
        case .incomplete: return "an incomplete request"
        }
    }

    private func close(_ context: ChannelHandlerContext, _ reason: String) {
        decided = true
        logger.info("egress refused", metadata: ["reason": "\(reason)"])
        context.close(promise: nil)
    }
}
