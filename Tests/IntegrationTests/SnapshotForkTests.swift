import CladeStore
import Foundation
import Testing

/// Snapshot and fork with real VMs: isolation (seed 004's test, extended), siblings,
/// delete semantics and bad input.
@Suite(.serialized) struct SnapshotForkTests {
    static let home = CLIHarness.privateHome("forktest")
    let cli = CLIHarness(home: SnapshotForkTests.home)

    /// Inode and SHA-256 of a file: what must not change while forks come and go.
    struct Fingerprint: Equatable, CustomStringConvertible {
        let inode: UInt64
        let digest: Digest
        var description: String { "inode \(inode) \(digest.short)" }
    }

    func fingerprint(_ relative: String) throws -> Fingerprint {
        let url = Self.home.appendingPathComponent(relative)
        let status = try #require(try FileSystem.status(of: url))
        return Fingerprint(inode: status.inode, digest: try Digest.ofFile(at: url).digest)
    }

    func bake(_ tag: String) throws {
        if FileManager.default.fileExists(atPath: Self.home.appendingPathComponent("snapshots/\(tag)/snapshot.json").path) { return }
        let result = try cli.run(["bake", "--tag", tag, "--warm", "echo baked > /root/baked; sync"])
        #expect(result.status == 0, "bake failed: \(result.stderr)")
    }

    func fork(_ tag: String, _ count: Int) throws -> [[String: Any]] {
        let result = try cli.run(["fork", tag, "-n", "\(count)", "--json"])
        #expect(result.status == 0, "fork failed: \(result.stderr)")
        return result.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    func exec(_ id: String, _ script: String) throws -> CLIHarness.Result {
        try cli.run(["exec", id, "--", "sh", "-c", script])
    }

    @Test func forkIsolatesChildrenFromTheSnapshotAndEachOther() throws {
        try bake("iso")
        let memoryBefore = try fingerprint("snapshots/iso/memory")
        let diskBefore = try fingerprint("snapshots/iso/layer-0.qcow2")

        let first = try fork("iso", 1)
        let child = try #require(first.first?["id"] as? String)
        #expect(first.first?["memory"] as? String == "hardlink")
        #expect(try FileSystem.status(of: Self.home.appendingPathComponent("sandboxes/\(child)/memory"))?.inode == memoryBefore.inode)
        #expect(try exec(child, "cat /root/baked").stdout == "baked\n", "the child must see the snapshot's disk")
        let write = try exec(child, "echo mem > /tmp/mem-sentinel; echo disk > /root/disk-sentinel; head -c 20000000 /dev/urandom > /tmp/noise; sync; cat /tmp/mem-sentinel /root/disk-sentinel")
        #expect(write.stdout == "mem\ndisk\n")
        #expect(try fingerprint("snapshots/iso/memory") == memoryBefore)
        #expect(try fingerprint("snapshots/iso/layer-0.qcow2") == diskBefore)

        #expect(try cli.run(["kill", child]).status == 0)
        #expect(try fingerprint("snapshots/iso/memory") == memoryBefore)
        #expect(try fingerprint("snapshots/iso/layer-0.qcow2") == diskBefore)

        let second = try #require(try fork("iso", 1).first?["id"] as? String)
        let look = try exec(second, "ls /tmp/mem-sentinel /root/disk-sentinel 2>&1; cat /root/baked")
        #expect(look.stdout.contains("No such file"), "a new child must not see the old child's files: \(look.stdout)")
        #expect(!look.stdout.contains("\nmem") && look.stdout.hasSuffix("baked\n"))
        #expect(try cli.run(["kill", second]).status == 0)
        #expect(try fingerprint("snapshots/iso/memory") == memoryBefore)
        #expect(try fingerprint("snapshots/iso/layer-0.qcow2") == diskBefore)
        #expect(cli.qemuProcesses().isEmpty)
    }

    @Test func siblingsGetTheirOwnIdentityAndSeeOnlyTheirOwnWrites() throws {
        try bake("iso")
        let children = try fork("iso", 4).compactMap { $0["id"] as? String }
        #expect(children.count == 4)
        #expect(try FileSystem.status(of: Self.home.appendingPathComponent("snapshots/iso/memory"))?.linkCount == 5)
        for id in children {
            // The first command after the fork already finds the new hostname in /etc/hosts (the
            // agent rewrites it just after confirming the identity; commands wait for that).
            let first = try exec(id, "grep '^127.0.1.1' /etc/hosts; echo \(id) > /tmp/who; echo \(id) > /root/who; sync")
            #expect(first.stdout == "127.0.1.1\t\(id)\n", "/etc/hosts of a fresh fork: \(first.stdout) \(first.stderr)")
        }
        // A fork starts with the network its snapshot configured: IPv6 autoconfiguration finished
        // at boot (no duplicate address detection or router solicitation delay to redo after each
        // restore), and no background zeroing of inode tables on the root filesystem.
        let settled = try exec(
            children[0],
            "cat /proc/sys/net/ipv6/conf/eth0/dad_transmits /proc/sys/net/ipv6/conf/eth0/router_solicitation_delay; grep -c ' / ext4 .*noinit_itable' /proc/mounts; awk '$6 == \"eth0\" && $1 ~ /^fec0/ {print $5}' /proc/net/if_inet6")
        #expect(settled.stdout == "0\n0\n1\n00\n", "network and root of a fresh fork: \(settled.stdout) \(settled.stderr)")
        // The agent's warm-up command before the snapshot (SnapshotWarmUp) leaves nothing listed.
        let listed = try cli.run(["ps", children[0], "--json"])
        let rows = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(listed.status == 0 && !rows.isEmpty, "processes of a fork: \(listed.stdout) \(listed.stderr)")
        #expect(!rows.contains { ($0["args"] as? [String]) == ["/bin/sh", "-c", ":"] }, "the warm-up command is listed: \(listed.stdout)")
        // A reader that stops early (`| head`) ends clade with 141, as SIGPIPE would, not a crash.
        let piped = try shellPipeline("\"$CLADE\" exec \(children[1]) -- sh -c 'yes | head -c 300000' | head -c 4; echo \" ${PIPESTATUS[0]}\"")
        #expect(piped.stdout == "y\ny\n 141\n" && !piped.stderr.contains("Fatal error"), "clade exec into a closed pipe: \(piped.stdout) \(piped.stderr)")
        var hostnames: Set<String> = [], macs: Set<String> = [], randoms: Set<String> = [], generations: Set<String> = []
        for id in children {
            let seen = try exec(id, "cat /tmp/who /root/who; hostname; cat /sys/class/net/eth0/address; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'")
            let lines = seen.stdout.split(separator: "\n").map(String.init)
            #expect(lines.count == 5, "unexpected output: \(seen.stdout) \(seen.stderr)")
            guard lines.count == 5 else { continue }
            #expect(lines[0] == id && lines[1] == id, "\(id) must see only its own files")
            hostnames.insert(lines[2])
            macs.insert(lines[3])
            randoms.insert(lines[4])
            let ping = try AgentSocket.request(port: port(of: id), ["action": "ping"])
            generations.insert(ping["generation"] as? String ?? "")
        }
        #expect(hostnames.count == 4 && macs.count == 4 && randoms.count == 4 && generations.count == 4)
        #expect(!generations.contains(""))
        #expect(try cli.run(["kill"] + children).status == 0)
    }

    /// Runs `script` in bash with `$CLADE` naming the clade binary and this suite's store.
    func shellPipeline(_ script: String) throws -> (stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", script]
        process.environment = ProcessInfo.processInfo.environment.merging(["CLADE": CLIHarness.binary.path, "CLADE_HOME": Self.home.path]) { _, new in new }
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let stdout = output.fileHandleForReading.readDataToEndOfFile()
        let stderr = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self))
    }

    func port(of id: String) throws -> Int {
        let listed = try cli.run(["ls", "--json"])
        let entries = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]] ?? []
        let endpoint = try #require(entries.first { $0["id"] as? String == id }?["agent_endpoint"] as? String)
        return try #require(Int(endpoint.split(separator: ":").last ?? ""))
    }

    @Test func deletingASnapshotUnderLoadKeepsItsForksRunning() throws {
        try bake("doomed")
        let children = try fork("doomed", 2).compactMap { $0["id"] as? String }
        #expect(children.count == 2)
        let refused = try cli.run(["rmi", "doomed"])
        #expect(refused.status != 0)
        #expect(children.allSatisfy { refused.stderr.contains($0) }, "the refusal must list the dependents: \(refused.stderr)")
        #expect(try cli.run(["rmi", "--force", "doomed"]).status == 0)
        for id in children {
            let result = try exec(id, "cat /root/baked; echo more > /root/after; cat /root/after")
            #expect(result.stdout == "baked\nmore\n", "a fork must keep working after rmi --force: \(result.stderr)")
        }
        let again = try cli.run(["fork", "doomed", "-n", "1"])
        #expect(again.status != 0)
        #expect(again.stderr.contains("no snapshot named 'doomed'"))
        #expect(try cli.run(["kill"] + children).status == 0)
    }

    @Test func cascadeRemovesTheSnapshotAndKillsItsForks() throws {
        try bake("cascaded")
        let child = try #require(try fork("cascaded", 1).first?["id"] as? String)
        let result = try cli.run(["rmi", "--cascade", "cascaded"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(!cli.sandboxDirectories().contains(child))
        #expect(!FileManager.default.fileExists(atPath: Self.home.appendingPathComponent("snapshots/cascaded").path))
    }

    @Test func snapshotKeepRunningContinuesTheSandbox() throws {
        let boot = try cli.run(["boot"])
        let id = boot.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try exec(id, "echo before > /tmp/state")
        let snap = try cli.run(["snapshot", id, "--tag", "kept", "--keep-running"])
        #expect(snap.status == 0, "\(snap.stderr)")
        let after = try exec(id, "cat /tmp/state; echo later >> /tmp/state")
        #expect(after.stdout == "before\n", "the sandbox keeps its state and id: \(after.stderr)")
        // The running sandbox writes a private view: a fork of the snapshot does not see "later".
        let child = try #require(try fork("kept", 1).first?["id"] as? String)
        #expect(try exec(child, "cat /tmp/state").stdout == "before\n")
        #expect(try cli.run(["rmi", "--cascade", "kept"]).status == 0)
        #expect(cli.sandboxDirectories().isEmpty)
    }

    @Test func badForkRequestsFailBeforeAnyVMStarts() throws {
        try bake("iso")
        let cases: [([String], String)] = [
            (["fork", "nope", "-n", "1"], "no snapshot named 'nope'"),
            (["fork", "iso", "-n", "0"], "-n must be between 1 and"),
            (["fork", "iso", "-n", "100000"], "-n must be between 1 and"),
            (["fork", "../iso", "-n", "1"], "not a valid name"),
            (["fork", "a/b", "-n", "1"], "not a valid name"),
        ]
        for (arguments, message) in cases {
            let result = try cli.run(arguments)
            #expect(result.status != 0)
            #expect(result.stderr.contains(message), "\(arguments): \(result.stderr)")
        }
        // A damaged snapshot: copy "iso" and truncate the copy's memory file.
        let damaged = Self.home.appendingPathComponent("snapshots/damaged")
        try? FileSystem.remove(damaged)
        _ = try ExternalCommand("cp", ["-a", Self.home.appendingPathComponent("snapshots/iso").path, damaged.path]).check()
        let metadata = damaged.appendingPathComponent("snapshot.json")
        let text = try String(contentsOf: metadata, encoding: .utf8).replacingOccurrences(of: "\"tag\" : \"iso\"", with: "\"tag\" : \"damaged\"")
        chmod(metadata.path, 0o644)
        try text.write(to: metadata, atomically: true, encoding: .utf8)
        let memory = damaged.appendingPathComponent("memory")
        chmod(memory.path, 0o644)
        #expect(truncate(memory.path, 1 << 20) == 0)
        let truncated = try cli.run(["fork", "damaged", "-n", "2"])
        #expect(truncated.status != 0)
        #expect(truncated.stderr.contains("truncated"), "\(truncated.stderr)")
        #expect(truncated.stderr.contains("clade rmi damaged"))
        try FileSystem.remove(memory)
        let missing = try cli.run(["fork", "damaged", "-n", "1"])
        #expect(missing.stderr.contains("memory file") && missing.stderr.contains("missing"), "\(missing.stderr)")
        #expect(cli.sandboxDirectories().isEmpty)
        #expect(cli.qemuProcesses().isEmpty)
        #expect(try cli.run(["rmi", "damaged"]).status == 0)
    }
}

/// `clade bench fork` runs end to end and reports every figure; speed targets are judged
/// from its output, not asserted here, because CI machines are noisy.
@Suite(.serialized) struct ForkBenchSmokeTests {
    @Test func benchForkReportsEveryApproachAndRatio() throws {
        let cli = CLIHarness(home: SnapshotForkTests.home)
        let result = try cli.run(["bench", "fork", "-n", "1", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
        let figures = try #require(report["figures"] as? [[String: Any]])
        #expect(Set(figures.compactMap { $0["name"] as? String }) == ["cold_boot", "clade_fork", "fork_full_copy", "qcow2_loadvm", "qemu_floor"])
        #expect(figures.allSatisfy { $0["succeeded"] as? Int == 1 })
        let fork = try #require(figures.first { $0["name"] as? String == "clade_fork" })
        #expect(fork["memory_bytes_copied_per_child"] as? Int == 0)
        let ratios = try #require(report["ratios"] as? [String: Double])
        #expect(ratios.keys.contains("cold_boot/clade_fork"))
        #expect((report["idle_private_guest_ram_bytes"] as? [Int])?.count == 1)
        if report["accelerator"] as? String == "tcg" {
            let blocks = report["translated_blocks_per_fork"] as? [Int] ?? []
            #expect(blocks.count == 1 && blocks.allSatisfy { $0 > 1_000 }, "translated blocks per fork: \(blocks)")
        }
        #expect(cli.sandboxDirectories().isEmpty)
        let remaining = (try? FileManager.default.contentsOfDirectory(atPath: SnapshotForkTests.home.appendingPathComponent("snapshots").path)) ?? []
        #expect(remaining.allSatisfy { !$0.hasPrefix("bench-") }, "the bench must remove its snapshot: \(remaining)")
    }
}
