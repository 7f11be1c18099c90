import AsyncHTTPClient
import CladeModel
import CladeStore
import Foundation
import NIOCore
import NIOHTTP1
import Testing

/// A running `clade serve` in a private store, driven over HTTP.
final class DaemonProcess: @unchecked Sendable {
    let home: URL
    let token = "test-token-\(UUID().uuidString.prefix(8))"
    private(set) var port = 0
    private var process: Process?
    /// More `clade serve` options (e.g. `--proxy-domain`).
    var extraArguments: [String] = []
    /// Serve only E2B's API (`--listen none`), on the `--e2b-listen` port given in
    /// ``extraArguments``, which is then the port whose `/health` says the daemon is up.
    var e2bOnlyPort: Int?
    /// curl's arguments for the readiness check, when the daemon's health is not on plain
    /// HTTP at 127.0.0.1 (an E2B listener serving TLS).
    var healthCheck: [String]?

    /// How clade is run (binary, user, control group); the default harness of `home` unless given.
    private let cli: CLIHarness

    init(home: URL) {
        self.home = home
        cli = CLIHarness(home: home)
    }

    /// A daemon run the way `cli` runs clade (as its user, in its store).
    init(_ cli: CLIHarness) {
        home = cli.home
        self.cli = cli
    }

    var pid: Int32 { process?.processIdentifier ?? 0 }

    func start() throws {
        let tokenFile = home.appendingPathComponent("token")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        for _ in 0..<5 {
            port = Int.random(in: 20000...26999)
            let listen = e2bOnlyPort == nil ? "127.0.0.1:\(port)" : "none"
            let health = e2bOnlyPort.map { "http://127.0.0.1:\($0)/health" } ?? "http://127.0.0.1:\(port)/healthz"
            let process = try cli.process(["serve", "--listen", listen, "--token-file", tokenFile.path] + extraArguments)
            let log = home.appendingPathComponent("daemon.log")
            if !FileManager.default.fileExists(atPath: log.path) { FileManager.default.createFile(atPath: log.path, contents: nil) }
            let handle = try FileHandle(forWritingTo: log)
            handle.seekToEndOfFile()
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            for _ in 0..<200 where process.isRunning {
                if (try? ExternalCommand("curl", healthCheck ?? ["-sf", health]).run().status) == 0 {
                    self.process = process
                    return
                }
                Thread.sleep(forTimeInterval: 0.05)
            }
            process.terminate()
        }
        throw HarnessError("clade serve did not come up; see \(home.path)/daemon.log")
    }

    func kill9() {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    func stop() {
        guard let process else { return }
        process.terminate()
        process.waitUntilExit()
        self.process = nil
    }

    /// What to read when a request failed inside the daemon: its warnings and errors, and what
    /// the kernel said about VMMs (crashes, seccomp kills, the OOM killer).
    func failureContext() -> String {
        let log = (try? String(contentsOf: home.appendingPathComponent("daemon.log"), encoding: .utf8)) ?? ""
        let complaints = log.split(separator: "\n").filter { $0.contains(" warning ") || $0.contains(" error ") || $0.contains(" critical ") }.suffix(12)
        let kernel = ((try? ExternalCommand("dmesg", []).run().stdout) ?? "").split(separator: "\n")
            .filter { $0.contains("qemu") || $0.contains("audit") || $0.contains("segfault") }.suffix(8)
        return "daemon log:\n" + complaints.joined(separator: "\n") + "\nkernel log:\n" + kernel.joined(separator: "\n")
    }

    var openFileDescriptors: Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    /// What each open descriptor points at, for a readable failure.
    var descriptorTargets: [String] {
        let directory = "/proc/\(pid)/fd"
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return entries.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\($0)") }.sorted()
    }
}

struct HTTPResult: Sendable {
    let status: Int
    let body: Data
    var json: Any? { try? JSONSerialization.jsonObject(with: body) }
    var object: [String: Any] { json as? [String: Any] ?? [:] }
    var array: [[String: Any]] { json as? [[String: Any]] ?? [] }
    var text: String { String(decoding: body, as: UTF8.self) }
}

@Suite(.serialized) struct DaemonTests {
    static let home = CLIHarness.privateHome("daemon")
    let cli = CLIHarness(home: DaemonTests.home)

    func call(
        _ daemon: DaemonProcess, _ method: HTTPMethod, _ path: String, _ body: Any? = nil, token: String?? = .none, client: HTTPClient = .shared
    ) async throws -> HTTPResult {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(daemon.port)\(path)")
        request.method = method
        let bearer = token ?? daemon.token
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        if let body {
            let data = try JSONSerialization.data(withJSONObject: body)
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: data))
        }
        let response = try await client.execute(request, timeout: .seconds(300))
        let collected = try await response.body.collect(upTo: 16 << 20)
        return HTTPResult(status: Int(response.status.code), body: Data(collected.readableBytesView))
    }

    func bake(_ daemon: DaemonProcess, _ tag: String) async throws {
        let existing = try await call(daemon, .GET, "/v1/snapshots")
        if existing.array.contains(where: { $0["tag"] as? String == tag }) { return }
        let baked = try await call(daemon, .POST, "/v1/snapshots", ["tag": tag, "warm": "echo \(tag) > /root/baked; sync"])
        try #require(baked.status == 201, "bake: \(baked.text)")
    }

    @Test func everythingThroughHTTPOnly() async throws {
        let daemon = DaemonProcess(home: Self.home)
        try daemon.start()
        defer { daemon.stop() }

        #expect(try await call(daemon, .GET, "/healthz", token: .some(nil)).status == 200)
        #expect(try await call(daemon, .GET, "/v1/snapshots", token: .some(nil)).status == 401)
        #expect(try await call(daemon, .GET, "/v1/snapshots", token: "wrong").status == 401)
        let version = try await call(daemon, .GET, "/version")
        #expect(version.object["api"] as? String == "v1")

        try await bake(daemon, "api")
        let snapshots = try await call(daemon, .GET, "/v1/snapshots")
        let api = try #require(snapshots.array.first { $0["tag"] as? String == "api" })
        for field in ["tag", "dir", "created_at_unix", "id"] { #expect(api[field] != nil, "snapshot lacks \(field)") }

        let spawned = try await call(daemon, .POST, "/v1/sandboxes", ["snapshot_tag": "api", "n": 3])
        try #require(spawned.status == 201, "spawn: \(spawned.text)")
        let sandboxes = spawned.array
        #expect(sandboxes.count == 3)
        for sandbox in sandboxes {
            for field in ["id", "snapshot_tag", "guest_addr", "pid", "created_at_unix", "state"] { #expect(sandbox[field] != nil, "sandbox lacks \(field)") }
        }
        let ids = sandboxes.compactMap { $0["id"] as? String }
        for id in ids {
            let host = try await call(daemon, .POST, "/v1/sandboxes/\(id)/exec", ["args": ["hostname"], "timeout_secs": 30])
            #expect(host.status == 200 && host.object["stdout"] as? String == "\(id)\n", "hostname in \(id): \(host.text)")
            #expect(host.object["exit_code"] as? Int == 0)
            let write = try await call(daemon, .POST, "/v1/sandboxes/\(id)/exec", ["args": ["sh", "-c", "echo \(id) > /root/mine && cat /root/mine /root/baked"]])
            #expect(write.object["stdout"] as? String == "\(id)\napi\n", "\(write.text)")
            let ping = try await call(daemon, .POST, "/v1/sandboxes/\(id)/ping")
            #expect(ping.status == 200 && ping.object["pong"] as? Bool == true, "\(ping.text)")
            let one = try await call(daemon, .GET, "/v1/sandboxes/\(id)")
            #expect(one.object["id"] as? String == id)
        }
        let put = try await call(daemon, .PUT, "/v1/sandboxes/\(ids[0])/files", ["path": "/root/put", "content": Data("via api".utf8).base64EncodedString()])
        #expect(put.status == 200, "\(put.text)")
        let got = try await call(daemon, .GET, "/v1/sandboxes/\(ids[0])/files?path=/root/put")
        #expect((got.object["content"] as? String).flatMap { Data(base64Encoded: $0) } == Data("via api".utf8), "\(got.text)")

        let branch = try await call(daemon, .POST, "/v1/sandboxes/\(ids[0])/branch", ["tag": "api-branch"])
        try #require(branch.status == 201, "branch: \(branch.text)")
        #expect(branch.object["branched_from"] as? String == ids[0])
        #expect(try await call(daemon, .POST, "/v1/sandboxes/\(ids[0])/branch", ["tag": "api-branch"]).status == 409)
        let badPolicy = try await call(daemon, .POST, "/v1/sandboxes", ["snapshot_tag": "api-branch", "network": "allow:10.0.0.0/33"])
        #expect(badPolicy.status == 400 && badPolicy.text.contains("network"), "\(badPolicy.text)")
        // Host names need the egress proxy, which this daemon does not run: refused, naming the flag.
        let named = try await call(daemon, .POST, "/v1/sandboxes", ["snapshot_tag": "api-branch", "network": "deny:0.0.0.0/0;allow:pypi.org"])
        #expect(named.status == 501 && named.text.contains("egress proxy"), "\(named.text)")
        let fromBranch = try await call(
            daemon, .POST, "/v1/sandboxes", ["snapshot_tag": "api-branch", "n": 1, "network": "none", "limits": ["processes": 300, "cpu_cores": 0.5]])
        try #require(fromBranch.status == 201, "spawn from branch: \(fromBranch.text)")
        let grandchild = try #require(fromBranch.array.first?["id"] as? String)
        #expect(fromBranch.array.first?["network"] as? String == "none", "\(fromBranch.text)")
        if geteuid() == 0 {
            let limits = fromBranch.array.first?["limits"] as? [String: Any]
            #expect(limits?["processes"] as? Int == 300 && limits?["cpu_cores"] as? Double == 0.5, "\(fromBranch.text)")
        }
        let inherited = try await call(daemon, .POST, "/v1/sandboxes/\(grandchild)/exec", ["args": ["cat", "/root/mine"]])
        #expect(inherited.object["stdout"] as? String == "\(ids[0])\n", "the branch carries the source's writes: \(inherited.text)")

        #expect(try await call(daemon, .DELETE, "/v1/snapshots/api").status == 409, "dependents must block a plain delete")
        for id in ids + [grandchild] { #expect(try await call(daemon, .DELETE, "/v1/sandboxes/\(id)").status == 204) }
        #expect(try await call(daemon, .GET, "/v1/sandboxes").array.isEmpty)
        #expect(try await call(daemon, .DELETE, "/v1/snapshots/api?cascade=true").status == 204)
        #expect(try await call(daemon, .GET, "/v1/snapshots").array.isEmpty)
        #expect(cli.qemuProcesses().isEmpty, "QEMU processes outlived DELETE")
        let audit = try String(contentsOf: Self.home.appendingPathComponent("state/audit.log"), encoding: .utf8)
        #expect(audit.contains("\"path\":\"/v1/sandboxes\"") && audit.contains("DELETE"), "state-changing calls are audited")
    }

    @Test func aRestartedDaemonReadoptsLiveSandboxesAndCleansDeadOnes() async throws {
        let daemon = DaemonProcess(home: Self.home)
        try daemon.start()
        try await bake(daemon, "restart")
        let spawned = try await call(daemon, .POST, "/v1/sandboxes", ["snapshot_tag": "restart", "n": 2])
        try #require(spawned.status == 201, "\(spawned.text)")
        let ids = spawned.array.compactMap { $0["id"] as? String }
        let doomedPid = try #require(spawned.array.last?["pid"] as? Int)
        // A job that finishes before the restart, and one still running when the daemon dies.
        let finished = try await call(daemon, .POST, "/v1/jobs", ["kind": "pack", "tag": "restart", "output": Self.home.appendingPathComponent("done.tar").path])
        let finishedID = try #require(finished.object["id"] as? String, "\(finished.text)")
        var finishedState = ""
        for _ in 0..<600 where finishedState == "running" || finishedState.isEmpty {
            try await Task.sleep(for: .milliseconds(100))
            finishedState = try await call(daemon, .GET, "/v1/jobs/\(finishedID)").object["state"] as? String ?? ""
        }
        try #require(finishedState == "succeeded")
        let cut = try await call(daemon, .POST, "/v1/jobs", ["kind": "pack", "tag": "restart", "output": Self.home.appendingPathComponent("cut.tar").path])
        let cutID = try #require(cut.object["id"] as? String, "\(cut.text)")
        daemon.kill9()
        kill(Int32(doomedPid), SIGKILL)
        try await Task.sleep(for: .milliseconds(300))

        try daemon.start()
        defer { daemon.stop() }
        let listed = try await call(daemon, .GET, "/v1/sandboxes").array.compactMap { $0["id"] as? String }
        #expect(listed == [ids[0]], "listed \(listed), expected only \(ids[0])")
        let exec = try await call(daemon, .POST, "/v1/sandboxes/\(ids[0])/exec", ["args": ["cat", "/root/baked"]])
        #expect(exec.object["stdout"] as? String == "restart\n", "\(exec.text)")
        #expect(!FileManager.default.fileExists(atPath: Self.home.appendingPathComponent("sandboxes/\(ids[1])").path), "the dead sandbox's files remain")
        #expect(try await call(daemon, .GET, "/v1/sandboxes/\(ids[1])").status == 404)
        let log = try String(contentsOf: Self.home.appendingPathComponent("daemon.log"), encoding: .utf8)
        #expect(log.contains("adopted=1"), "the live sandbox is re-adopted over QMP on start")

        // Jobs live in the catalog: the finished one is still there, the cut one is reported.
        let afterFinished = try await call(daemon, .GET, "/v1/jobs/\(finishedID)").object
        #expect(afterFinished["state"] as? String == "succeeded" && (afterFinished["result"] as? String)?.contains("done.tar") == true, "\(afterFinished)")
        let afterCut = try await call(daemon, .GET, "/v1/jobs/\(cutID)").object
        #expect(afterCut["state"] as? String == "interrupted", "\(afterCut)")
        #expect((afterCut["error"] as? String)?.contains("start the pack again") == true)
        #expect(!FileManager.default.fileExists(atPath: Self.home.appendingPathComponent("cut.tar").path), "an interrupted pack leaves no output")

        // The CLI and the daemon share the catalog: each sees what the other started.
        let cliListed = try cli.run(["ls", "--json"])
        #expect(cliListed.stdout.contains(ids[0]), "clade ls while the daemon runs: \(cliListed.stdout)")
        let cliFork = try cli.run(["fork", "restart", "-n", "1", "--json"])
        let cliID = try #require((try JSONSerialization.jsonObject(with: Data(cliFork.stdout.utf8)) as? [String: Any])?["id"] as? String, "\(cliFork.stderr)")
        let bothListed = try await call(daemon, .GET, "/v1/sandboxes").array.compactMap { $0["id"] as? String }
        #expect(Set(bothListed) == [ids[0], cliID])
        #expect(try await call(daemon, .GET, "/v1/sandboxes/\(cliID)").object["snapshot_tag"] as? String == "restart")
        #expect(try await call(daemon, .DELETE, "/v1/sandboxes/\(cliID)").status == 204)
        #expect(try cli.run(["kill", ids[0]]).status == 0)
        #expect(try await call(daemon, .GET, "/v1/sandboxes").array.isEmpty)
        #expect(cli.qemuProcesses().isEmpty, "an orphan QEMU remains")
    }

    @Test func twoHundredConcurrentRequestsGetNoUndocumentedFailure() async throws {
        let daemon = DaemonProcess(home: Self.home)
        try daemon.start()
        defer { daemon.stop() }
        try await bake(daemon, "load")
        let spawned = try await call(daemon, .POST, "/v1/sandboxes", ["snapshot_tag": "load", "n": 2])
        try #require(spawned.status == 201, "\(spawned.text)")
        let ids = spawned.array.compactMap { $0["id"] as? String }
        // Two rounds of 200: the first lets the daemon start what it starts lazily (event loops,
        // run-loop threads, pools); the second must leave the descriptor count where it found it.
        var descriptorsBefore = 0
        var targetsBefore: [String] = []
        for round in 0..<2 {
            if round == 1 {
                try await Task.sleep(for: .seconds(1))
                descriptorsBefore = daemon.openFileDescriptors
                targetsBefore = daemon.descriptorTargets
            }
            let statuses = try await load(daemon, ids: ids)
            for (kind, status, detail) in statuses {
                #expect(status < 500 || status == 503, "\(kind) got \(status): \(detail)\n\(status >= 500 && status != 503 ? daemon.failureContext() : "")")
                #expect(detail != "wrong output", "\(kind) returned another request's output")
            }
        }
        let listed = Set(try await call(daemon, .GET, "/v1/sandboxes").array.compactMap { $0["id"] as? String })
        #expect(listed == Set(ids), "catalog after load: \(listed)")
        #expect(cli.qemuProcesses().count == ids.count, "QEMU processes do not match the catalog")
        let store = CladeHome(root: Self.home)
        #expect(Set(try SandboxCatalog(home: store).indexed().map(\.id)) == Set(ids), "the catalog's rows do not match the sandboxes")
        #expect(try OperationJournal(home: store).entries().isEmpty, "operations left open in the journal")
        try await Task.sleep(for: .seconds(1))
        #expect(daemon.openFileDescriptors <= descriptorsBefore + 2, "fds grew from \(descriptorsBefore) to \(daemon.openFileDescriptors): before \(targetsBefore), after \(daemon.descriptorTargets)")
        for id in ids { #expect(try await call(daemon, .DELETE, "/v1/sandboxes/\(id)").status == 204) }
        _ = try await call(daemon, .DELETE, "/v1/snapshots/load?cascade=true")
        _ = try await call(daemon, .DELETE, "/v1/snapshots/restart?cascade=true")
    }

    /// 200 concurrent requests mixing list, exec, ping, and spawn+kill, on a client of their own
    /// that is shut down afterwards (its keep-alive connections are not the daemon's leak).
    func load(_ daemon: DaemonProcess, ids: [String]) async throws -> [(String, Int, String)] {
        // 200 requests queue for the client's few connections to one host; its default 10 s
        // wait for a pooled connection measures the test machine, not the daemon.
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(120), read: .seconds(300))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let statuses = try await withThrowingTaskGroup(of: (String, Int, String).self) { group in
            for index in 0..<200 {
                let id = ids[index % ids.count]
                group.addTask {
                    switch index % 10 {
                    case 0, 1, 2:
                        return ("list", try await call(daemon, .GET, "/v1/sandboxes", client: client).status, "")
                    case 3, 4, 5:
                        let result = try await call(daemon, .POST, "/v1/sandboxes/\(id)/exec", ["args": ["echo", "\(index)"]], client: client)
                        return ("exec", result.status, result.status == 200 && result.object["stdout"] as? String != "\(index)\n" ? "wrong output" : result.text)
                    case 6, 7, 8:
                        return ("ping", try await call(daemon, .POST, "/v1/sandboxes/\(id)/ping", client: client).status, "")
                    default:
                        // Spawn one and kill it again; over the fork cap this is the documented 503.
                        let result = try await call(daemon, .POST, "/v1/sandboxes", ["snapshot_tag": "load", "n": 1], client: client)
                        if result.status == 201, let child = result.array.first?["id"] as? String {
                            return ("spawn+kill", try await call(daemon, .DELETE, "/v1/sandboxes/\(child)", client: client).status, "")
                        }
                        return ("spawn", result.status, "\(result.text)")
                    }
                }
            }
            var collected: [(String, Int, String)] = []
            for try await result in group { collected.append(result) }
            return collected
        }
        try await client.shutdown()
        return statuses
    }
}
