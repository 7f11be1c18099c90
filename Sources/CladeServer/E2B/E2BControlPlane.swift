import CladeEngine
import CladeModel
import CladeStore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// E2B's control plane over clade's engine: create (a fork of the template's snapshot), list,
/// get, kill, timeouts, pause (standby) and resume, fork, snapshots, metrics and logs.
extension E2BService {
    static let controlRoutes: [(method: String, path: String)] = [
        ("GET", "/health"),
        ("POST", "/sandboxes"), ("POST", "/v2/sandboxes"), ("GET", "/sandboxes"), ("GET", "/v2/sandboxes"),
        ("GET", "/sandboxes/{sandboxID}"), ("DELETE", "/sandboxes/{sandboxID}"),
        ("POST", "/sandboxes/{sandboxID}/timeout"), ("POST", "/sandboxes/{sandboxID}/refreshes"),
        ("POST", "/sandboxes/{sandboxID}/pause"), ("POST", "/sandboxes/{sandboxID}/resume"),
        ("POST", "/sandboxes/{sandboxID}/connect"), ("POST", "/v2/sandboxes/{sandboxID}/connect"),
        ("POST", "/sandboxes/{sandboxID}/fork"), ("POST", "/sandboxes/{sandboxID}/snapshots"), ("GET", "/snapshots"),
        ("GET", "/sandboxes/{sandboxID}/metrics"), ("GET", "/sandboxes/{sandboxID}/logs"), ("GET", "/v2/sandboxes/{sandboxID}/logs"),
        ("DELETE", "/templates/{templateID}"), ("PUT", "/sandboxes/{sandboxID}/network"),
    ]

    func addControlRoutes(to router: Router<E2BContext>) {
        let service = self
        func handle(_ body: @escaping @Sendable (Request, E2BContext) async throws -> Response) -> @Sendable (Request, E2BContext) async throws -> Response {
            { request, context in
                do { return try await body(request, context) } catch { return E2BError.from(error).response }
            }
        }
        let id = Self.sandboxParameter
        router.post("/sandboxes", use: handle { request, _ in try await service.create(request) })
        router.post("/v2/sandboxes", use: handle { request, _ in try await service.create(request) })
        router.get("/sandboxes", use: handle { request, _ in try await service.list(request, version: 1) })
        router.get("/v2/sandboxes", use: handle { request, _ in try await service.list(request, version: 2) })
        router.get("/sandboxes/:sandboxID", use: handle { _, context in
            let (record, state) = try await service.require(try id(context))
            return Self.json(try await service.detail(record, state))
        })
        router.delete("/sandboxes/:sandboxID", use: handle { _, context in
            let sandbox = try id(context)
            _ = try await service.require(sandbox)
            try await service.engine.sandboxes.kill(id: sandbox)
            service.states.remove(sandbox)
            await service.collectForkSnapshots()
            return Response(status: .noContent)
        })
        router.post("/sandboxes/:sandboxID/timeout", use: handle { request, context in
            let body = try await Self.body(request)
            guard let seconds = body.int("timeout"), seconds >= 0 else { throw E2BError(400, "field 'timeout' (seconds, an integer) is required") }
            try await service.setTimeout(try id(context), seconds: seconds)
            return Response(status: .noContent)
        })
        router.post("/sandboxes/:sandboxID/refreshes", use: handle { request, context in
            let body = try await Self.body(request, optional: true)
            try await service.setTimeout(try id(context), seconds: body.int("duration") ?? 60)
            return Response(status: .noContent)
        })
        router.post("/sandboxes/:sandboxID/pause", use: handle { request, context in
            let (record, _) = try await service.require(try id(context))
            guard record.state == .running else { throw E2BError(409, "sandbox \(record.id) is already paused") }
            // `memory: false` keeps only the filesystem: resuming boots the sandbox from it.
            let body = try await Self.body(request, optional: true)
            try await service.engine.standby.enter(id: record.id, keepMemory: !body.has("memory") || body.bool("memory"))
            return Response(status: .noContent)
        })
        router.post("/sandboxes/:sandboxID/resume", use: handle { request, context in
            let (record, _) = try await service.require(try id(context))
            guard record.state == .standby else { throw E2BError(409, "sandbox \(record.id) is already running") }
            let body = try await Self.body(request, optional: true)
            return try await service.connect(record, timeout: body.int("timeout"))
        })
        router.post("/sandboxes/:sandboxID/connect", use: handle { request, context in
            let body = try await Self.body(request, optional: true)
            return try await service.connect(try await service.require(try id(context)).0, timeout: body.int("timeout"))
        })
        router.post("/v2/sandboxes/:sandboxID/connect", use: handle { request, context in
            let body = try await Self.body(request, optional: true)
            return try await service.connect(try await service.require(try id(context)).0, timeout: body.int("timeout"))
        })
        router.post("/sandboxes/:sandboxID/fork", use: handle { request, context in
            let body = try await Self.body(request, optional: true)
            return try await service.fork(try id(context), count: body.int("count") ?? 1, timeout: body.int("timeout"))
        })
        router.post("/sandboxes/:sandboxID/snapshots", use: handle { request, context in
            let body = try await Self.body(request, optional: true)
            return try await service.snapshot(try id(context), name: body.string("name"))
        })
        router.put("/sandboxes/:sandboxID/network", use: handle { request, context in
            let body = try await Self.body(request, optional: true)
            try await service.updateNetwork(try id(context), body)
            return Response(status: .noContent)
        })
        router.get("/snapshots", use: handle { request, _ in try await service.listSnapshots(request) })
        router.delete("/templates/:templateID", use: handle { _, context in
            try await service.deleteSnapshot(try context.parameters.require("templateID"))
        })
        router.get("/sandboxes/:sandboxID/metrics", use: handle { request, context in
            let (record, _) = try await service.require(try id(context))
            return Self.json(try await service.metrics(record, query: request.uri.queryParameters))
        })
        router.get("/sandboxes/:sandboxID/logs", use: handle { _, context in
            let (record, _) = try await service.require(try id(context))
            let lines = service.consoleLines(record)
            return Self.json(["logs": lines.map { ["timestamp": $0.timestamp, "line": $0.line] }, "logEntries": lines.map(Self.logEntry)])
        })
        router.get("/v2/sandboxes/:sandboxID/logs", use: handle { _, context in
            let (record, _) = try await service.require(try id(context))
            return Self.json(["logs": service.consoleLines(record).map(Self.logEntry)])
        })
    }

    @Sendable static func sandboxParameter(_ context: E2BContext) throws -> String {
        let id = try context.parameters.require("sandboxID")
        guard (try? Names.validateSandboxID(id)) != nil else { throw E2BError.sandboxNotFound(id) }
        return id
    }

    // MARK: create, connect, fork, snapshot

    func create(_ request: Request) async throws -> Response {
        let body = try await Self.body(request)
        guard let templateID = body.string("templateID"), !templateID.isEmpty else { throw E2BError(400, "field 'templateID' is required") }
        let timeout = body.int("timeout") ?? Self.defaultTimeout
        let diskOnly = body.has("autoPauseMemory") && !body.bool("autoPauseMemory")
        let autoResume = body.message("autoResume")?.bool("enabled") ?? false
        if autoResume, diskOnly {
            throw E2BError(400, "autoResume needs a memory snapshot: a filesystem-only pause (autoPauseMemory: false) is resumed only by connect")
        }
        let lifetime = try Self.lifetime(
            seconds: timeout, action: body.bool("autoPause") ? (diskOnly ? .standbyDiskOnly : .standby) : .kill)
        let tag = try await templates.snapshotTag(for: templateID)
        // Egress rules as the packet filter's policy (a deny of all traffic keeps the NIC, so
        // `PUT /network` can open it later); neither field given: the template's policy.
        let internet: Bool? = body.has("allow_internet_access") ? body.bool("allow_internet_access") : nil
        let networkMessage = body.message("network")
        let egress = try E2BNetworkConfig.read(networkMessage, allowInternetAccess: internet)
        let network = networkMessage == nil && internet == nil ? nil : egress.policy
        let hostMask = try E2BNetworkConfig.hostMask(networkMessage)
        let privateTraffic = networkMessage.map { $0.has("allowPublicTraffic") && !$0.bool("allowPublicTraffic") } ?? false
        let outcome = try await engine.forks.fork(tag: tag, count: 1, memoryOrder: engine.forks.serviceMemoryOrder, lifetime: lifetime, network: network).first
        guard let record = outcome?.record else { throw E2BError(500, "the sandbox did not start: \(outcome?.error ?? "no outcome")") }
        if network?.transforms.isEmpty == false {
            do { try await trustEgressAuthority(record.id) } catch {
                try? await engine.sandboxes.kill(id: record.id)
                throw error
            }
        }
        let started = Date()
        let state = E2BSandboxState(
            sandboxID: record.id, templateID: templateID, alias: templateID, metadata: body.map("metadata"), envVars: body.map("envVars"),
            accessToken: body.has("secure") && !body.bool("secure") ? nil : Self.newToken(), startedAt: started,
            startedAtSeconds: started.timeIntervalSince1970, autoPause: body.bool("autoPause"), autoPauseDiskOnly: diskOnly ? true : nil,
            allowInternetAccess: internet, network: network == nil ? nil : egress.config,
            trafficAccessToken: privateTraffic ? Self.newToken() : nil, maskRequestHost: hostMask, autoResume: autoResume ? true : nil,
            timeoutSeconds: timeout)
        try states.put(state)
        return Self.json(sandbox(record, state), status: .created)
    }

    /// Resumes a paused sandbox (201) or just answers for a running one (200), moving its end time.
    func connect(_ record: SandboxRecord, timeout: Int?) async throws -> Response {
        guard let state = states.get(record.id) else { throw E2BError.sandboxNotFound(record.id) }
        var current = record
        var status: HTTPResponse.Status = .ok
        if record.state == .standby {
            current = try await engine.standby.resume(id: record.id)
            status = .created
        }
        if let timeout {
            // Connecting to a running sandbox may lengthen its life, never shorten it (E2B's rule).
            // A sandbox with no end time keeps having none.
            let remaining = current.expiresAt.map { Int($0.timeIntervalSinceNow.rounded(.up)) } ?? Int.max
            if status == .created || timeout > remaining { try await setTimeout(record.id, seconds: timeout) }
        } else if status == .created {
            try await setTimeout(record.id, seconds: Self.defaultTimeout)
        }
        return Self.json(sandbox(current, state), status: status)
    }

    func setTimeout(_ id: String, seconds: Int) async throws {
        let (record, state) = try await require(id)
        guard record.state == .running || record.state == .standby else { throw E2BError(409, "sandbox \(id) is \(record.state.rawValue)") }
        // 0 ends it now, as E2B's `set_timeout(0)` does: an end time already reached, for the reaper.
        let lifetime = seconds == 0
            ? Lifetime(seconds: 0.001, action: state.timeoutAction) : try Self.lifetime(seconds: seconds, action: state.timeoutAction)
        _ = try await engine.lifetimes.set(id: id, lifetime: lifetime)
    }

    /// A branch of the running sandbox (live where the backend can, so the source runs throughout),
    /// then `count` forks of it (each result reports its own error). The mode used is in the
    /// `X-Clade-Branch-Mode` header: E2B's answer has no field for it.
    func fork(_ id: String, count: Int, timeout: Int?) async throws -> Response {
        let (record, parent) = try await require(id)
        guard (1...Engine.maxForkCount).contains(count) else { throw E2BError(400, "'count' must be between 1 and \(Engine.maxForkCount)") }
        guard record.state == .running else { throw E2BError(409, "sandbox \(id) is paused; connect to it before forking") }
        let tag = "\(Self.forkSnapshotPrefix)\(id)-\(Names.newSandboxID().prefix(6))"
        let (_, report) = try await engine.branches.branch(id: id, tag: tag, mode: .auto)
        let lifetime = try Self.lifetime(seconds: timeout ?? Self.defaultTimeout, action: parent.timeoutAction)
        let outcomes = try await engine.forks.fork(tag: tag, count: count, memoryOrder: engine.forks.serviceMemoryOrder, lifetime: lifetime)
        var results: [[String: Any]] = []
        for outcome in outcomes {
            guard let child = outcome.record else {
                results.append(["error": ["code": 500, "message": outcome.error ?? "the fork did not start"]])
                continue
            }
            var state = parent
            state.sandboxID = child.id
            state.startedAt = Date()
            if state.accessToken != nil { state.accessToken = Self.newToken() }
            if state.trafficAccessToken != nil { state.trafficAccessToken = Self.newToken() }
            try states.put(state)
            results.append(["sandbox": sandbox(child, state)])
        }
        await collectForkSnapshots()
        return Self.withBranchMode(Self.json(results, status: .created), report)
    }

    // MARK: listing

    func list(_ request: Request, version: Int) async throws -> Response {
        let query = request.uri.queryParameters
        let wanted = Self.metadataFilter(query.get("metadata").map { String($0) })
        var states: Set<String> = ["running"]
        if version == 2, let text = query.get("state") {
            states = Set(text.split(separator: ",").map { String($0) })
            for state in states where state != "running" && state != "paused" {
                throw E2BError(400, "state '\(state)' is not one of running, paused")
            }
        } else if version == 2 {
            states = ["running", "paused"]
        }
        let template = query.get("template").map { String($0) }
        var startedAfter: Date?
        if let text = query.get("startedAfter") {
            guard let date = ProtoJSON.date(rfc3339: String(text)) else { throw E2BError(400, "'startedAfter' is not an RFC 3339 time: \(text)") }
            startedAfter = date
        }
        var rows: [(SandboxRecord, E2BSandboxState)] = []
        let listedAt = Date()
        let records = try await engine.sandboxes.list()
        self.states.prune(keeping: Set(records.map(\.id)), writtenBefore: listedAt)
        for record in records {
            guard let state = self.states.get(record.id), let listed = Self.state(record) else { continue }
            guard states.contains(listed), wanted.allSatisfy({ state.metadata[$0.key] == $0.value }) else { continue }
            if let template, state.templateID != template { continue }
            // Start times go out with milliseconds; one read back names the same instant.
            if let startedAfter, state.started.addingTimeInterval(0.001) < startedAfter { continue }
            rows.append((record, state))
        }
        let descending = query.get("order") != "asc"
        rows.sort { descending ? $0.1.started > $1.1.started : $0.1.started < $1.1.started }
        var headers: HTTPFields = [.contentType: "application/json"]
        if version == 2 {
            let limit = min(max(query.get("limit").flatMap { Int(String($0)) } ?? 100, 1), 100)
            let start = query.get("nextToken").flatMap { Int(String($0)) } ?? 0
            let end = min(rows.count, start + limit)
            if end < rows.count { headers[HTTPField.Name("X-Next-Token")!] = "\(end)" }
            rows = start < rows.count ? Array(rows[start..<end]) : []
        }
        var listed: [[String: Any]] = []
        for (record, state) in rows { listed.append(try await detail(record, state, listed: true)) }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: Self.encode(listed))))
    }

    /// `key=value&key2=value2`, keys and values percent-encoded once more (the SDK's format).
    static func metadataFilter(_ text: String?) -> [String: String] {
        guard let text, !text.isEmpty else { return [:] }
        var filter: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).replacingOccurrences(of: "+", with: " ") }
            guard let key = parts.first?.removingPercentEncoding else { continue }
            filter[key] = (parts.count > 1 ? parts[1] : "").removingPercentEncoding ?? ""
        }
        return filter
    }

    // MARK: bodies

    func require(_ id: String) async throws -> (SandboxRecord, E2BSandboxState) {
        guard let state = states.get(id), let record = try? await engine.sandboxes.get(id: id), Self.state(record) != nil else {
            throw E2BError.sandboxNotFound(id)
        }
        return (record, state)
    }

    static func state(_ record: SandboxRecord) -> String? {
        switch record.state {
        case .running, .booting, .paused: "running"
        case .standby: "paused"
        case .dead: nil
        }
    }

    func sandbox(_ record: SandboxRecord, _ state: E2BSandboxState) -> [String: Any] {
        var body: [String: Any] = [
            "templateID": state.templateID, "sandboxID": record.id, "clientID": Self.clientID, "envdVersion": Self.envdVersion,
            "domain": configuration.domain,
        ]
        if let alias = state.alias { body["alias"] = alias }
        if let token = state.accessToken { body["envdAccessToken"] = token }
        if let token = state.trafficAccessToken { body["trafficAccessToken"] = token }
        return body
    }

    func detail(_ record: SandboxRecord, _ state: E2BSandboxState, listed: Bool = false) async throws -> [String: Any] {
        var body: [String: Any] = [
            "templateID": state.templateID, "sandboxID": record.id, "clientID": Self.clientID, "envdVersion": Self.envdVersion,
            "startedAt": ProtoJSON.timestamp(state.started.timeIntervalSince1970),
            "endAt": ProtoJSON.timestamp((record.expiresAt ?? state.started.addingTimeInterval(Lifetime.maxSeconds)).timeIntervalSince1970),
            "cpuCount": record.cpus, "memoryMB": record.memoryMiB, "diskSizeMB": diskSizeMiB(record),
            "metadata": state.metadata, "state": Self.state(record) ?? "paused",
        ]
        if let alias = state.alias { body["alias"] = alias }
        if !listed {
            body["domain"] = configuration.domain
            if let token = state.accessToken { body["envdAccessToken"] = token }
            if let internet = state.allowInternetAccess { body["allowInternetAccess"] = internet }
            if let token = state.trafficAccessToken { body["trafficAccessToken"] = token }
            body["lifecycle"] = ["autoResume": state.autoResume ?? false, "onTimeout": state.autoPause ? "pause" : "kill"]
            var network = (state.network ?? E2BNetworkConfig(allowOut: [], denyOut: [])).json
            network["allowPublicTraffic"] = state.trafficAccessToken == nil
            if let mask = state.maskRequestHost { network["maskRequestHost"] = mask }
            body["network"] = network
        }
        return body
    }

    /// The size of the root filesystem the sandbox booted from: its blob's size, one `stat`
    /// (not a read of the image catalog for every sandbox of a listing).
    func diskSizeMiB(_ record: SandboxRecord) -> Int {
        guard let rootfs = record.rootfs,
            let size = try? FileManager.default.attributesOfItem(atPath: engine.blobs.url(for: rootfs).path)[.size] as? NSNumber
        else { return 0 }
        return Int(size.int64Value >> 20)
    }

    /// The guest's console output, a line an entry.
    func consoleLines(_ record: SandboxRecord) -> [(timestamp: String, line: String)] {
        let log = engine.home.sandboxes.appendingPathComponent(record.id).appendingPathComponent("console.log")
        guard let text = try? String(contentsOf: log, encoding: .utf8) else { return [] }
        let stamp = ProtoJSON.timestamp(record.createdAt.timeIntervalSince1970)
        return text.split(separator: "\n").suffix(1000).map { (stamp, String($0)) }
    }

    static func logEntry(_ entry: (timestamp: String, line: String)) -> [String: Any] {
        ["timestamp": entry.timestamp, "message": entry.line, "level": "info", "fields": [String: String]()]
    }

    static func lifetime(seconds: Int, action: TimeoutAction) throws -> Lifetime {
        guard seconds > 0, Double(seconds) <= Lifetime.maxSeconds else {
            throw E2BError(400, "'timeout' must be between 1 and \(Int(Lifetime.maxSeconds)) seconds (got \(seconds))")
        }
        return Lifetime(seconds: Double(seconds), action: action)
    }

    static func body(_ request: Request, optional: Bool = false) async throws -> ProtoJSON {
        let buffer = try await request.body.collect(upTo: 1 << 20)
        if buffer.readableBytes == 0 {
            if optional { return ProtoJSON([:]) }
            throw E2BError(400, "the request needs a JSON body")
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? [String: Any] else {
            throw E2BError(400, "the request body is not a JSON object")
        }
        return ProtoJSON(object)
    }

    static let branchModeHeader = HTTPField.Name("X-Clade-Branch-Mode")

    /// `response` with the branch's mode and pause in headers.
    static func withBranchMode(_ response: Response, _ report: BranchReport) -> Response {
        var response = response
        if let name = branchModeHeader { response.headers[name] = report.mode.rawValue }
        if let name = HTTPField.Name("X-Clade-Branch-Pause-Ms") { response.headers[name] = String(format: "%.1f", report.pauseMilliseconds) }
        return response
    }

    static func json(_ value: Any, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: encode(value))))
    }

    static func encode(_ value: Any) -> Data {
        (try? JSONSerialization.data(withJSONObject: value, options: [.withoutEscapingSlashes, .sortedKeys])) ?? Data("null".utf8)
    }

    static func newToken() -> String { (0..<32).map { _ in String(UInt8.random(in: 0..<16), radix: 16) }.joined() }

    static let defaultTimeout = 300
    static let clientID = "clade"
    /// Snapshots E2B forks leave behind, removed once no fork depends on them.
    static let forkSnapshotPrefix = "e2b-fork-"
}
