import CladeEngine
import CladeGuestProtocol
import CladeModel
import CladePack
import CladeStore
import Foundation
import Hummingbird
import Logging
import Metrics

/// Limits the API enforces; see the README's daemon section.
public struct APILimits: Sendable {
    /// Most children one `POST /v1/sandboxes` may start (the engine's own maximum).
    public var maxChildrenPerRequest = Engine.maxForkCount
    /// Forks and branches running at once; more get 503 with `Retry-After`.
    public var concurrentForks = 4
    /// Largest request body, bytes (file writes carry base64 content).
    public var maxBodyBytes = 16 << 20

    public init(concurrentForks: Int = 4, maxBodyBytes: Int = 16 << 20) {
        self.concurrentForks = concurrentForks
        self.maxBodyBytes = maxBodyBytes
    }
}

/// The HTTP API over an engine: forkd's v1 routes plus clade's own.
public struct CladeAPI: Sendable {
    public typealias Context = BasicRequestContext
    let engine: Engine
    let limits: APILimits
    let slots: OperationSlots
    let jobs: JobRegistry
    let metrics: ServerMetrics
    let logger: Logger

    public init(engine: Engine, limits: APILimits = APILimits(), metrics: ServerMetrics, logger: Logger = Logger(label: "clade.server")) {
        self.engine = engine
        self.limits = limits
        self.slots = OperationSlots(capacity: limits.concurrentForks)
        self.jobs = JobRegistry(catalog: JobCatalog(home: engine.home))
        self.metrics = metrics
        self.logger = logger
    }

    /// Every route as (method, path in OpenAPI form); the OpenAPI test checks each is documented.
    public static let routes: [(method: String, path: String)] = [
        ("GET", "/healthz"), ("GET", "/version"), ("GET", "/metrics"), ("GET", "/openapi.json"),
        ("GET", "/v1/snapshots"), ("POST", "/v1/snapshots"), ("GET", "/v1/snapshots/{tag}"), ("GET", "/v1/snapshots/{tag}/info"),
        ("DELETE", "/v1/snapshots/{tag}"),
        ("POST", "/v1/sandboxes"), ("GET", "/v1/sandboxes"), ("GET", "/v1/sandboxes/{id}"), ("DELETE", "/v1/sandboxes/{id}"),
        ("POST", "/v1/sandboxes/{id}/exec"), ("POST", "/v1/sandboxes/{id}/ping"), ("POST", "/v1/sandboxes/{id}/branch"),
        ("POST", "/v1/sandboxes/{id}/standby"), ("POST", "/v1/sandboxes/{id}/resume"), ("POST", "/v1/sandboxes/{id}/timeout"),
        ("POST", "/v1/sandboxes/{id}/ports"),
        ("GET", "/v1/sandboxes/{id}/files"), ("PUT", "/v1/sandboxes/{id}/files"),
        ("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/{id}"),
    ] + processRoutes

    /// The router with every route and the middleware (errors, audit, auth).
    public func router(token: String?, audit: URL, proxyDomain: String? = nil) throws -> Router<Context> {
        let router = Router(context: Context.self)
        router.add(middleware: ErrorAndAuditMiddleware(audit: try AuditLog(url: audit), logger: logger))
        if let proxyDomain { router.add(middleware: GuestPortProxyMiddleware(domain: proxyDomain, engine: engine)) }
        router.add(middleware: BearerTokenMiddleware(token: token.map { Array($0.utf8) }))
        let api = self
        router.get("/healthz") { _, _ in try JSONIO.response(["ok": true]) }
        router.get("/version") { _, _ in try JSONIO.response(["version": cladeVersion, "api": "v1"]) }
        router.get("/metrics") { _, _ in await api.metricsText() }
        router.get("/openapi.json") { _, _ in
            Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: OpenAPIDocument.data)))
        }
        router.get("/v1/snapshots") { _, _ in try await api.listSnapshots() }
        router.post("/v1/snapshots") { request, _ in try await api.bake(request) }
        router.get("/v1/snapshots/:tag") { _, context in try api.snapshot(try context.parameters.require("tag")) }
        router.get("/v1/snapshots/:tag/info") { _, context in try await api.snapshotInfo(try context.parameters.require("tag")) }
        router.delete("/v1/snapshots/:tag") { request, context in try await api.deleteSnapshot(try context.parameters.require("tag"), request) }
        router.post("/v1/sandboxes") { request, _ in try await api.spawn(request) }
        router.get("/v1/sandboxes") { _, _ in try await api.listSandboxes() }
        router.get("/v1/sandboxes/:id") { _, context in try await api.sandbox(try api.sandboxID(context)) }
        router.delete("/v1/sandboxes/:id") { _, context in try await api.kill(try api.sandboxID(context)) }
        router.post("/v1/sandboxes/:id/exec") { request, context in try await api.exec(try api.sandboxID(context), request) }
        router.post("/v1/sandboxes/:id/ping") { _, context in try await api.ping(try api.sandboxID(context)) }
        router.post("/v1/sandboxes/:id/branch") { request, context in try await api.branch(try api.sandboxID(context), request) }
        router.post("/v1/sandboxes/:id/standby") { _, context in try await api.standby(try api.sandboxID(context)) }
        router.post("/v1/sandboxes/:id/timeout") { request, context in try await api.setTimeout(try api.sandboxID(context), request) }
        router.post("/v1/sandboxes/:id/ports") { request, context in try await api.publishPort(try api.sandboxID(context), request) }
        router.post("/v1/sandboxes/:id/resume") { _, context in try await api.resume(try api.sandboxID(context)) }
        router.get("/v1/sandboxes/:id/files") { request, context in try await api.readFile(try api.sandboxID(context), request) }
        router.put("/v1/sandboxes/:id/files") { request, context in try await api.writeFile(try api.sandboxID(context), request) }
        addProcessRoutes(to: router)
        router.post("/v1/jobs") { request, _ in try await api.startJob(request) }
        router.get("/v1/jobs") { _, _ in try JSONIO.response(try await api.jobs.list()) }
        router.get("/v1/jobs/:id") { _, context in
            let id = try context.parameters.require("id")
            guard let job = try await api.jobs.get(id) else { throw APIError(.notFound, "no job '\(id)'; list jobs with GET /v1/jobs") }
            return try JSONIO.response(job)
        }
        return router
    }

    func sandboxID(_ context: Context) throws -> String {
        let id = try context.parameters.require("id")
        do { try Names.validateSandboxID(id) } catch { throw APIError(.badRequest, "\(error)") }
        return id
    }

    // MARK: - Snapshots

    func listSnapshots() async throws -> Response {
        let catalog = SnapshotCatalog(home: engine.home)
        return try JSONIO.response(try await engine.snapshots.list().map { SnapshotSummary($0, directory: catalog.directory($0.tag)) })
    }

    func snapshot(_ tag: String) throws -> Response {
        let catalog = SnapshotCatalog(home: engine.home)
        let metadata = try catalog.require(tag)
        return try JSONIO.response(SnapshotSummary(metadata, directory: catalog.directory(tag)))
    }

    func snapshotInfo(_ tag: String) async throws -> Response {
        try JSONIO.response(try await engine.snapshots.info(tag))
    }

    func deleteSnapshot(_ tag: String, _ request: Request) async throws -> Response {
        let query = request.uri.queryParameters
        let cascade = query.get("cascade") == "true"
        let force = query.get("force") == "true"
        _ = try await engine.snapshots.remove(tag, force: force, cascade: cascade)
        return JSONIO.noContent()
    }

    func bake(_ request: Request) async throws -> Response {
        let body = try await JSONIO.decode(BakeRequest.self, from: request, limit: limits.maxBodyBytes)
        var boot = BootOptions()
        if let image = body.image { boot.image = image }
        if let memory = body.memoryMiB { boot.memoryMiB = memory }
        if let vcpus = body.vcpus { boot.cpus = vcpus }
        boot.network = try networkPolicy(body.network)
        let metadata = try await withSlot { try await engine.snapshots.bake(BakeOptions(boot: boot, tag: body.tag, warm: body.warm)) }
        return try JSONIO.response(SnapshotSummary(metadata, directory: SnapshotCatalog(home: engine.home).directory(metadata.tag)), status: .created)
    }

    // MARK: - Sandboxes

    func spawn(_ request: Request) async throws -> Response {
        let body = try await JSONIO.decode(SpawnRequest.self, from: request, limit: limits.maxBodyBytes)
        let count = body.n ?? 1
        guard (1...limits.maxChildrenPerRequest).contains(count) else {
            throw APIError(.badRequest, "n must be between 1 and \(limits.maxChildrenPerRequest), not \(count)")
        }
        var tag = body.snapshotTag
        let start = Date()
        if RegistryReference.namesRegistry(tag) {
            // A registry reference: pulled once (lazily where this host can serve memory over
            // FUSE) under a tag derived from it, so the children start before the memory arrives.
            let reference: RegistryReference
            do { reference = try RegistryReference(parsing: tag) } catch { throw APIError(.badRequest, "snapshot_tag '\(tag)': \(error)") }
            tag = try await withSlot { try await engine.packs.snapshotForFork(reference, access: .fromEnvironment(for: reference)) }
        } else {
            do { try Names.validate(tag, kind: "tag") } catch { throw APIError(.badRequest, "\(error)") }
        }
        _ = try SnapshotCatalog(home: engine.home).require(tag)
        let lifetime = body.timeoutSecs.map { Lifetime(seconds: $0, action: body.onTimeout ?? .kill) }
        let network = try networkPolicy(body.network)
        let outcomes = try await withSlot { try await engine.forks.fork(tag: tag, count: count, memoryOrder: engine.forks.serviceMemoryOrder, lifetime: lifetime, network: network, limits: body.limits) }
        Timer(label: "clade_fork_duration_seconds").recordSeconds(Date().timeIntervalSince(start))
        let started = outcomes.compactMap(\.record)
        guard !started.isEmpty else {
            let reasons = Set(outcomes.compactMap(\.error)).joined(separator: "; ")
            throw APIError(.internalServerError, "no child started: \(reasons)")
        }
        return try JSONIO.response(started.map(SandboxInfo.init), status: .created)
    }

    func listSandboxes() async throws -> Response {
        try JSONIO.response(try await engine.sandboxes.list().filter { $0.state != .dead }.map(SandboxInfo.init))
    }

    func sandbox(_ id: String) async throws -> Response {
        let record: SandboxRecord
        do {
            record = try await engine.sandboxes.get(id: id)
        } catch ModelError.notFound {
            throw APIError(.notFound, "no sandbox '\(id)'; list them with GET /v1/sandboxes")
        }
        guard record.state != .dead else {
            throw APIError(.notFound, "sandbox '\(id)' is gone: its VM exited and its files were removed")
        }
        return try JSONIO.response(SandboxInfo(record))
    }

    func kill(_ id: String) async throws -> Response {
        try await engine.sandboxes.kill(id: id)
        return JSONIO.noContent()
    }

    func exec(_ id: String, _ request: Request) async throws -> Response {
        let body = try await JSONIO.decode(ExecRequest.self, from: request, limit: limits.maxBodyBytes)
        guard !body.args.isEmpty else { throw APIError(.badRequest, "field 'args' must name a command") }
        if let timeout = body.timeoutSecs, !(timeout > 0 && timeout <= 86_400) {
            throw APIError(.badRequest, "field 'timeout_secs' must be between 0 and 86400")
        }
        let reply = try await engine.sandboxes.exec(id: id, argv: body.args, env: body.env, cwd: body.cwd, user: body.user, stdin: body.stdin, timeout: body.timeoutSecs ?? 60)
        if let error = reply.error, reply.exitCode == nil { throw APIError(.badGateway, "the guest agent failed: \(error)") }
        return try JSONIO.response(ExecResult(stdout: reply.stdout ?? "", stderr: reply.stderr ?? "", exitCode: reply.exitCode ?? -1, timedOut: reply.timedOut ?? false))
    }

    func ping(_ id: String) async throws -> Response {
        let reply = try await engine.processes.agent(for: id).send(AgentRequest(action: .ping), timeout: 10)
        if let error = reply.error { throw APIError(.badGateway, "the guest agent failed: \(error)") }
        return try JSONIO.response(reply)
    }

    func branch(_ id: String, _ request: Request) async throws -> Response {
        var body = BranchRequest(tag: nil, mode: nil)
        if request.headers[.contentLength].map({ $0 != "0" }) ?? true {
            body = (try? await JSONIO.decode(BranchRequest.self, from: request, limit: limits.maxBodyBytes)) ?? body
        }
        let tag = body.tag ?? "branch-\(id)-\(Int(Date().timeIntervalSince1970))"
        // Live wherever the backend can: the guest pauses for milliseconds, whatever it has written.
        guard let mode = BranchMode(rawValue: body.mode ?? "auto") else {
            throw APIError(.badRequest, "field 'mode' must be one of \(BranchMode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        do { try Names.validate(tag, kind: "tag") } catch { throw APIError(.badRequest, "\(error)") }
        let start = Date()
        let (metadata, report) = try await withSlot { try await engine.branches.branch(id: id, tag: tag, mode: mode) }
        Timer(label: "clade_branch_duration_seconds").recordSeconds(Date().timeIntervalSince(start))
        return try JSONIO.response(SnapshotSummary(metadata, directory: SnapshotCatalog(home: engine.home).directory(tag), branch: report), status: .created)
    }

    func setTimeout(_ id: String, _ request: Request) async throws -> Response {
        let body = try await JSONIO.decode(TimeoutRequest.self, from: request, limit: limits.maxBodyBytes)
        let lifetime = body.timeoutSecs.map { Lifetime(seconds: $0, action: body.onTimeout ?? .kill) }
        return try JSONIO.response(SandboxInfo(try await engine.lifetimes.set(id: id, lifetime: lifetime)))
    }

    func publishPort(_ id: String, _ request: Request) async throws -> Response {
        let body = try await JSONIO.decode(PortRequest.self, from: request, limit: limits.maxBodyBytes)
        return try JSONIO.response(try await engine.sandboxes.publishPort(id: id, guestPort: body.guestPort))
    }

    func standby(_ id: String) async throws -> Response {
        try JSONIO.response(try await engine.standby.enter(id: id))
    }

    func resume(_ id: String) async throws -> Response {
        try JSONIO.response(SandboxInfo(try await engine.standby.resume(id: id)))
    }

    func readFile(_ id: String, _ request: Request) async throws -> Response {
        guard let path = request.uri.queryParameters.get("path"), path.hasPrefix("/") else {
            throw APIError(.badRequest, "give the file as ?path=/absolute/path/in/the/guest")
        }
        let data = try await engine.processes.agent(for: id).readFile(path)
        return try JSONIO.response(["path": path, "content": data.base64EncodedString(), "size": "\(data.count)"])
    }

    func writeFile(_ id: String, _ request: Request) async throws -> Response {
        let body = try await JSONIO.decode(FileWriteRequest.self, from: request, limit: limits.maxBodyBytes)
        guard body.path.hasPrefix("/") else { throw APIError(.badRequest, "field 'path' must be an absolute path in the guest") }
        guard let data = Data(base64Encoded: body.content) else { throw APIError(.badRequest, "field 'content' must be base64") }
        try await engine.processes.agent(for: id).writeFile(body.path, data: data, mode: body.mode ?? 0o644)
        return try JSONIO.response(["path": body.path, "size": "\(data.count)"])
    }

    // MARK: - Jobs

    func startJob(_ request: Request) async throws -> Response {
        let body = try await JSONIO.decode(JobRequest.self, from: request, limit: limits.maxBodyBytes)
        let engine = self.engine
        let credentials = body.username.map { RegistryCredentials(username: $0, password: body.password ?? "") }
        let work: @Sendable (@escaping PackProgress) async throws -> String
        guard let kind = JobKind(rawValue: body.kind) else {
            throw APIError(.badRequest, "field 'kind' must be \(JobKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        switch kind {
        case .pack:
            guard let tag = body.tag, let output = body.output, output.hasPrefix("/") else {
                throw APIError(.badRequest, "a pack job needs 'tag' and an absolute 'output' path")
            }
            work = { progress in
                let report = try engine.packs.pack(tag: tag, ancestors: body.ancestors ?? true, to: URL(fileURLWithPath: output), progress: progress)
                return String(decoding: try JSONIO.encoder().encode(report), as: UTF8.self)
            }
        case .push:
            guard let tag = body.tag, let text = body.reference else { throw APIError(.badRequest, "a push job needs 'tag' and 'reference'") }
            let reference = try RegistryReference(parsing: text)
            work = { progress in
                let report = try await engine.packs.push(
                    tag: tag, ancestors: body.ancestors ?? true, to: reference,
                    access: RegistryAccess(insecure: body.insecure ?? false, credentials: credentials), progress: progress)
                return String(decoding: try JSONIO.encoder().encode(report), as: UTF8.self)
            }
        case .pull:
            guard let text = body.reference else { throw APIError(.badRequest, "a pull job needs 'reference'") }
            let reference = try RegistryReference(parsing: text)
            work = { progress in
                let report = try await engine.packs.pull(
                    reference, options: UnpackOptions(tag: body.tag, force: body.force ?? false),
                    access: RegistryAccess(insecure: body.insecure ?? false, credentials: credentials), progress: progress)
                return String(decoding: try JSONIO.encoder().encode(report), as: UTF8.self)
            }
        }
        let job = try await jobs.start(kind: kind)
        let registry = jobs
        Task.detached {
            do {
                let result = try await work { step, done, total in
                    Task { await registry.progress(job.id, step: step, done: done, total: total) }
                }
                await registry.finish(job.id, result: result, error: nil)
            } catch {
                await registry.finish(job.id, result: nil, error: "\(error)")
            }
        }
        return try JSONIO.response(job, status: .accepted)
    }

    // MARK: - Helpers

    /// Runs a fork-like operation within the concurrency cap, or answers 503.
    func withSlot<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        guard await slots.acquire() else {
            throw APIError(.serviceUnavailable, "\(limits.concurrentForks) forks or branches are already running; retry shortly", retryAfter: 1)
        }
        do {
            let value = try await body()
            await slots.release()
            return value
        } catch {
            await slots.release()
            throw error
        }
    }

    /// Gauges come from the catalog (one query each), not from scanning the store, so a scrape
    /// costs the same with ten sandboxes or a thousand.
    func metricsText() async -> Response {
        do {
            let database = try CatalogDatabase.shared(engine.home)
            let (counts, snapshots, snapshotBytes) = try database.read { db in
                (try CatalogRows.sandboxCounts(in: db), try CatalogRows.snapshots(in: db).count, try CatalogRows.storedSnapshotBytes(in: db))
            }
            metrics.update(sandboxCounts: counts, snapshotCount: snapshots, storedBytes: snapshotBytes + Self.blobBytes(engine.home))
        } catch {
            logger.error("cannot read the catalog for metrics", metadata: ["error": "\(error)"])
        }
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(string: metrics.render())))
    }

    /// Bytes the blob store occupies (one flat directory of kernels, initrds and root filesystems).
    static func blobBytes(_ home: CladeHome) -> Int64 {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: home.blobs.path) else { return 0 }
        return names.reduce(0) { total, name in
            total + ((try? FileSystem.status(of: home.blobs.appendingPathComponent(name)))?.allocatedBytes ?? 0)
        }
    }
}

/// The version `GET /version` reports.
public let cladeVersion = CladeVersion.current
