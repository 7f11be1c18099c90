import CladeStore
import Foundation
import Testing

/// A hostile guest, with real VMs: the host's loopback and addresses are refused under every
/// network policy, its QEMU is confined (seccomp, a uid of its own), and a CPU quota and a fork
/// bomb leave a neighbour sandbox alone. Needs root (the firewall, per-VM
/// uids and control groups are root-only); CI runs as root.
@Suite(.serialized, .enabled(if: geteuid() == 0, "needs root: the host firewall, per-sandbox uids and cgroups"))
struct IsolationIntegrationTests {
    static let peerNamespace = "clade-itpeer"
    static let peerAddress = "10.231.7.2"

    /// A web server on the host's loopback only, standing for every loopback service (the
    /// daemon's API, a registry, a database).
    final class LoopbackServer {
        let process = Process()
        let port: Int
        init(bind: String = "127.0.0.1", namespace: String? = nil, port: Int) throws {
            self.port = port
            let server = ["python3", "-m", "http.server", "\(port)", "--bind", bind]
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
        deinit { process.terminate() }
    }

    /// A network namespace behind a veth pair, standing for "somewhere beyond the host".
    static func makePeerNamespace() throws {
        removePeerNamespace()
        for command in [
            ["netns", "add", peerNamespace],
            ["link", "add", "cladeit0", "type", "veth", "peer", "name", "cladeit1"],
            ["link", "set", "cladeit1", "netns", peerNamespace],
            ["addr", "add", "10.231.7.1/30", "dev", "cladeit0"],
            ["link", "set", "cladeit0", "up"],
            ["netns", "exec", peerNamespace, "ip", "addr", "add", "\(peerAddress)/30", "dev", "cladeit1"],
            ["netns", "exec", peerNamespace, "ip", "link", "set", "cladeit1", "up"],
            ["netns", "exec", peerNamespace, "ip", "link", "set", "lo", "up"],
        ] {
            _ = try ExternalCommand("ip", command).check()
        }
    }

    static func removePeerNamespace() {
        _ = try? ExternalCommand("ip", ["link", "del", "cladeit0"]).run()
        _ = try? ExternalCommand("ip", ["netns", "del", peerNamespace]).run()
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
    private func expectPrivateMountView(_ cli: CLIHarness, _ child: (id: String, pid: Int32)) throws {
        let root = "/proc/\(child.pid)/root"
        let jail = (try? FileManager.default.destinationOfSymbolicLink(atPath: root)) ?? ""
        #expect(jail.hasSuffix("/sandboxes/\(child.id)/jail"), "QEMU of \(child.id) is not chrooted into its jail: root is \(jail)")
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
            #expect(allowed.contains(point) || point.hasPrefix("/dev/"), "the jail mounts \(point)")
            if point == "/usr" { #expect(options.hasPrefix("ro"), "/usr is mounted \(options) in the jail") }
        }
        #expect(points.contains { $0.0 == "/usr" }, "no /usr mount in the jail: \(points)")
    }

    private static func hostMounts() -> String {
        (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
    }

    @Test func aHostileGuestReachesNothingOnTheHostAndTakesOnlyItsShare() throws {
        // A 0700 store, as `mktemp -d` makes: confinement must not depend on where the store lives.
        let cli = CLIHarness(home: CLIHarness.privateHome("isolation"))
        chmod(cli.home.path, 0o700)
        defer { _ = try? cli.run(["kill", "--all"]) }
        let loopback = try LoopbackServer(port: 18_000 + Int(getpid() % 1000))
        try Self.makePeerNamespace()
        defer { Self.removePeerNamespace() }
        let peers = try [8001, 8002].map { try LoopbackServer(bind: Self.peerAddress, namespace: Self.peerNamespace, port: $0) }
        let bake = try cli.run(["bake", "--tag", "iso"], timeout: 600)
        try #require(bake.status == 0, "\(bake.stderr)")

        // Network policy, per mode.
        let hostAddresses = ["10.0.2.2"] + (Self.hostAddress().map { [$0] } ?? [])
        // The daemon's API, on the host's loopback like every `clade serve` by default.
        let daemon = DaemonProcess(home: cli.home)
        try daemon.start()
        defer { daemon.stop() }
        let neighbour = try fork(cli, "iso")
        let closed = try fork(cli, "iso", ["--network", "none"])
        let listed = try fork(cli, "iso", ["--network", "allow:\(Self.peerAddress)/32:8001"])
        // The probe itself works: the guest fetches from a server inside itself.
        let own = try cli.run(["exec", neighbour.id, "--user", "root", "--", "sh", "-c", "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && httpd -p 8080 -h /tmp/www"])
        #expect(own.status == 0, "\(own.stderr)")
        #expect(try reach(cli, neighbour.id, "127.0.0.1", 8080), "the probe works in the guest")
        for child in [neighbour, closed, listed] {
            for host in hostAddresses {
                #expect(try !reach(cli, child.id, host, loopback.port), "\(child.id) reached the host at \(host)")
            }
            #expect(try !reach(cli, child.id, "10.0.2.2", daemon.port), "\(child.id) reached the daemon's API")
            let status = Self.status(child.pid)
            #expect(status["Seccomp"] == "2", "QEMU of \(child.id) has no seccomp filter: \(status)")
            #expect(status["NoNewPrivs"] == "1")
            let uid = status["Uid"]?.split(whereSeparator: \.isWhitespace).first.flatMap { UInt32($0) } ?? 0
            #expect(uid != 0, "QEMU of \(child.id) runs as root")
            try expectPrivateMountView(cli, child)
        }
        #expect(!Self.hostMounts().contains("clade-jail"), "a jail's mounts leaked into the host's namespace")
        // Beyond the host: outbound reaches the peer on any port, allow only on its listed port, none
        // nowhere.
        #expect(try reach(cli, neighbour.id, Self.peerAddress, 8001) && reach(cli, neighbour.id, Self.peerAddress, 8002), "outbound reaches the peer")
        #expect(try reach(cli, listed.id, Self.peerAddress, 8001), "allow reaches its listed destination")
        #expect(try !reach(cli, listed.id, Self.peerAddress, 8002), "allow refuses a port it does not list")
        #expect(try !reach(cli, closed.id, Self.peerAddress, 8001), "none reaches nothing")
        #expect(Set([neighbour, closed, listed].map { Self.status($0.pid)["Uid"] ?? "" }).count == 3, "each VMM has a uid of its own")
        let listing = try cli.run(["ls", "--json"]).stdout
        #expect(listing.contains("\"network\" : \"none\"") && listing.contains("\"host_firewall\" : true"))

        // CPU quota: a spinning guest with a quarter of a core gets a quarter of a core.
        let before = try execLatency(cli, neighbour.id)
        let quota = try fork(cli, "iso", ["--cpu-quota", "0.25"])
        _ = try cli.run(["exec", quota.id, "--detach", "--", "sh", "-c", "while :; do :; done"])
        Thread.sleep(forTimeInterval: 1)
        let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))
        let start = Self.cpuTicks(quota.pid), started = Date()
        let during = try execLatency(cli, neighbour.id)
        Thread.sleep(forTimeInterval: max(0, 4 - Date().timeIntervalSince(started)))
        let cores = Double(Self.cpuTicks(quota.pid) - start) / ticksPerSecond / Date().timeIntervalSince(started)
        print("isolation: quota'd sandbox used \(String(format: "%.2f", cores)) cores (quota 0.25); neighbour exec \(Int(before)) ms before, \(Int(during)) ms during")
        #expect(cores <= 0.25 * 1.25, "the spinning sandbox used \(cores) cores")
        _ = try cli.run(["kill", quota.id])

        // A fork bomb stays inside its guest, stops at the user group's task cap there, and leaves
        // the agent able to answer and to end it.
        _ = try cli.run(["exec", closed.id, "--detach", "--", "sh", "-c", "b() { b | b & }; b"])
        Thread.sleep(forTimeInterval: 10)
        let bombed = Date()
        let answered = try cli.run(["exec", closed.id, "--user", "root", "--", "cat", "/sys/fs/cgroup/clade-user/pids.events", "/sys/fs/cgroup/clade-user/pids.current"], timeout: 120)
        print("isolation: during a fork bomb the agent answered in \(Int(Date().timeIntervalSince(bombed) * 1000)) ms: \(answered.stdout.split(separator: "\n").joined(separator: ", "))")
        #expect(answered.status == 0, "the agent did not answer during a fork bomb: \(answered.stderr)")
        let hitCap = answered.stdout.split(separator: "\n").first { $0.hasPrefix("max ") }.flatMap { Int($0.dropFirst(4)) } ?? 0
        #expect(hitCap > 0, "the fork bomb never reached the guest's task cap: \(answered.stdout)")
        let ended = try cli.run(["exec", closed.id, "--user", "root", "--", "kill", "-9", "-1"], timeout: 120)
        #expect(ended.status == 0 || ended.status == 137, "the agent could not end the fork bomb: \(ended.stderr)")
        #expect(Self.status(closed.pid)["Threads"].flatMap { Int($0) } ?? 0 < 256, "QEMU's threads stay under its cap")

        let after = try execLatency(cli, neighbour.id)
        print("isolation: neighbour exec median \(Int(before)) ms before the attacks, \(Int(after)) ms after")
        #expect(after < max(before * 3, before + 300), "the neighbour slowed from \(before) ms to \(after) ms")

        #expect((try? ExternalCommand("curl", ["-sf", "http://127.0.0.1:\(daemon.port)/healthz"]).run().status) == 0, "the daemon still answers")
        _ = try cli.run(["kill", "--all"])
        #expect(cli.qemuProcesses().isEmpty)
        let rules = try ExternalCommand("iptables", ["-S"]).check().stdout
        #expect(!rules.split(separator: "\n").contains { $0.hasPrefix("-N CLADE-") && $0 != "-N CLADE-VMM" }, "no sandbox chain left: \(rules)")
        withExtendedLifetime((loopback, peers)) {}
    }

    /// A loop in the snapshot prints a sequence number, the hostname and 16 bytes of
    /// `/dev/urandom` every 10 ms. Its processes are frozen for the capture and thawed only after
    /// each fork's reseed and new hostname, so every fork's lines are the snapshot's lines, then
    /// its own: none printed with the snapshot's identity after the restore, and the first line of
    /// each fork differs from every sibling's.
    @Test func siblingsNeverShareRandomNumbersDrawnAfterTheRestore() throws {
        let cli = CLIHarness(home: CLIHarness.privateHome("rng"))
        defer { _ = try? cli.run(["kill", "--all"]) }
        let loop = #"i=0; while :; do i=$((i+1)); echo "$i $(hostname) $(head -c 16 /dev/urandom | od -An -tx1 | tr -d "[:space:]")" >> /tmp/rng; usleep 10000; done"#
        let warm = "echo '\(loop)' > /tmp/rng.sh && (setsid sh /tmp/rng.sh </dev/null >/dev/null 2>&1 &) && sleep 1"
        let bake = try cli.run(["bake", "--tag", "rng", "--warm", warm], timeout: 600)
        try #require(bake.status == 0, "\(bake.stderr)")
        let forked = try cli.run(["fork", "rng", "-n", "8", "--json"], timeout: 300)
        try #require(forked.status == 0, "\(forked.stderr)")
        let ids = forked.stdout.split(separator: "\n").compactMap { line -> String? in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["id"] as? String
        }
        try #require(ids.count == 8, "\(forked.stdout)")
        Thread.sleep(forTimeInterval: 2)

        struct Line: Equatable { var sequence: Int; var host: String; var random: String }
        var prefixes: [[Line]] = []
        var firstOwn: [String] = []
        for id in ids {
            let output = try cli.run(["exec", id, "--", "cat", "/tmp/rng"])
            let lines = output.stdout.split(separator: "\n").compactMap { text -> Line? in
                let fields = text.split(separator: " ")
                guard fields.count == 3, let sequence = Int(fields[0]) else { return nil }
                return Line(sequence: sequence, host: String(fields[1]), random: String(fields[2]))
            }
            let own = lines.firstIndex { $0.host == id }
            let first = try #require(own, "fork \(id) printed nothing under its own name: \(output.stdout.suffix(300))")
            #expect(lines[first...].allSatisfy { $0.host == id }, "fork \(id) printed under another name after its own")
            prefixes.append(Array(lines[..<first]))
            firstOwn.append(lines[first].random)
        }
        #expect(!(prefixes.first ?? []).isEmpty, "the loop ran before the snapshot")
        #expect(Set(prefixes.map { $0.count }).count == 1, "a fork printed with the snapshot's identity after the restore: prefix lengths \(prefixes.map(\.count))")
        // Every line but the last is the snapshot's own. The last may have been frozen half-made
        // (`$(hostname)` run before the capture, `/dev/urandom` read after the thaw): then its
        // random bytes were drawn after the reseed and must differ in every fork.
        #expect(prefixes.allSatisfy { $0.dropLast() == prefixes[0].dropLast() }, "the forks' lines from before the restore differ")
        let lastLines = prefixes.compactMap(\.last)
        if Set(lastLines.map(\.random)).count > 1 {
            #expect(Set(lastLines.map(\.random)).count == ids.count, "siblings drew the same random bytes across the restore: \(lastLines.map(\.random))")
        }
        #expect(Set(firstOwn).count == ids.count, "siblings drew the same random bytes first: \(firstOwn)")
        print("rng: 8 forks, \(prefixes[0].count) lines from the snapshot each, first own lines all distinct: \(Set(firstOwn).count == ids.count)")
    }

    /// Memory and disk: a guest that fills more memory than it has and one that fills its disk
    /// stay alive (or are reported dead) without touching their neighbour, and a VMM that grows
    /// past its host-memory limit (QEMU told over QMP to allocate 512 MiB, standing for a runaway
    /// emulator) is killed by the kernel and reported with the cause.
    @Test func memoryAndDiskExhaustionStayInsideTheSandbox() throws {
        let cli = CLIHarness(home: CLIHarness.privateHome("isolation-memory"))
        defer { _ = try? cli.run(["kill", "--all"]) }
        let bake = try cli.run(["bake", "--tag", "mem"], timeout: 600)
        try #require(bake.status == 0, "\(bake.stderr)")
        let neighbour = try fork(cli, "mem")
        let before = try execLatency(cli, neighbour.id)

        // More memory than the guest has, under the default host cap (guest RAM + 160 MiB): the
        // guest's own OOM killer answers, or the guest panics and the sandbox is reported dead.
        let hog = try fork(cli, "mem")
        _ = try cli.run(["exec", hog.id, "--user", "root", "--detach", "--", "sh", "-c", "mount -o remount,size=240m /dev/shm; cat /dev/zero > /dev/shm/fill"])
        // A full disk: the guest's filesystem is the image's size, and so is its overlay at most.
        let filler = try fork(cli, "mem")
        let filled = try cli.run(["exec", filler.id, "--user", "root", "--", "sh", "-c", "cat /dev/zero > /root/fill; sync; df -k / | tail -1"], timeout: 300)
        #expect(filled.stdout.contains("100%"), "the guest's disk did not fill: \(filled.stdout) \(filled.stderr)")
        let disk = cli.home.appendingPathComponent("sandboxes/\(filler.id)/disk.qcow2")
        let info = try ExternalCommand("qemu-img", ["info", "-U", "--output", "json", disk.path]).check().stdout
        let virtual = try #require((try JSONSerialization.jsonObject(with: Data(info.utf8)) as? [String: Any])?["virtual-size"] as? Int)
        let actual = try #require(try FileManager.default.attributesOfItem(atPath: disk.path)[.size] as? Int)
        print("isolation: a full guest disk of \(virtual >> 20) MiB left an overlay of \(actual >> 20) MiB")
        #expect(actual <= virtual + (32 << 20), "the overlay grew to \(actual) bytes for a \(virtual)-byte disk")
        #expect(try cli.run(["exec", filler.id, "--", "true"]).status == 0, "the sandbox with a full disk still answers")

        // The agent keeps user processes in a cgroup that leaves the kernel and the agent 64 MiB,
        // so the guest's memory filling up usually ends the filler and the agent stays in
        // control: it answers, removes the file itself (user processes cannot start while tmpfs
        // holds the group's memory), and commands run again. When the kernel's own memory runs
        // out first, the guest may panic (reported dead, with the cause) or stall in its own
        // reclaim (the README's limits section says so); the neighbour must not notice either way.
        Thread.sleep(forTimeInterval: 5)
        var outcome = "unresponsive in its own reclaim"
        if let held = try? cli.run(["files", "ls", hog.id, "/dev/shm"], timeout: 60), held.status == 0 {
            #expect(held.stdout.contains("/dev/shm/fill"), "\(held.stdout)")
            #expect(try cli.run(["files", "rm", hog.id, "/dev/shm/fill"], timeout: 60).status == 0)
            let recovered = try cli.run(["exec", hog.id, "--", "echo", "recovered"], timeout: 60)
            #expect(recovered.stdout == "recovered\n", "the agent removed the file but commands do not run: \(recovered.stderr)")
            outcome = "the agent answered, removed the file, and a command ran again"
        } else if let row = try listing(cli).first(where: { $0["id"] as? String == hog.id }), row["state"] as? String == "dead" {
            let cause = row["death_cause"] as? String
            #expect(cause != nil && cause?.contains("\n") == false, "a dead sandbox says why, in one line: \(row)")
            outcome = "dead: \(cause ?? "no cause")"
        }
        print("isolation: the sandbox that filled its memory: \(outcome)")

        // A runaway VMM: QEMU itself allocates past the cap.
        let runaway = try fork(cli, "mem", ["--host-memory", "288"])
        let qmp = cli.home.appendingPathComponent("sandboxes/\(runaway.id)/qmp.sock").path
        let script = """
            import json, socket
            s = socket.socket(socket.AF_UNIX); s.connect("\(qmp)"); f = s.makefile("rw"); f.readline()
            for command in ({"execute": "qmp_capabilities"}, {"execute": "object-add", "arguments": {"qom-type": "memory-backend-ram", "id": "hog", "size": 512 << 20, "prealloc": True}}):
                f.write(json.dumps(command) + "\\n"); f.flush()
                try: f.readline()
                except OSError: pass
            """
        _ = try ExternalCommand("python3", ["-c", script]).run()
        var cause: String?
        for _ in 0..<50 where cause == nil {
            Thread.sleep(forTimeInterval: 0.2)
            cause = try listing(cli).first { $0["id"] as? String == runaway.id }?["death_cause"] as? String
        }
        print("isolation: runaway VMM: \(cause ?? "not reported")")
        #expect(cause?.contains("memory limit") == true, "the VMM past its cap was not killed and reported")

        let after = try execLatency(cli, neighbour.id)
        print("isolation: neighbour exec median \(Int(before)) ms before the memory and disk attacks, \(Int(after)) ms after")
        #expect(after < max(before * 3, before + 300), "the neighbour slowed from \(before) ms to \(after) ms")
        _ = try cli.run(["kill", "--all"])
        #expect(cli.qemuProcesses().isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/clade/\(runaway.id)") && !FileManager.default.fileExists(atPath: "/sys/fs/cgroup/clade/\(runaway.id)"), "the dead sandbox's control group is left")
    }

    /// A root process in the guest copies the agent's listening socket out of PID 1
    /// (`pidfd_getfd`) and answers some of clade's connections itself: 1 GiB of random bytes, a
    /// 100 MiB line; then it floods the agent's virtio-serial port. Each answer clade reads ends
    /// that one request with an error naming the sandbox, fast, with bounded memory; the daemon and
    /// a neighbour sandbox notice nothing; the attacked sandbox works again once the process exits.
    @Test func aGuestSpeakingGarbageOnItsAgentChannelHurtsOnlyItself() throws {
        let cli = CLIHarness(home: CLIHarness.privateHome("isolation-channel"))
        defer { _ = try? cli.run(["kill", "--all"]) }
        let helper = cli.home.appendingPathComponent("hostile-agent-port")
        let source = CLIHarness.packageRoot.appendingPathComponent("Tests/Fixtures/hostile-agent-port.c")
        let compiled = try ExternalCommand("cc", ["-static", "-O2", "-o", helper.path, source.path]).run()
        try #require(compiled.status == 0, "cannot build the hostile guest program (needs gcc and libc6-dev): \(compiled.stderr)")
        let bake = try cli.run(["bake", "--tag", "channel"], timeout: 600)
        try #require(bake.status == 0, "\(bake.stderr)")
        let daemon = DaemonProcess(home: cli.home)
        try daemon.start()
        defer { daemon.stop() }
        let victim = try fork(cli, "channel")
        let neighbour = try fork(cli, "channel")
        let put = try cli.run(["files", "put", "--mode", "755", victim.id, helper.path, "/hostile"])
        try #require(put.status == 0, "\(put.stderr)")
        let before = try execLatency(cli, neighbour.id)
        let daemonBefore = try daemonExecLatency(daemon, neighbour.id)
        let daemonMemoryBefore = Self.residentKiB(daemon.pid)

        for (mode, limit) in [("garbage", "not an agent message"), ("longline", "longer than 8388608 bytes")] {
            let started = try cli.run(["exec", victim.id, "--user", "root", "--detach", "--", "sh", "-c", "/hostile \(mode) 2 > /tmp/\(mode).log 2>&1"])
            try #require(started.status == 0, "\(started.stderr)")
            Thread.sleep(forTimeInterval: 0.5)
            var refused = 0, attempts = 0
            // The process and the agent take turns accepting; go on until it has had its two.
            while refused < 2, attempts < 30 {
                attempts += 1
                let begun = Date()
                let viaDaemon = attempts % 2 == 0
                let (ok, message) = viaDaemon ? try daemonExec(daemon, victim.id) : try cliExec(cli, victim.id)
                let seconds = Date().timeIntervalSince(begun)
                #expect(seconds < 20, "a \(mode) answer held clade for \(seconds) s")
                if !ok {
                    refused += 1
                    #expect(message.contains("sandbox \(victim.id)") && message.contains(limit),
                            "\(mode) via \(viaDaemon ? "the daemon" : "the CLI"): the error does not name the sandbox and the fault: \(message)")
                }
            }
            #expect(refused == 2, "the hostile process answered \(refused) of \(attempts) requests")
            let log = try cli.run(["exec", victim.id, "--", "cat", "/tmp/\(mode).log"]).stdout
            print("isolation: \(mode): \(refused) of \(attempts) requests reached the hostile process; it says: \(log.split(separator: "\n").joined(separator: " / "))")
        }
        // The serial flood: nothing on the host reads that port, so the writer just blocks.
        let flood = try cli.run(["exec", victim.id, "--user", "root", "--detach", "--", "sh", "-c", "/hostile serial > /tmp/serial.log 2>&1"])
        try #require(flood.status == 0, "\(flood.stderr)")
        Thread.sleep(forTimeInterval: 3)
        let during = try execLatency(cli, neighbour.id)
        #expect(try cliExec(cli, victim.id).ok, "the victim stopped answering during its serial flood")
        _ = try cli.run(["exec", victim.id, "--user", "root", "--", "sh", "-c", "pkill hostile || killall hostile"])

        let after = try execLatency(cli, neighbour.id)
        let daemonAfter = try daemonExecLatency(daemon, neighbour.id)
        let daemonMemoryAfter = Self.residentKiB(daemon.pid)
        print("isolation: neighbour exec \(Int(before)) ms before, \(Int(during)) ms during the serial flood, \(Int(after)) ms after; through the daemon \(Int(daemonBefore)) ms before, \(Int(daemonAfter)) ms after; daemon RSS \(daemonMemoryBefore / 1024) MiB before, \(daemonMemoryAfter / 1024) MiB after")
        #expect(after < before * 3 + 300 && daemonAfter < daemonBefore * 3 + 300, "the neighbour slowed down")
        #expect(daemonMemoryAfter < daemonMemoryBefore + 128 * 1024, "the daemon kept what the guest sent")
        #expect(kill(daemon.pid, 0) == 0, "the daemon died")
        #expect(try cliExec(cli, victim.id).ok && cliExec(cli, victim.id).ok, "the attacked sandbox does not answer after the attack")
        #expect(try daemonExec(daemon, victim.id).ok)

        let killed = try cli.run(["kill", "--all"])
        #expect(killed.status == 0)
        for pid in [victim.pid, neighbour.pid] {
            // Gone, or a zombie its reaper has not collected yet.
            let state = Self.status(pid)["State"] ?? "gone"
            #expect(state == "gone" || state.hasPrefix("Z"), "QEMU \(pid) outlived kill --all: \(state)")
        }
        let left = (try? FileManager.default.contentsOfDirectory(atPath: cli.home.appendingPathComponent("sandboxes").path)) ?? []
        #expect(left.isEmpty, "sandbox directories left behind: \(left)")
    }

    private func cliExec(_ cli: CLIHarness, _ id: String) throws -> (ok: Bool, message: String) {
        let result = try cli.run(["exec", id, "--", "true"])
        return (result.status == 0, result.stderr)
    }

    private func daemonExec(_ daemon: DaemonProcess, _ id: String) throws -> (ok: Bool, message: String) {
        let result = try ExternalCommand("curl", [
            "-s", "-m", "60", "-w", "\n%{http_code}", "-H", "Authorization: Bearer \(daemon.token)", "-H", "Content-Type: application/json",
            "-d", "{\"args\":[\"true\"]}", "http://127.0.0.1:\(daemon.port)/v1/sandboxes/\(id)/exec",
        ]).run()
        let lines = result.stdout.split(separator: "\n")
        return (lines.last == "200", result.stdout)
    }

    private func daemonExecLatency(_ daemon: DaemonProcess, _ id: String, runs: Int = 5) throws -> Double {
        try medianMilliseconds(runs: runs) { try daemonExec(daemon, id) }
    }

    static func residentKiB(_ pid: Int32) -> Int {
        let value = status(pid)["VmRSS"]?.split(separator: " ").first
        return value.flatMap { Int($0) } ?? 0
    }
}
