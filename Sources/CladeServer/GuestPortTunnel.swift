import CladeEngine
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// `clade serve --proxy-listen`: a listener that connects each client to the guest port its
/// Host header names (`<port>-<sandbox id>.<domain>`) and then relays bytes both ways untouched,
/// so WebSocket upgrades, server-sent events and long polls work as well as plain requests.
/// Only the request head is read (to find the Host); everything after is the guest's business.
struct GuestPortTunnel: Service {
    let host: String
    let port: Int
    let domain: String
    let engine: Engine
    let logger: Logger

    /// A request head larger than this is refused (431).
    static let maxHeadBytes = 64 * 1024

    func run() async throws {
        let engine = self.engine, domain = self.domain, logger = self.logger
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: true)
            .childChannelInitializer { child in
                child.pipeline.addHandler(HeadRouter(domain: domain, engine: engine, logger: logger))
            }
            .bind(host: host, port: port).get()
        logger.notice("proxying guest ports", metadata: ["listen": "\(host):\(port)", "domain": "\(domain)"])
        // Closing the listener is what ends the wait; cancellation alone would not.
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }
}

/// Reads a connection's first request head, finds the guest port it is for, connects to it and
/// replaces itself with a pair of relays.
private final class HeadRouter: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let domain: String
    let engine: Engine
    let logger: Logger
    private var buffered: ByteBuffer?
    private var routing = false

    init(domain: String, engine: Engine, logger: Logger) {
        self.domain = domain
        self.engine = engine
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffered == nil { buffered = incoming } else { buffered?.writeBuffer(&incoming) }
        guard !routing, let head = buffered else { return }
        let view = head.readableBytesView
        guard let end = view.firstRange(of: Array("\r\n\r\n".utf8)) else {
            if head.readableBytes > GuestPortTunnel.maxHeadBytes { refuse(context, 431, "the request head is larger than 64 KiB") }
            return
        }
        routing = true
        let headText = String(decoding: view[view.startIndex..<end.lowerBound], as: UTF8.self)
        guard let authority = Self.hostHeader(headText), let target = GuestPortProxyMiddleware<CladeAPI.Context>.target(of: authority, domain: domain) else {
            return refuse(context, 404, "this listener serves <port>-<sandbox id>.\(domain) hosts only")
        }
        context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
        let engine = self.engine
        let loop = context.eventLoop
        let client = context.channel
        // The callbacks below run on the channel's event loop, where the context may be used.
        let onLoop = NIOLoopBound(context, eventLoop: loop)
        let published = loop.makeFutureWithTask {
            try await engine.sandboxes.publishPort(id: target.sandbox, guestPort: target.port)
        }
        published.flatMap { port in
            ClientBootstrap(group: loop).connectTimeout(.seconds(10)).connect(host: "127.0.0.1", port: port.hostPort)
        }.whenComplete { [self] result in
            switch result {
            case .success(let guest):
                self.splice(context: onLoop.value, client: client, guest: guest)
            case .failure(let error):
                self.logger.info("guest port unreachable", metadata: ["sandbox": "\(target.sandbox)", "port": "\(target.port)", "error": "\(error)"])
                self.refuse(onLoop.value, 502, "guest port \(target.port) of sandbox \(target.sandbox) does not answer: \(error)")
            }
        }
    }

    private func splice(context: ChannelHandlerContext, client: Channel, guest: Channel) {
        let pending = buffered
        buffered = nil
        let onLoop = NIOLoopBound(context, eventLoop: context.eventLoop)
        ChannelRelay.splice(context, client: client, partner: guest, pending: pending).whenFailure { [self] error in
            self.refuse(onLoop.value, 502, "cannot relay to the guest: \(error)")
        }
    }

    private func refuse(_ context: ChannelHandlerContext, _ status: Int, _ message: String) {
        let reason = [404: "Not Found", 431: "Request Header Fields Too Large", 502: "Bad Gateway"][status] ?? "Error"
        let body = "{\"error\":\(Self.quoted(message))}"
        let response = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        let onLoop = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: response))).whenComplete { _ in onLoop.value.close(promise: nil) }
    }

    static func hostHeader(_ head: String) -> String? {
        for line in head.split(separator: "\r\n").dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            if line[..<colon].trimmingCharacters(in: .whitespaces).lowercased() == "host" {
                return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        return nil
    }

    static func quoted(_ text: String) -> String {
        String(decoding: (try? JSONEncoder().encode(text)) ?? Data("\"\"".utf8), as: UTF8.self)
    }
}
