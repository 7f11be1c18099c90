#if canImport(Glibc)
import Glibc
#endif
import CladeEngine
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

    public init(listen: String?, unixSocket: String?, token: String?, limits: APILimits = APILimits()) {
        self.listen = listen
        self.unixSocket = unixSocket
        self.token = token
        self.limits = limits
    }
}

/// `clade serve`: reconciles the store with the processes that still run, then serves the API.
public enum Daemon {
    public static func run(engine: Engine, configuration: DaemonConfiguration, logger: Logger = Logger(label: "clade.server")) async throws {
        let reconciled = try await reconcile(engine: engine, logger: logger)
        logger.notice("reconciled the store", metadata: ["running": "\(reconciled.running)", "dead": "\(reconciled.dead)"])
        let metrics = ServerMetrics.bootstrap()
        let api = CladeAPI(engine: engine, limits: configuration.limits, metrics: metrics, logger: logger)
        try engine.home.prepare()
        let router = try api.router(token: configuration.token, audit: engine.home.state.appendingPathComponent("audit.log"))
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
        guard !services.isEmpty else { throw APIError(.badRequest, "give --listen HOST:PORT, --unix PATH, or both") }
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    /// Sandboxes whose QEMU still runs are kept (their agents and QMP sockets are where they
    /// were); ones whose QEMU died are reported dead and cleaned; interrupted snapshot work is
    /// swept and sandboxes left paused by a dead operation are continued.
    public static func reconcile(engine: Engine, logger: Logger) async throws -> (running: Int, dead: Int) {
        _ = try engine.listSnapshots()
        let sandboxes = try await engine.listSandboxes()
        let dead = sandboxes.filter { $0.state == .dead }.count
        return (sandboxes.count - dead, dead)
    }

    static func parse(_ listen: String) throws -> (String, Int) {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (1...65535).contains(port) else {
            throw APIError(.badRequest, "--listen takes HOST:PORT, e.g. 127.0.0.1:8889, not '\(listen)'")
        }
        return (String(listen[..<colon]), port)
    }
}
