#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation
import Testing

/// A hostile guest, with real VMs: the host's loopback and addresses are refused under every
/// network policy, its QEMU is confined (seccomp, a uid or namespaces of its own, a private mount
/// view), and a CPU quota, a fork bomb, memory and disk exhaustion and garbage on the agent's
/// channel leave a neighbour sandbox alone. Each test runs in every configuration clade runs in:
/// as root with a public and with a 0700 store here, as an unprivileged user in
/// ``UnprivilegedIsolationTests``.
@Suite(.serialized, .enabled(if: geteuid() == 0, "needs root: the host firewall, per-sandbox uids and cgroups"))
struct IsolationIntegrationTests {
    @Test(arguments: IsolationConfiguration.asRoot)
    func aHostileGuestReachesNothingOnTheHostAndTakesOnlyItsShare(in configuration: IsolationConfiguration) throws {
        try hostileGuest(configuration)
    }

    @Test(arguments: IsolationConfiguration.asRoot)
    func siblingsNeverShareRandomNumbersDrawnAfterTheRestore(in configuration: IsolationConfiguration) throws {
        try siblingsDrawTheirOwnRandomNumbers(configuration)
    }

    @Test(arguments: IsolationConfiguration.asRoot)
    func memoryAndDiskExhaustionStayInsideTheSandbox(in configuration: IsolationConfiguration) throws {
        try exhaustion(configuration)
    }

    @Test(arguments: IsolationConfiguration.asRoot)
    func aGuestSpeakingGarbageOnItsAgentChannelHurtsOnlyItself(in configuration: IsolationConfiguration) throws {
        try garbageOnTheAgentChannel(configuration)
    }
}

/// The isolation suite as an unprivileged user: the VMMs run as that user in user, network and
/// mount namespaces of their own, behind a packet filter in their network namespace, limited
/// through a control group delegated to the user. The test itself is root: it creates the
/// delegation and the peer namespace, and runs clade as the user.
@Suite(.serialized, .enabled(
    if: geteuid() == 0 && IsolationConfiguration.unprivilegedUser != nil,
    "needs root and CLADE_TEST_UNPRIVILEGED_USER, a non-root account to run clade as (.ci/run creates one)"))
struct UnprivilegedIsolationTests {
    @Test func aHostileGuestReachesNothingOnTheHostAndTakesOnlyItsShare() throws {
        try IsolationIntegrationTests().hostileGuest(.unprivileged)
    }

    @Test func siblingsNeverShareRandomNumbersDrawnAfterTheRestore() throws {
        try IsolationIntegrationTests().siblingsDrawTheirOwnRandomNumbers(.unprivileged)
    }

    @Test func memoryAndDiskExhaustionStayInsideTheSandbox() throws {
        try IsolationIntegrationTests().exhaustion(.unprivileged)
    }

    @Test func aGuestSpeakingGarbageOnItsAgentChannelHurtsOnlyItself() throws {
        try IsolationIntegrationTests().garbageOnTheAgentChannel(.unprivileged)
    }
}

/// The scenarios, each run by both suites.
extension IsolationIntegrationTests {
    func hostileGuest(_ configuration: IsolationConfiguration) throws {
        let cli = try configuration.harness("isolation")
        defer { _ = try? cli.run(["kill", "--all"]) }
        let loopback = try LoopbackServer(port: 18_000 + Int(getpid() % 1000))
        let peer = configuration.peer
        try peer.create()
        defer { peer.remove() }
        let peers = try [8001, 8002].map { try LoopbackServer(bind: configuration.peerAddress, namespace: peer.namespace, port: $0) }
        let bake = try cli.run(["bake", "--tag", "iso"], timeout: 600)
        try #require(bake.status == 0, "\(bake.stderr)")

        // Network policy, per mode.
        let hostAddresses = ["10.0.2.2"] + (Self.hostAddress().map { [$0] } ?? [])
        // The daemon's API, on the host's loopback like every `clade serve` by default.
        let daemon = DaemonProcess(cli)
        try daemon.start()
        defer { daemon.stop() }
        let neighbour = try fork(cli, "iso")
        let closed = try fork(cli, "iso", ["--network", "none"])
        let listed = try fork(cli, "iso", ["--network", "allow:\(configuration.peerAddress)/32:8001"])
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
            if let own = configuration.userUID { #expect(uid == own, "QEMU of \(child.id) runs as \(uid), not as the user") }
            try expectPrivateMountView(cli, child, configuration)
        }
        #expect(!Self.hostMounts().contains("clade-jail"), "a jail's mounts leaked into the host's namespace")
        // Beyond the host: outbound reaches the peer on any port, allow only on its listed port, none
        // nowhere.
        #expect(try reach(cli, neighbour.id, configuration.peerAddress, 8001) && reach(cli, neighbour.id, configuration.peerAddress, 8002), "outbound reaches the peer")
        #expect(try reach(cli, listed.id, configuration.peerAddress, 8001), "allow reaches its listed destination")
        #expect(try !reach(cli, listed.id, configuration.peerAddress, 8002), "allow refuses a port it does not list")
        #expect(try !reach(cli, closed.id, configuration.peerAddress, 8001), "none reaches nothing")
        if configuration.isRoot, let host = Self.hostAddress() {
            // A port the host publishes by translating it to another address (as Docker does for a
            // container's port, kube-proxy for a node port) stays the host's.
            let published = ["-t", "nat", "-A", "OUTPUT", "!", "-d", "127.0.0.0/8", "-p", "tcp", "-m", "addrtype", "--dst-type", "LOCAL", "--dport", "18999",
                             "-j", "DNAT", "--to-destination", "\(configuration.peerAddress):8001"]
            _ = try ExternalCommand("iptables", ["-w"] + published).check()
            defer { _ = try? ExternalCommand("iptables", ["-w"] + published.map { $0 == "-A" ? "-D" : $0 }).run() }
            // The peer answers the host's own address only with a route back to it (added now, as
            // the peer's servers look their name up at start and would wait on a route).
            let gateway = String(peer.hostCIDR.prefix { $0 != "/" })
            _ = try ExternalCommand("ip", ["netns", "exec", peer.namespace, "ip", "route", "add", "default", "via", gateway]).check()
            defer { _ = try? ExternalCommand("ip", ["netns", "exec", peer.namespace, "ip", "route", "del", "default"]).run() }
            let fromHost = try ExternalCommand("curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3", "http://\(host):18999/"]).run()
            #expect(fromHost.stdout == "200", "the translated port does not answer the host itself: \(fromHost.stdout)")
            #expect(try !reach(cli, neighbour.id, host, 18999), "a guest reached a port the host publishes by address translation")
        }
        try changePoliciesWhileRunning(cli, configuration, neighbour: neighbour.id, closed: closed.id, hostAddresses: hostAddresses, hostPort: loopback.port)
        let listing = try cli.run(["ls", "--json"]).stdout
        #expect(listing.contains("\"network\" : \"none\""))
        if configuration.isRoot {
            #expect(Set([neighbour, closed, listed].map { Self.status($0.pid)["Uid"] ?? "" }).count == 3, "each VMM has a uid of its own")
            #expect(listing.contains("\"host_firewall\" : true"))
        } else {
            // Unprivileged, the user's VMMs share its uid; each has namespaces of its own instead.
            let namespaces = [neighbour, closed, listed].map { ConfinementTests.namespace("net", of: String($0.pid)) }
            #expect(Set(namespaces).count == 3 && !namespaces.contains(ConfinementTests.namespace("net", of: "self")), "each VMM has a network namespace of its own")
            #expect(listing.contains("\"namespaces\" : ["), "\(listing)")
        }

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
        // Only root's clade writes the host firewall (an unprivileged one has no rights to, and its
        // suite runs beside root's, whose chains it would see).
        if configuration.isRoot {
            let rules = try ExternalCommand("iptables", ["-S"]).check().stdout
            #expect(!rules.split(separator: "\n").contains { $0.hasPrefix("-N CLADE-") && $0 != "-N CLADE-VMM" }, "no sandbox chain left: \(rules)")
        }
        withExtendedLifetime((loopback, peers)) {}
    }

    /// A loop in the snapshot prints a sequence number, the hostname and 16 bytes of
    /// `/dev/urandom` every 10 ms. Its processes are frozen for the capture and thawed only after
    /// each fork's reseed and new hostname, so every fork's lines are the snapshot's lines, then
    /// its own: none printed with the snapshot's identity after the restore, and the first line of
    /// each fork differs from every sibling's.
    func siblingsDrawTheirOwnRandomNumbers(_ configuration: IsolationConfiguration) throws {
        let cli = try configuration.harness("rng")
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
    func exhaustion(_ configuration: IsolationConfiguration) throws {
        let cli = try configuration.harness("isolation-memory")
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
        try cli.qmp(runaway.id, [["execute": "object-add", "arguments": ["qom-type": "memory-backend-ram", "id": "hog", "size": 512 << 20, "prealloc": true]]], vmMayDie: true)
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
        #expect(!configuration.controlGroupPaths(runaway.id).contains { FileManager.default.fileExists(atPath: $0) }, "the dead sandbox's control group is left")
    }

    /// A root process in the guest copies the agent's listening socket out of PID 1
    /// (`pidfd_getfd`) and answers some of clade's connections itself: 1 GiB of random bytes, a
    /// 100 MiB line; then it floods the agent's virtio-serial port. Each answer clade reads ends
    /// that one request with an error naming the sandbox, fast, with bounded memory; the daemon and
    /// a neighbour sandbox notice nothing; the attacked sandbox works again once the process exits.
    func garbageOnTheAgentChannel(_ configuration: IsolationConfiguration) throws {
        let cli = try configuration.harness("isolation-channel")
        defer { _ = try? cli.run(["kill", "--all"]) }
        let helper = cli.home.appendingPathComponent("hostile-agent-port")
        let source = CLIHarness.packageRoot.appendingPathComponent("Tests/Fixtures/hostile-agent-port.c")
        let compiled = try ExternalCommand("cc", ["-static", "-O2", "-o", helper.path, source.path]).run()
        try #require(compiled.status == 0, "cannot build the hostile guest program (needs gcc and libc6-dev): \(compiled.stderr)")
        let bake = try cli.run(["bake", "--tag", "channel"], timeout: 600)
        try #require(bake.status == 0, "\(bake.stderr)")
        let daemon = DaemonProcess(cli)
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

}
