#if canImport(Glibc)
import Glibc
#endif
import CladeEngine
import CladeModel
import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// `clade serve --egress-proxy-port PORT`: enforces the host names of network policies
/// (`deny:0.0.0.0/0;allow:pypi.org`, E2B's domain `allowOut`).
///
/// Root's firewall redirects a named-policy sandbox's new TCP connections to ports 80 and 443
/// here (see `HostFirewall`'s egress redirect). For each, the proxy finds the sandbox by the
/// uid of the VMM socket that opened it, reads the name it is for (TLS server name, HTTP
/// `Host`) without decrypting or changing anything, and:
/// - a name the policy admits is connected to the address that name resolves to on the host,
///   never the one the guest chose, so a guest cannot reach an address by naming another host;
/// - otherwise the connection goes where the guest sent it only if the address rules admit it;
/// - anything else is closed. So is any destination on the host or link-local, and any
///   connection of a sandbox with more than ``maxConnectionsPerSandbox`` open.
/// While no proxy listens on the port, redirected connections are refused: names fail closed.
public struct EgressProxy: Service {
    let port: Int
    let engine: Engine
    /// Names the operator pinned to addresses (`--egress-resolve NAME=ADDRESS`), used before DNS.
    let pinned: [String: String]
    /// The E2B listener of the same daemon, when it serves one.
    let edge: EgressLocalEdge?
    let logger: Logger

    public init(port: Int, engine: Engine, pinned: [String: String], edge: EgressLocalEdge? = nil, logger: Logger) {
        self.port = port
        self.engine = engine
        self.pinned = pinned
        self.edge = edge
        self.logger = logger
    }

    /// Connections one sandbox may have open through the proxy at once.
    static let maxConnectionsPerSandbox = 256
    /// How long a connection may take to send the bytes that name its host.
    static let nameTimeout: TimeAmount = .seconds(10)

    public func run() async throws {
        let engine = self.engine, logger = self.logger
        let counts = EgressConnectionCounts()
        var settings = EgressSettings(pinned: pinned, edge: edge)
        do {
            settings.interception = (try EgressAuthority.load(state: engine.home.state), try EgressInterception.upstreamTLSContext())
        } catch {
            // Transforms then fail closed: their connections are refused with this reason.
            settings.interceptionUnavailable = "\(error)"
            logger.error("the egress proxy cannot change requests (network transforms)", metadata: ["error": "\(error)"])
        }
        let shared = settings
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Clients that send a request and shut their side (nc, HTTP/1.0) still get the answer.
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { child in
                child.pipeline.addHandler(EgressRouter(engine: engine, settings: shared, counts: counts, logger: logger))
            }
            .bind(host: "127.0.0.1", port: port).get()
        logger.notice("egress proxy for host names in network policies", metadata: ["listen": "127.0.0.1:\(port)"])
        try await withGracefulShutdownHandler {
            try await channel.closeFuture.get()
        } onGracefulShutdown: {
            channel.close(promise: nil)
        }
    }

    /// Parses `--egress-resolve NAME=ADDRESS` entries into the names the proxy pins.
    public static func pinnedNames(_ entries: [String]) throws -> [String: String] {
        var pinned: [String: String] = [:]
        for entry in entries {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let name = try? NetworkDomain(parsing: parts[0]), !name.pattern.hasPrefix("*."),
                (try? SocketAddress(ipAddress: parts[1], port: 0)) != nil
            else {
                throw APIError(.badRequest, "--egress-resolve '\(entry)' is not NAME=ADDRESS (e.g. pypi.internal=10.1.2.3)")
            }
            pinned[name.pattern] = parts[1]
        }
        return pinned
    }
}

/// What every connection's router shares.
struct EgressSettings: Sendable {
    var pinned: [String: String]
    var edge: EgressLocalEdge?
    /// What changes requests for transforms; nil (with the reason) when the authority cannot be loaded.
    var interception: (authority: EgressAuthority, upstreamTLS: NIOSSLContext)?
    var interceptionUnavailable: String?
}

/// The daemon's own E2B listener as a destination: a guest asking for a sandbox host under its
/// domain (`<port>-<id>.<domain>`, as `get_host` names it) is connected there, as a client on
/// the internet would be, though the listener is on the host, which guests otherwise never reach.
/// The listener admits such a request only as it admits any other (public traffic, access tokens).
public struct EgressLocalEdge: Sendable {
    let domain: String
    let address: SocketAddress
    /// The listener speaks TLS: guests' connections to port 443 go there; else those to port 80.
    let tls: Bool

    /// `listen` is the E2B listener's `HOST:PORT`; an unspecified host is reached on loopback.
    public init(domain: String, listen: String, tls: Bool) throws {
        self.tls = tls
        let (listenHost, port) = try Daemon.parse(listen)
        var host = listenHost.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        if host == "0.0.0.0" || host.isEmpty { host = "127.0.0.1" }
        if host == "::" { host = "::1" }
        self.domain = domain.lowercased()
        self.address = try SocketAddress.makeAddressResolvingHost(host, port: port)
    }

    /// The listener's address when `host` is a sandbox host under the domain, asked for on the
    /// port of the listener's protocol.
    func address(for host: String, port: Int) -> SocketAddress? {
        guard port == (tls ? 443 : 80) else { return nil }
        let name = host.lowercased()
        guard name.hasSuffix("." + domain) else { return nil }
        let label = name.dropLast(domain.count + 1)
        let parts = label.split(separator: "-", maxSplits: 1)
        guard parts.count == 2, !label.contains("."), parts[0].allSatisfy(\.isNumber), !parts[1].isEmpty else { return nil }
        return address
    }
}

/// Open proxied connections per sandbox uid, shared by every connection's router.
final class EgressConnectionCounts: @unchecked Sendable {
    private let lock = NSLock()
    private var counts: [UInt32: Int] = [:]

    /// Counts one more for `uid`, or returns false when it already has the most allowed.
    func take(_ uid: UInt32) -> Bool {
        lock.withLock {
            guard counts[uid, default: 0] < EgressProxy.maxConnectionsPerSandbox else { return false }
            counts[uid, default: 0] += 1
            return true
        }
    }

    func release(_ uid: UInt32) {
        lock.withLock {
            counts[uid, default: 1] -= 1
            if counts[uid] == 0 { counts[uid] = nil }
        }
    }
}

/// The destination a redirected connection was first sent to (`SO_ORIGINAL_DST`).
func originalDestination(of channel: Channel) -> EventLoopFuture<SocketAddress> {
    guard let provider = channel as? SocketOptionProvider else {
        return channel.eventLoop.makeFailedFuture(EgressRefusal("the connection's socket options cannot be read"))
    }
    let future: EventLoopFuture<sockaddr_in> = provider.unsafeGetSocketOption(level: SocketOptionLevel(IPPROTO_IP), name: SocketOptionName(SO_ORIGINAL_DST))
    return future.map { SocketAddress($0, host: "") }
}

private let SO_ORIGINAL_DST: Int32 = 80
