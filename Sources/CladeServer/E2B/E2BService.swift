import CladeEngine
import CladeGuest
import CladeModel
import CladeStore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

public typealias E2BContext = BasicRequestContext

/// How `clade serve --e2b-listen` serves E2B's API.
public struct E2BConfiguration: Sendable {
    /// `host:port` of the E2B listener (control plane and envd on one port).
    public var listen: String
    /// The API keys clients send as `X-API-Key`.
    public var apiKeys: Set<String>
    /// The domain in sandbox hosts (`<port>-<sandboxID>.<domain>`), returned to the SDK as each
    /// sandbox's `domain` so `get_host` names hosts this listener answers.
    public var domain: String
    /// HTTPS for the listener; nil serves plain HTTP (clients then need `E2B_API_URL` and
    /// `E2B_SANDBOX_URL`, or a TLS proxy in front).
    public var tls: E2BEdgeTLS?

    public init(listen: String, apiKeys: Set<String>, domain: String, tls: E2BEdgeTLS? = nil) {
        self.listen = listen
        self.apiKeys = apiKeys
        self.domain = domain
        self.tls = tls
    }

    /// Reads API keys, one a line (blank lines and `#` comments skipped).
    public static func apiKeys(from file: URL) throws -> Set<String> {
        let text: String
        do {
            text = try String(contentsOf: file, encoding: .utf8)
        } catch {
            throw APIError(.badRequest, "cannot read the E2B API key file \(file.path): \(error.localizedDescription)")
        }
        let keys = Set(text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") })
        guard !keys.isEmpty else { throw APIError(.badRequest, "the E2B API key file \(file.path) has no keys; put one key a line") }
        return keys
    }

    /// The key file clade uses when none is given: `<home>/state/e2b/api-keys`, created with one
    /// random key (mode 0600) the first time.
    public static func defaultKeyFile(home: CladeHome) throws -> URL {
        let file = home.state.appendingPathComponent("e2b/api-keys")
        if !FileManager.default.fileExists(atPath: file.path) {
            try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
            let key = "e2b_" + (0..<40).map { _ in String(UInt8.random(in: 0..<16), radix: 16) }.joined()
            try FileSystem.writeAtomically(Data((key + "\n").utf8), to: file)
            chmod(file.path, 0o600)
        }
        return file
    }
}

/// E2B's API on clade: the REST control plane and envd's Connect services and `/files`, all on
/// one listener. Envd requests name their sandbox with `E2b-Sandbox-Id` (what the SDK sends when
/// `E2B_SANDBOX_URL` points here) or with a `49983-<id>.<domain>` host; other `<port>-<id>`
/// hosts are proxied to that guest port.
public struct E2BService: Sendable {
    /// The envd version clade claims: every feature the SDK gates on a version up to this one is
    /// served (0.6.2 file metadata, 0.6.3 entries in watch events, 0.6.4 watches allowed on
    /// network mounts, which clade never refused).
    public static let envdVersion = "0.6.4"
    /// envd's port in a sandbox (the SDK's `ConnectionConfig.envd_port`).
    static let envdPort = 49983

    let engine: Engine
    let configuration: E2BConfiguration
    let states: E2BStateStore
    let templates: E2BTemplates
    let watchers: E2BWatchers
    let users: E2BUserNames
    let metricsHistory: E2BMetricsHistory
    let wakes: E2BWakeGate
    let logger: Logger

    public init(engine: Engine, configuration: E2BConfiguration, logger: Logger) {
        self.engine = engine
        self.configuration = configuration
        self.states = E2BStateStore(home: engine.home)
        self.templates = E2BTemplates(engine: engine, logger: logger)
        self.watchers = E2BWatchers()
        self.users = E2BUserNames()
        self.metricsHistory = E2BMetricsHistory()
        self.wakes = E2BWakeGate()
        self.logger = logger
    }

    public func router() -> Router<E2BContext> {
        let router = Router(context: E2BContext.self)
        router.add(middleware: E2BGatewayMiddleware(service: self))
        addControlRoutes(to: router)
        addEnvdRoutes(to: router)
        return router
    }

    /// The listener as a service for the daemon's service group.
    public func application() throws -> some ApplicationProtocol {
        let (host, port) = try Daemon.parse(configuration.listen)
        return Application(router: router(), server: try configuration.tls?.serverBuilder() ?? .http1(), configuration: .init(address: .hostname(host, port: port), serverName: "clade-e2b"), logger: logger)
    }

    /// The sandbox an envd request is for: its `E2b-Sandbox-Id` header or its `49983-<id>` host.
    func envdSandbox(of request: Request) -> String? {
        if let id = request.headers[HTTPField.Name("E2b-Sandbox-Id")!], !id.isEmpty { return id }
        if let authority = request.head.authority, let target = GuestPortProxyMiddleware<E2BContext>.target(of: authority, domain: configuration.domain),
            target.port == Self.envdPort {
            return target.sandbox
        }
        return nil
    }

    /// The secure sandbox whose access token signed `request` (a signed `/files` URL), if any.
    func signedSandbox(_ request: Request) -> String? {
        guard request.uri.queryParameters.get("signature") != nil else { return nil }
        return states.all().first { state in
            guard let token = state.accessToken, let verdict = E2BSignedURL.check(request, token: token) else { return false }
            return verdict != .invalid
        }?.sandboxID
    }

    static func isEnvdPath(_ path: String) -> Bool {
        path.hasPrefix("/process.Process/") || path.hasPrefix("/filesystem.Filesystem/") || path == "/files" || path == "/envs"
    }
}

/// Authentication and routing in front of every E2B route: guest-port hosts are proxied (with the
/// sandbox's traffic access token, when it has one; a paused sandbox with `autoResume` is resumed
/// first, as for envd requests); envd
/// requests need a live E2B sandbox (502 "was not found" otherwise, the SDK's cue that it is
/// gone) and, for secure sandboxes, its access token; control-plane requests need an API key.
struct E2BGatewayMiddleware: RouterMiddleware {
    typealias Context = E2BContext
    let service: E2BService

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let authority = request.head.authority,
            let target = GuestPortProxyMiddleware<Context>.target(of: authority, domain: service.configuration.domain),
            target.port != E2BService.envdPort {
            // `allowPublicTraffic: false`: a sandbox's ports answer only requests with its token.
            if let token = service.states.get(target.sandbox)?.trafficAccessToken,
                request.headers[HTTPField.Name("e2b-traffic-access-token")!] != token {
                return E2BError(403, "sandbox \(target.sandbox) takes requests to its ports only with its traffic access token, as the e2b-traffic-access-token header").response
            }
            if case .failed(let reason) = await service.wakeForTraffic(target.sandbox) {
                return E2BService.wakeFailure(target.sandbox, reason).response
            }
            return try await GuestPortProxyMiddleware<Context>(
                domain: service.configuration.domain, engine: service.engine, hostMask: service.states.get(target.sandbox)?.maskRequestHost
            )
            .handle(request, context: context, next: next)
        }
        let path = request.uri.path
        var request = request
        var sandbox = service.envdSandbox(of: request)
        if sandbox == nil, path == "/files", let signed = service.signedSandbox(request) {
            // A signed URL names no sandbox (through E2B_SANDBOX_URL it has no host of its own);
            // its signature does. Later stages find it in the header, as for any envd request.
            var head = request.head
            head.headerFields[HTTPField.Name("E2b-Sandbox-Id")!] = signed
            request = Request(head: head, body: request.body)
            sandbox = signed
        }
        if E2BService.isEnvdPath(path) || (path == "/health" && sandbox != nil) {
            guard let sandbox else {
                return E2BError(400, "name the sandbox with the E2b-Sandbox-Id header or a \(E2BService.envdPort)-<sandboxID>.\(service.configuration.domain) host").response
            }
            guard let state = service.states.get(sandbox), let record = try? await service.engine.sandboxes.get(id: sandbox), record.state != .dead else {
                return E2BError(502, "The sandbox \(sandbox) was not found").response
            }
            // envd answers /health without a token, as the SDK's probe expects.
            if path != "/health", let token = state.accessToken, request.headers[HTTPField.Name("X-Access-Token")!] != token {
                switch path == "/files" ? E2BSignedURL.check(request, token: token) : nil {
                case .valid: break
                case .expired: return E2BError(401, "signature is already expired").response
                case .invalid: return E2BError(401, "invalid signature").response
                case nil:
                    if path.hasPrefix("/process.") || path.hasPrefix("/filesystem.") {
                        return ConnectRPC.unaryError(ConnectError(.unauthenticated, "this sandbox is secure: send its envdAccessToken as X-Access-Token"))
                    }
                    return E2BError(401, "this sandbox is secure: send its envdAccessToken as X-Access-Token").response
                }
            }
            if record.state == .standby {
                switch await service.wakeForTraffic(sandbox) {
                case .running: break
                case .staysPaused: return E2BError(502, "The sandbox \(sandbox) is paused; connect to it first (it was not found running)").response
                case .failed(let reason): return E2BService.wakeFailure(sandbox, reason).response
                }
            }
            return try await next(request, context)
        }
        if path == "/health" { return try await next(request, context) }
        guard let key = request.headers[HTTPField.Name("X-API-Key")!], service.configuration.apiKeys.contains(key) else {
            return E2BError(401, "Invalid API key: send one of the keys in the daemon's E2B key file as X-API-Key (E2B_API_KEY)").response
        }
        return try await next(request, context)
    }
}
