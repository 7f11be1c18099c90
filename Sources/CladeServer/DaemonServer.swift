#if canImport(Glibc)
import Glibc
#endif
import CladeEngine
import CladeModel
import CladeStore
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle

/// How `clade serve` listens.
public struct DaemonConfiguration: Sendable {
    /// `host:port` for TCP, or nil for none.
    public var listen: String?
    /// A unix socket path (created mode 0600), or nil for none.
    public var unixSocket: String?
    /// The bearer token every route but `/healthz` requires, or nil for none.
    public var token: String?
    public var limits: APILimits
    /// With a domain, requests for `<port>-<id>.<domain>` are proxied to that guest port.
    public var proxyDomain: String?
    /// A listener of its own for guest ports (HTTP, WebSocket, anything on HTTP/1.1), by Host.
    public var proxyListen: String?
    /// The loopback port of the egress proxy that enforces host names in network policies; the
    /// engine must be given the same port (``Engine/egressProxyPort``), so its rules point here.
    public var egressProxyPort: Int?
    /// Names the egress proxy resolves to these addresses instead of asking DNS.
    public var egressPinnedNames: [String: String] = [:]

    public init(listen: String?, unixSocket: String?, token: String?, limits: APILimits = APILimits(), proxyDomain: String? = nil, proxyListen: String? = nil) {
        self.proxyListen = proxyListen
        self.listen = listen
        self.unixSocket = unixSocket
        self.token = token
        self.limits = limits
        self.proxyDomain = proxyDomain
    }
}

/// `clade serve`: reconciles the store with the processes that still run, then serves the API.
public enum Daemon {
    public static func run(
        engine: Engine, configuration: DaemonConfiguration, e2b: E2BConfiguration? = nil, logger: Logger = Logger(label: "clade.server")
    ) async throws {
        let reconciled = try await reconcile(engine: engine, logger: logger)
        logger.notice("reconciled the store", metadata: [
            "running": "\(reconciled.running)", "dead": "\(reconciled.dead)", "adopted": "\(reconciled.adopted)",
            "rolled_back": "\(reconciled.rolledBack)", "interrupted_jobs": "\(reconciled.interruptedJobs)",
        ])
        let metrics = ServerMetrics.bootstrap()
        let api = CladeAPI(engine: engine, limits: configuration.limits, metrics: metrics, logger: logger)
        try engine.home.prepare()
        let router = try api.router(
            token: configuration.token, audit: engine.home.state.appendingPathComponent("audit.log"), proxyDomain: configuration.proxyDomain)
        var services: [any Service] = []
        if let listen = configuration.listen {
            let (host, port) = try parse(listen)
            services.append(Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "clade"), logger: logger))
        }
        if let path = configuration.unixSocket {
            try? FileSystem.remove(URL(fileURLWithPath: path))
            services.append(Application(
                router: router, configuration: .init(address: .unixDomainSocket(path: path), serverName: "clade"),
                onServerRunning: { _ in chmod(path, 0o600) }, logger: logger))
        }
        // `--listen none --e2b-listen ...` serves only E2B's API: a daemon needs one API, any of them.
        guard !services.isEmpty || e2b != nil else {
            throw APIError(.badRequest, "nothing to serve: give --listen HOST:PORT, --unix PATH or --e2b-listen HOST:PORT (any of them, or several)")
        }
        if let proxyListen = configuration.proxyListen {
            guard let domain = configuration.proxyDomain else { throw APIError(.badRequest, "--proxy-listen needs --proxy-domain (the domain whose <port>-<id> hosts it serves)") }
            let (host, port) = try parse(proxyListen)
            services.append(GuestPortTunnel(host: host, port: port, domain: domain, engine: engine, logger: logger))
        }
        if let e2b {
            let service = E2BService(engine: engine, configuration: e2b, logger: logger)
            services.append(try service.application())
            services.append(E2BMetricsSampler(service: service))
            logger.notice("serving E2B's API", metadata: ["listen": "\(e2b.tls == nil ? "http" : "https")://\(e2b.listen)", "domain": "\(e2b.domain)", "keys": "\(e2b.apiKeys.count)"])
        }
        if let port = configuration.egressProxyPort {
            guard engine.egressProxyPort == port else {
                throw APIError(.badRequest, "the engine's egress proxy port (\(engine.egressProxyPort.map(String.init) ?? "none")) is not the daemon's (\(port))")
            }
            let edge = try e2b.map { try EgressLocalEdge(domain: $0.domain, listen: $0.listen, tls: $0.tls != nil) }
            services.append(EgressProxy(port: port, engine: engine, pinned: configuration.egressPinnedNames, edge: edge, logger: logger))
            try engine.registerEgressProxy(port: port)
        }
        defer { if configuration.egressProxyPort != nil { engine.unregisterEgressProxy() } }
        services.append(LifetimeReaper(engine: engine))
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    /// Finished jobs are kept this long (7 days), then dropped when a daemon starts.
    public static let jobRetention: TimeInterval = 7 * 86_400

    /// What the daemon found on start.
    public struct Reconciliation: Sendable {
        public var running = 0
        public var dead = 0
        /// Running sandboxes whose VM answered through the backend.
        public var adopted = 0
        /// Journal entries of operations a dead clade process left half-done, rolled back.
        public var rolledBack: [String] = []
        /// Jobs that were running when the previous daemon stopped.
        public var interruptedJobs: [String] = []
    }

    /// Rolls back operations a dead clade left half-done (from the catalog's journal) and
    /// reconciles the catalog with the directories; marks jobs of a dead daemon interrupted;
    /// keeps sandboxes whose VM still runs, re-adopting each through the backend (one left paused by a
    /// dead operation is continued); reports dead ones and cleans their files.
    public static func reconcile(engine: Engine, logger: Logger) async throws -> Reconciliation {
        var result = Reconciliation()
        result.rolledBack = try await engine.recovery.recoverInterruptedOperations(reconcile: true).rolledBack
        let jobs = JobCatalog(home: engine.home)
        result.interruptedJobs = try jobs.interruptAbandoned()
        try jobs.prune(olderThan: Self.jobRetention)
        _ = try await engine.snapshots.list()
        let sandboxes = try await engine.sandboxes.list()
        result.dead = sandboxes.filter { $0.state == .dead }.count
        result.running = sandboxes.count - result.dead
        for sandbox in sandboxes where sandbox.state == .running {
            if await engine.recovery.adopt(id: sandbox.id) { result.adopted += 1 }
        }
        return result
    }

    static func parse(_ listen: String) throws -> (String, Int) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (1...65535).contains(port) else {
            throw APIError(.badRequest, "--listen takes HOST:PORT, e.g. 127.0.0.1:8889, not '\(listen)'")
        }
        return (String(listen[..<colon]), port)
    }
}

/// Ends sandboxes whose end time has passed, once a second, for as long as the daemon runs.
struct LifetimeReaper: Service {
    let engine: Engine
    static let interval: Duration = .seconds(1)

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                await engine.lifetimes.reapExpired()
                try? await Task.sleep(for: Self.interval)
            }
        }
    }
}
