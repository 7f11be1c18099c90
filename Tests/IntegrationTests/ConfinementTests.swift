import CladeStore
import Foundation
import Testing

/// The same guest probe in each configuration clade runs in: root with a 0700 store, and an
/// unprivileged user. Each sandbox either gets the confinement its policy needs, checked against
/// what `/proc` shows, or is refused with the opt-out named; with the opt-out it runs, and says so.
/// The whole isolation suite runs in the same configurations (`IsolationIntegrationTests`,
/// `UnprivilegedIsolationTests`); this suite adds the refusal, the opt-out and what `ls` and
/// `doctor` say.
@Suite(.serialized, .enabled(if: geteuid() == 0, "needs root: it checks firewall rules and runs clade as another user"))
struct ConfinementTests {
    typealias Loopback = IsolationIntegrationTests.LoopbackServer

    /// The non-root account the unprivileged configuration runs as (`.ci/run` creates it).
    static let unprivilegedUser = ProcessInfo.processInfo.environment["CLADE_TEST_UNPRIVILEGED_USER"]

    /// The isolation suite's helpers: a fork with a default route, and the guest's HTTP probe.
    func fork(_ cli: CLIHarness, _ tag: String, _ extra: [String] = []) throws -> (id: String, pid: Int32) {
        try IsolationIntegrationTests().fork(cli, tag, extra)
    }

    func reach(_ cli: CLIHarness, _ id: String, _ host: String, _ port: Int) throws -> Bool {
        try IsolationIntegrationTests().reach(cli, id, host, port)
    }

    func record(_ cli: CLIHarness, _ id: String) throws -> [String: Any] {
        let output = try cli.run(["ls", "--json"]).stdout
        let records = (try? JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]]) ?? []
        return try #require(records.first { $0["id"] as? String == id }, "\(id) is not listed: \(output)")
    }

    static func namespace(_ kind: String, of pid: String) -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/ns/\(kind)")) ?? "?"
    }

    /// The guest cannot reach a server on the host's loopback through its gateway or the host's
    /// address; a branch, a standby and a resume work under the VMM's filter.
    func probeConfined(_ cli: CLIHarness, loopback: Loopback) throws -> (id: String, pid: Int32) {
        let bake = try cli.run(["bake", "--tag", "probe"], timeout: 600)
        try #require(bake.status == 0, "\(bake.stderr)")
        let child = try fork(cli, "probe")
        for host in ["10.0.2.2"] + (IsolationIntegrationTests.hostAddress().map { [$0] } ?? []) {
            #expect(try !reach(cli, child.id, host, loopback.port), "the guest reached the host's loopback at \(host)")
        }
        let status = IsolationIntegrationTests.status(child.pid)
        #expect(status["Seccomp"] == "2" && status["NoNewPrivs"] == "1", "\(status)")
        let commandLine = String(decoding: (FileManager.default.contents(atPath: "/proc/\(child.pid)/cmdline") ?? Data()).map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
        #expect(commandLine.contains("spawn=deny") && !commandLine.contains("-daemonize"), "\(commandLine)")
        let top = Set((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(child.pid)/root")) ?? [])
        #expect(!top.isEmpty && !top.contains("etc") && !top.contains("home") && !top.contains("root") && !top.contains("proc"), "the VMM sees \(top)")
        let listed = try record(cli, child.id)
        #expect(listed["isolation"] as? String == "full", Comment(rawValue: "\(listed)"))
        #expect((listed["confinement"] as? [String: Any])?["private_mount_view"] as? Bool == true)
        // State moves through descriptors clade hands QEMU: branch, standby and resume still work.
        #expect(try cli.run(["exec", child.id, "--", "sh", "-c", "echo kept > /tmp/mark"]).status == 0)
        let branch = try cli.run(["branch", child.id, "--tag", "probe-branch"])
        #expect(branch.status == 0, "\(branch.stderr)")
        #expect(try cli.run(["standby", child.id]).status == 0)
        let resumed = try cli.run(["resume", child.id])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(try cli.run(["exec", child.id, "--", "cat", "/tmp/mark"]).stdout == "kept\n")
        // A resume keeps the uid and, staying `outbound`, installs no rule of its own: the shared
        // chain must still hold the resumed VMM off the host.
        #expect(try !reach(cli, child.id, "10.0.2.2", loopback.port), "the resumed guest reached the host's loopback")
        let grandchild = try fork(cli, "probe-branch")
        #expect(try cli.run(["exec", grandchild.id, "--", "cat", "/tmp/mark"]).stdout == "kept\n")
        let pid = try #require(try record(cli, child.id)["pid"] as? Int)
        return (child.id, Int32(pid))
    }

    @Test func rootWithAPrivateStoreConfinesEveryVMM() throws {
        let cli = CLIHarness(home: CLIHarness.privateHome("confine-root"))
        chmod(cli.home.path, 0o700)
        defer { _ = try? cli.run(["kill", "--all"]) }
        let loopback = try Loopback(port: 18_400 + Int(getpid() % 500))
        let child = try probeConfined(cli, loopback: loopback)
        let uid = IsolationIntegrationTests.status(child.pid)["Uid"]?.split(whereSeparator: \.isWhitespace).first.flatMap { UInt32($0) } ?? 0
        #expect(uid != 0, "the VMM runs as root")
        let confinement = try #require(try record(cli, child.id)["confinement"] as? [String: Any])
        #expect((confinement["uid"] as? Int).map(UInt32.init) == uid, "ls says uid \(String(describing: confinement["uid"])), /proc says \(uid)")
        #expect(confinement["host_firewall"] as? Bool == true)
        let rules = try ExternalCommand("iptables", ["-S"]).check().stdout
        // Every VMM uid is in one range, which the hook sends to clade's chain of refusals.
        #expect((2_200_000_000...2_201_048_575).contains(uid), "uid \(uid) is outside the range the firewall covers")
        #expect(rules.contains("--uid-owner 2200000000-2201048575 -j CLADE-VMM"), "no firewall hook for the VMMs' uids")
        withExtendedLifetime(loopback) {}
    }

    @Test(.enabled(if: unprivilegedUser != nil, "set CLADE_TEST_UNPRIVILEGED_USER to a non-root account (.ci/run creates one)"))
    func anUnprivilegedUserGetsNamespacesOrARefusal() throws {
        let user = try #require(Self.unprivilegedUser)
        let ids = try ExternalCommand("id", ["-u", user]).check().stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let cli = try CLIHarness.unprivileged(user, home: "confine-user")
        defer { _ = try? cli.run(["kill", "--all"]) }
        let loopback = try Loopback(port: 18_900 + Int(getpid() % 500))
        let child = try probeConfined(cli, loopback: loopback)
        #expect(IsolationIntegrationTests.status(child.pid)["Uid"]?.hasPrefix(ids + "\t") == true, "the VMM runs as \(user)")
        for kind in ["user", "net", "mnt"] {
            #expect(Self.namespace(kind, of: String(child.pid)) != Self.namespace(kind, of: "self"), "the VMM shares the host's \(kind) namespace")
        }
        let confinement = try #require(try record(cli, child.id)["confinement"] as? [String: Any])
        #expect(confinement["namespaces"] as? [String] == ["user", "network", "mount"], "\(confinement)")
        let doctor = try cli.run(["doctor", "--json"]).stdout
        #expect(doctor.contains("\"host_unreachable\"") && doctor.contains("network namespace of its own"), "doctor: \(doctor)")

        // Without the network helper the namespaces cannot be had: refused, with the opt-out named.
        let bare = cli.home.appendingPathComponent("path-without-slirp4netns")
        try FileManager.default.createDirectory(at: bare, withIntermediateDirectories: true)
        for entry in try FileManager.default.contentsOfDirectory(atPath: "/usr/bin") where entry != "slirp4netns" {
            try? FileManager.default.createSymbolicLink(atPath: bare.appendingPathComponent(entry).path, withDestinationPath: "/usr/bin/" + entry)
        }
        var weak = cli
        weak.environment["PATH"] = bare.path + ":/usr/sbin:/sbin"
        let before = try weak.run(["ls", "--json"]).stdout
        let refused = try weak.run(["fork", "probe", "--json"])
        #expect(refused.status == 78 && refused.stderr.contains("slirp4netns") && refused.stderr.contains("--allow-weaker-isolation"), "\(refused.stderr)")
        #expect(try weak.run(["ls", "--json"]).stdout == before, "a refusal made nothing")
        // A cold boot: a fork without the namespaces also needs the sealed memory file opened for
        // writing, which QEMU 7.2 cannot do unprivileged (see the README).
        let booted = try weak.run(["boot", "--json", "--allow-weaker-isolation"])
        try #require(booted.status == 0, "\(booted.stderr)")
        let bootedObject = try #require(try JSONSerialization.jsonObject(with: Data(booted.stdout.utf8)) as? [String: Any])
        let opened = (id: try #require(bootedObject["id"] as? String), pid: Int32(0))
        _ = try weak.run(["exec", opened.id, "--user", "root", "--", "sh", "-c", "ip route add default via 10.0.2.2 2>/dev/null || route add default gw 10.0.2.2"])
        #expect(try reach(weak, opened.id, "10.0.2.2", loopback.port), "with the opt-out the guest reaches the host, as recorded")
        let listed = try record(weak, opened.id)
        #expect(listed["isolation"] as? String == "weaker" && !((listed["isolation_gaps"] as? [String]) ?? []).isEmpty, Comment(rawValue: "\(listed)"))
        #expect(try weak.run(["ls"]).stderr.contains("weaker isolation: \(opened.id)"))
        #expect(try weak.run(["doctor"]).stdout.contains(opened.id), "doctor names the sandbox that runs with weaker isolation")
        withExtendedLifetime(loopback) {}
    }
}
