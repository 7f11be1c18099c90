#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation
import Testing

/// Where and as whom clade runs in an isolation test: as root with a store other users can enter
/// (as `/var/lib/clade` is), as root with a 0700 store (as `mktemp -d` makes), and as an
/// unprivileged user (`CLADE_TEST_UNPRIVILEGED_USER`, which `.ci/run` creates).
enum IsolationConfiguration: String, Sendable, CustomTestStringConvertible {
    case rootPublicStore
    case rootPrivateStore
    case unprivileged

    static let asRoot: [IsolationConfiguration] = [.rootPublicStore, .rootPrivateStore]
    static let unprivilegedUser = ProcessInfo.processInfo.environment["CLADE_TEST_UNPRIVILEGED_USER"]

    var testDescription: String { rawValue }
    var isRoot: Bool { self != .unprivileged }

    /// A harness with a store of its own named `name`, run as this configuration says.
    func harness(_ name: String) throws -> CLIHarness {
        switch self {
        case .rootPublicStore:
            let cli = CLIHarness(home: CLIHarness.privateHome(name))
            chmod(cli.home.path, 0o755)
            return cli
        case .rootPrivateStore:
            let cli = CLIHarness(home: CLIHarness.privateHome(name + "-private"))
            chmod(cli.home.path, 0o700)
            return cli
        case .unprivileged:
            let user = try #require(Self.unprivilegedUser, "set CLADE_TEST_UNPRIVILEGED_USER to a non-root account")
            return try CLIHarness.unprivileged(user, home: name + "-user")
        }
    }

    /// The uid the unprivileged configuration's VMMs run as.
    var userUID: UInt32? {
        guard self == .unprivileged, let user = Self.unprivilegedUser, let account = getpwnam(user) else { return nil }
        return account.pointee.pw_uid
    }

    /// The peer beyond the host that this configuration's tests reach. Root's suite and the
    /// unprivileged user's run at the same time (scripts/test.sh), so each has a namespace, a
    /// link and a network of its own.
    var peer: PeerNetwork {
        isRoot
            ? PeerNetwork(namespace: "clade-itpeer", link: "cladeit", hostCIDR: "10.231.7.1/30", peerCIDRs: ["10.231.7.2/30"])
            : PeerNetwork(namespace: "clade-itpeer-u", link: "cladeitu", hostCIDR: "10.231.7.5/30", peerCIDRs: ["10.231.7.6/30"])
    }

    var peerAddress: String { peer.addresses[0] }

    /// Where a sandbox's control group would be, in every hierarchy it may use.
    func controlGroupPaths(_ sandbox: String) -> [String] {
        let base = self == .unprivileged ? "clade-test-\(Self.unprivilegedUser ?? "")/" : ""
        return ["/sys/fs/cgroup/memory/\(base)clade/\(sandbox)", "/sys/fs/cgroup/\(base)clade/\(sandbox)"]
    }
}

/// The helpers every isolation test shares: servers the guest must not reach, a peer beyond the
/// host, forks with a default route, the guest's probe, and what `/proc` says of a VMM.
extension IsolationIntegrationTests {
    /// A web server on the host's loopback only, standing for every loopback service (the
    /// daemon's API, a registry, a database).
    final class LoopbackServer {
        let process = Process()
        let port: Int
        init(bind: String = "127.0.0.1", namespace: String? = nil, port: Int) throws {
            self.port = port
            let server = [Self.python, "-m", "http.server", "\(port)", "--bind", bind]
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = namespace.map { ["ip", "netns", "exec", $0] + server } ?? server
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline {
                let probe = try ExternalCommand("curl", ["-s", "-o", "/dev/null", "-m", "1", "http://\(bind):\(port)/"]).run()
                if probe.status == 0 { return }
                Thread.sleep(forTimeInterval: 0.1)
            }
            throw HarnessError("the test server on \(bind):\(port) did not start")
        }
        deinit { Self.stop(process) }

        /// Debian's interpreter where there is one: a version manager's `python3` shim may start
        /// the server as a child of its own, which stopping the shim leaves running.
        static var python: String { FileManager.default.isExecutableFile(atPath: "/usr/bin/python3") ? "/usr/bin/python3" : "python3" }

        /// A test's servers inherit the test runner's blocked signals, SIGTERM among them, so
        /// `terminate()` leaves them running after the test: SIGKILL cannot be blocked.
        static func stop(_ process: Process) {
            guard process.isRunning else { return }
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    func fork(_ cli: CLIHarness, _ tag: String, _ extra: [String] = []) throws -> (id: String, pid: Int32) {
        let result = try cli.run(["fork", tag, "--json"] + extra)
        try #require(result.status == 0, "\(result.stdout) \(result.stderr)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let id = try #require(object["id"] as? String)
        // The busybox image configures only its on-link network; give it a default route.
        _ = try cli.run(["exec", id, "--user", "root", "--", "sh", "-c", "ip route add default via 10.0.2.2 2>/dev/null || route add default gw 10.0.2.2"])
        return (id, Int32(try #require(object["pid"] as? Int)))
    }

    /// Whether the guest gets an HTTP answer from `host:port`. Busybox's `nc`, not its `wget`:
    /// the static busybox in the image segfaults in wget's name-service lookup.
    /// `clade network` on running sandboxes: a deny list with an excepted port, an allow list that
    /// names the host (which stays refused), `none` as a deny of everything, and back to
    /// `outbound`, each in force at once; a sandbox started under `none` keeps it.
    func changePoliciesWhileRunning(_ cli: CLIHarness, _ configuration: IsolationConfiguration, neighbour: String, closed: String, hostAddresses: [String], hostPort: Int) throws {
        func change(_ id: String, _ policy: String) throws -> CLIHarness.Result { try cli.run(["network", id, policy]) }
        let peer = configuration.peerAddress
        let denied = try change(neighbour, "deny:\(peer)/32;allow:\(peer)/32:8001")
        #expect(denied.status == 0, "\(denied.stderr)")
        #expect(try reach(cli, neighbour, peer, 8001) && !reach(cli, neighbour, peer, 8002), "a deny list with an excepted port, changed live")
        let namingHost = try change(neighbour, "allow:" + ([peer] + hostAddresses).map { "\($0)/32" }.joined(separator: ","))
        #expect(namingHost.status == 0, "\(namingHost.stderr)")
        for host in hostAddresses { #expect(try !reach(cli, neighbour, host, hostPort), "an allow list naming the host opened it at \(host)") }
        #expect(try reach(cli, neighbour, peer, 8002), "the allow list changed live")
        let cut = try change(neighbour, "none")
        #expect(cut.status == 0 && cut.stdout.contains("deny:0.0.0.0/0"), "\(cut.stdout) \(cut.stderr)")
        #expect(try !reach(cli, neighbour, peer, 8001), "none on a running sandbox denies everything")
        #expect(try change(neighbour, "outbound").status == 0)
        #expect(try reach(cli, neighbour, peer, 8001) && reach(cli, neighbour, peer, 8002), "back to outbound")
        let reopened = try change(closed, "outbound")
        #expect(reopened.status != 0 && reopened.stderr.contains("whole life"), "a sandbox started under none was reopened: \(reopened.stderr)")
        #expect(try !reach(cli, closed, peer, 8001))
    }

    func reach(_ cli: CLIHarness, _ id: String, _ host: String, _ port: Int) throws -> Bool {
        let request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \(host) \(port)"
        let result = try cli.run(["exec", id, "--", "sh", "-c", request])
        return result.stdout.hasPrefix("HTTP/")
    }

    func listing(_ cli: CLIHarness) throws -> [[String: Any]] {
        let output = try cli.run(["ls", "--json"]).stdout
        return (try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]]) ?? []
    }

    func execLatency(_ cli: CLIHarness, _ id: String, runs: Int = 5) throws -> Double {
        try medianMilliseconds(runs: runs) { try cliExec(cli, id) }
    }

    /// The median time of `runs` calls of `exec`, each of which must succeed.
    func medianMilliseconds(runs: Int, _ exec: () throws -> (ok: Bool, message: String)) throws -> Double {
        var samples: [Double] = []
        for _ in 0..<runs {
            let start = Date()
            let result = try exec()
            try #require(result.ok, "\(result.message)")
            samples.append(Date().timeIntervalSince(start) * 1000)
        }
        return samples.sorted()[runs / 2]
    }

    static func status(_ pid: Int32) -> [String: String] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            if parts.count == 2 { fields[String(parts[0])] = parts[1].trimmingCharacters(in: .whitespaces) }
        }
        return fields
    }

    static func cpuTicks(_ pid: Int32) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = text.lastIndex(of: ")")
        else { return 0 }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // After the command: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
        return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
    }

    static func hostAddress() -> String? {
        let output = (try? ExternalCommand("ip", ["-4", "-o", "addr", "show", "scope", "global"]).run().stdout) ?? ""
        return output.split(separator: "\n").first.flatMap { line in
            line.split(separator: " ").drop { $0 != "inet" }.dropFirst().first.map { String($0.split(separator: "/")[0]) }
        }
    }

    /// The VMM is chrooted into a jail of its own that shows the system's programs read-only and
    /// its own sandbox directory, and nothing else of the host or the store.
    func expectPrivateMountView(_ cli: CLIHarness, _ child: (id: String, pid: Int32), _ configuration: IsolationConfiguration) throws {
        let root = "/proc/\(child.pid)/root"
        if configuration.isRoot {
            // Root's VMM chroots into the jail; an unprivileged one pivots into it (its root is "/").
            let jail = (try? FileManager.default.destinationOfSymbolicLink(atPath: root)) ?? ""
            #expect(jail.hasSuffix("/sandboxes/\(child.id)/jail"), "QEMU of \(child.id) is not chrooted into its jail: root is \(jail)")
        }
        let top = Set((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
        #expect(top.isSubset(of: ["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "dev", cli.home.pathComponents.dropFirst().first ?? ""]),
                "the jail shows more than it should: \(top.sorted())")
        #expect(!top.contains("etc") && !top.contains("home") && !top.contains("proc"))
        let sandboxes = root + cli.home.appendingPathComponent("sandboxes").path
        #expect(((try? FileManager.default.contentsOfDirectory(atPath: sandboxes)) ?? []) == [child.id],
                "the jail shows other sandboxes")
        #expect(!FileManager.default.fileExists(atPath: root + cli.home.appendingPathComponent("snapshots").path), "the jail shows the snapshots")
        #expect(access(root + "/usr/bin", W_OK) != 0, "/usr is writable in the jail")
        // mountinfo shows a chrooted process only the mounts under its root.
        let mounts = (try? String(contentsOfFile: "/proc/\(child.pid)/mountinfo", encoding: .utf8)) ?? ""
        var points: [(String, String)] = []
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count > 5 { points.append((String(fields[4]), String(fields[5]))) }
        }
        let allowed = Set(["/", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", cli.home.appendingPathComponent("sandboxes/\(child.id)").path])
        for (point, options) in points {
            // Unprivileged, the kernel and initrd are bound in read-only, file by file, from the store's blobs.
            let readOnlyBlob = !configuration.isRoot && point.hasPrefix(cli.home.appendingPathComponent("blobs").path + "/") && options.hasPrefix("ro")
            #expect(allowed.contains(point) || point.hasPrefix("/dev/") || readOnlyBlob, "the jail mounts \(point) (\(options))")
            if point == "/usr" { #expect(options.hasPrefix("ro"), "/usr is mounted \(options) in the jail") }
        }
        #expect(points.contains { $0.0 == "/usr" }, "no /usr mount in the jail: \(points)")
    }

    static func hostMounts() -> String {
        (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    }

    func cliExec(_ cli: CLIHarness, _ id: String) throws -> (ok: Bool, message: String) {
        let result = try cli.run(["exec", id, "--", "true"])
        return (result.status == 0, result.stderr)
    }

    func daemonExec(_ daemon: DaemonProcess, _ id: String) throws -> (ok: Bool, message: String) {
        let result = try ExternalCommand("curl", [
            "-s", "-m", "60", "-w", "\n%{http_code}", "-H", "Authorization: Bearer \(daemon.token)", "-H", "Content-Type: application/json",
            "-d", "{\"args\":[\"true\"]}", "http://127.0.0.1:\(daemon.port)/v1/sandboxes/\(id)/exec",
        ]).run()
        let lines = result.stdout.split(separator: "\n")
        return (lines.last == "200", result.stdout)
    }

    func daemonExecLatency(_ daemon: DaemonProcess, _ id: String, runs: Int = 5) throws -> Double {
        try medianMilliseconds(runs: runs) { try daemonExec(daemon, id) }
    }

    static func residentKiB(_ pid: Int32) -> Int {
        let value = status(pid)["VmRSS"]?.split(separator: " ").first
        return value.flatMap { Int($0) } ?? 0
    }
}
