#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation
import Testing

/// E2B's own Python SDK (`e2b` from PyPI, pinned in scripts/python-clients.sh), unmodified,
/// against `clade serve --e2b-listen`: the scenarios in Tests/E2BScenarios/scenarios.py, with
/// the SDK's default HTTP version and with `E2B_HTTP_VERSION=1.1`, and AsyncSandbox.
@Suite(.serialized) struct E2BTests {
    static let cli = CLIHarness(home: CLIHarness.privateHome("e2b"))

    /// The daemon with only the E2B listener (`--listen none`), its port and API key.
    func startDaemon(environment: [String: String] = [:], extraArguments: [String] = []) throws -> (DaemonProcess, port: Int, key: String) {
        let key = "e2b_test_\(UUID().uuidString.prefix(8).lowercased())"
        let keyFile = Self.cli.home.appendingPathComponent("e2b-keys")
        try "# test keys\n\(key)\n".write(to: keyFile, atomically: true, encoding: .utf8)
        let daemon = DaemonProcess(CLIHarness(home: Self.cli.home, environment: environment))
        let port = Int.random(in: 16000...19999)
        daemon.extraArguments = ["--e2b-listen", "127.0.0.1:\(port)", "--e2b-api-key-file", keyFile.path] + extraArguments
        daemon.e2bOnlyPort = port
        try daemon.start()
        return (daemon, port, key)
    }

    /// Two addresses beyond the host, each with a web server on ``peerPort``, for the egress
    /// scenario (E2B's own suite uses 1.1.1.1 and 8.8.8.8, which CI cannot reach).
    static let peer = PeerNetwork(namespace: "clade-e2bpeer", link: "cladee2b", hostCIDR: "10.231.9.1/29", peerCIDRs: ["10.231.9.2/29", "10.231.9.3/29"])
    static let peerPort = 8080

    /// The egress proxy's port, and the names it pins to the first peer, for the host-name scenario.
    static let egressProxyPort = Int.random(in: 20000...23999)
    static let pinnedNames = ["allowed.test", "api.wild.test"]

    /// A server on ports 80 and 443 of `address` in the peers' namespace that answers with `name`
    /// and the Host it was sent (Tests/E2BScenarios/egress_peer.py), ready when this returns.
    final class NamedPeer {
        let process = Process()
        init(address: String, name: String, namespace: String) throws {
            let script = CLIHarness.packageRoot.appendingPathComponent("Tests/E2BScenarios/egress_peer.py")
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["ip", "netns", "exec", namespace, IsolationIntegrationTests.LoopbackServer.python, script.path, address, name]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = FileHandle.nullDevice
            try process.run()
            let ready = output.fileHandleForReading.availableData
            guard String(decoding: ready, as: UTF8.self).hasPrefix("ready") else { throw HarnessError("the named peer on \(address) did not start") }
        }
        deinit { IsolationIntegrationTests.LoopbackServer.stop(process) }
    }

    func scenarios(_ mode: String, port: Int, key: String, httpVersion: String? = nil, peers: [String] = [], template: String? = nil) throws -> ExternalCommand.Output {
        let python = CLIHarness.packageRoot.appendingPathComponent(".build/e2bclient/bin/python")
        try #require(FileManager.default.isExecutableFile(atPath: python.path), "the e2b SDK is not installed: run scripts/python-clients.sh (scripts/test.sh does)")
        let script = CLIHarness.packageRoot.appendingPathComponent("Tests/E2BScenarios/scenarios.py")
        var environment = [
            "E2B_API_URL": "http://127.0.0.1:\(port)", "E2B_SANDBOX_URL": "http://127.0.0.1:\(port)", "E2B_API_KEY": key,
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
        ]
        if let httpVersion { environment["E2B_HTTP_VERSION"] = httpVersion }
        if let template { environment["CLADE_E2B_TEMPLATE"] = template }
        if !peers.isEmpty {
            environment["CLADE_TEST_PEERS"] = peers.map { "\($0):\(Self.peerPort)" }.joined(separator: ",")
            environment["CLADE_TEST_EGRESS_NAMES"] = "1"
        }
        // A bound on a hung run, not a speed target.
        return try ExternalCommand("timeout", ["1800", python.path, script.path, mode], environment: environment).run()
    }

    /// The end of the daemon's log, for a failure's message: the store (and the log in it) is
    /// removed with the job, and the daemon's side is often the explanation.
    func daemonLog(lastBytes: Int = 12_000) -> String {
        guard let data = FileManager.default.contents(atPath: Self.cli.home.appendingPathComponent("daemon.log").path) else { return "(no daemon log)" }
        return "the daemon's log, last \(min(lastBytes, data.count)) bytes:\n" + String(decoding: data.suffix(lastBytes), as: UTF8.self)
    }

    @Test func theE2BSDKDrivesCladeThroughEveryScenario() throws {
        let initialized = try Self.cli.run(["e2b", "init"], timeout: 1200)
        try #require(initialized.status == 0, "clade e2b init: \(initialized.stderr)")
        // The async scenarios start from the same template pushed to a registry: a template id
        // may be a registry reference, pulled lazily (the fill held, so it stays lazy here).
        let registry = try TestRegistry()
        defer { registry.stop() }
        let remoteTemplate = "\(registry.address)/clade/e2b-base:v1"
        let pushed = try Self.cli.run(["push", "base", remoteTemplate, "--insecure"], timeout: 600)
        try #require(pushed.status == 0, "push of the base template: \(pushed.stderr)")
        let egress = ["--egress-proxy-port", "\(Self.egressProxyPort)"] + Self.pinnedNames.flatMap { ["--egress-resolve", "\($0)=\(Self.peer.addresses[0])"] }
        let (daemon, port, key) = try startDaemon(environment: [
            "CLADE_INSECURE_REGISTRIES": registry.address, "CLADE_LAZY_FILL": "held", "CLADE_LAZY_IDLE_SECONDS": "1",
        ], extraArguments: egress)
        defer { daemon.stop() }
        // The peers need root (`ip netns`); without them the egress scenario says it skipped.
        var peers: [String] = []
        var servers: [IsolationIntegrationTests.LoopbackServer] = []
        var named: [NamedPeer] = []
        if geteuid() == 0 {
            try Self.peer.create()
            servers = try Self.peer.addresses.map { try .init(bind: $0, namespace: Self.peer.namespace, port: Self.peerPort) }
            named = try zip(Self.peer.addresses, ["first", "second"]).map { try NamedPeer(address: $0, name: $1, namespace: Self.peer.namespace) }
            peers = Self.peer.addresses
        }
        defer { if !peers.isEmpty { Self.peer.remove() } }
        for version: String? in [nil, "1.1"] {
            // Egress once, with the SDK's default transport: it is the host's firewall under test.
            let run = try scenarios("sync", port: port, key: key, httpVersion: version, peers: version == nil ? peers : [])
            #expect(run.status == 0 && run.stdout.hasSuffix("all scenarios passed\n"), "E2B scenarios (HTTP \(version ?? "default")), status \(run.status):\n\(run.stdout)\n\(run.stderr)\n\(daemonLog())")
            #expect(run.stdout.contains("ok auto_resume:"), "the auto-resume scenario did not run:\n\(run.stdout)")
            if version == nil, !peers.isEmpty {
                #expect(run.stdout.contains("ok egress: allow_out over deny_out") && run.stdout.contains("ok egress names: allow_out names")
                        && run.stdout.contains("ok allow_public_traffic=False")
                        && run.stdout.contains("mask_request_host sets the Host"), "the egress scenario did not run:\n\(run.stdout)")
            }
        }
        if !peers.isEmpty {
            // The CLI of a store whose daemon runs the egress proxy takes names too, pointed at it.
            let forked = try Self.cli.run(["fork", "base", "--network", "deny:0.0.0.0/0;allow:allowed.test", "--json"])
            #expect(forked.status == 0, "clade fork with a host name while the daemon's proxy runs: \(forked.stderr)")
            let object = try? JSONSerialization.jsonObject(with: Data(forked.stdout.utf8)) as? [String: Any]
            if let id = object?["id"] as? String {
                let fetched = try Self.cli.run(["exec", id, "--", "curl", "-s", "--fail", "-m", "8", "--resolve", "allowed.test:80:\(peers[1])", "http://allowed.test/"])
                #expect(fetched.stdout == "first allowed.test", "a CLI fork's named connection: \(fetched.status) \(fetched.stdout) \(fetched.stderr)")
                _ = try Self.cli.run(["kill", id])
            }
        }
        withExtendedLifetime((servers, named)) {}
        let async = try scenarios("async", port: port, key: key, template: remoteTemplate)
        #expect(async.status == 0 && async.stdout.hasSuffix("all scenarios passed\n"), "AsyncSandbox scenarios, status \(async.status):\n\(async.stdout)\n\(async.stderr)\n\(daemonLog())")
        let snapshots = (try? FileManager.default.contentsOfDirectory(atPath: Self.cli.home.appendingPathComponent("snapshots").path)) ?? []
        let pulled = snapshots.first { $0.hasPrefix("node-") }
        #expect(
            pulled.map { FileManager.default.fileExists(atPath: Self.cli.home.appendingPathComponent("snapshots/\($0)/lazy-memory.json").path) } == true,
            "the registry template was not pulled lazily: \(snapshots)")
        // Without a live proxy, names are refused (they fail closed), naming the flag.
        daemon.stop()
        let refused = try Self.cli.run(["fork", "base", "--network", "deny:0.0.0.0/0;allow:allowed.test"])
        #expect(refused.status != 0 && refused.stderr.contains("--egress-proxy-port"), "a named policy with no proxy: \(refused.status) \(refused.stderr)")
        // The same store served the way E2B is reached: HTTPS, by domain alone (E2BEdgeTests).
        try serveTheEdgeOverTLS()
        // Every sandbox the scenarios started is gone, and fork snapshots with them.
        let listed = try Self.cli.run(["ls", "--json"])
        let sandboxes = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(sandboxes.isEmpty, "sandboxes left running: \(listed.stdout)")
    }
}
