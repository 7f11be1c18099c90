import CladeStore
import Foundation
import Testing

/// Branch: a running fork becomes a new snapshot; diff branches capture only written pages.
@Suite(.serialized) struct BranchTests {
    static let home = CLIHarness.privateHome("branch")
    let cli = CLIHarness(home: BranchTests.home)

    func json(_ result: CLIHarness.Result) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "stdout: \(result.stdout) stderr: \(result.stderr)")
    }

    func forkOne(_ tag: String) throws -> String {
        let result = try cli.run(["fork", tag, "-n", "1", "--json"])
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        return try #require(try json(result)["id"] as? String)
    }

    func sh(_ id: String, _ script: String) throws -> String {
        try cli.run(["exec", id, "--", "sh", "-c", script]).stdout
    }

    func fingerprint(_ relative: String) throws -> String {
        let url = Self.home.appendingPathComponent(relative)
        let status = try #require(try FileSystem.status(of: url))
        return "\(status.inode) \(try Digest.ofFile(at: url).digest)"
    }

    @Test func diffBranchCarriesMemoryAndDiskAndLeavesEverythingElseAlone() throws {
        #expect(try cli.run(["bake", "--tag", "root"]).status == 0)
        let parentMemory = try fingerprint("snapshots/root/memory")
        let parentDisk = try fingerprint("snapshots/root/layer-0.qcow2")
        let child = try forkOne("root")

        // An idle child has written little.
        let idle = try json(try cli.run(["branch", child, "--tag", "idle", "--json"]))
        let idlePages = try #require(idle["pages_captured"] as? Int)
        #expect(idlePages > 0 && idlePages < 8192, "an idle fork dirtied \(idlePages) pages")

        // Dirty ~32 MiB of tmpfs (memory) plus sentinels, then branch again.
        #expect(try sh(child, "echo mem-sentinel > /tmp/m; echo disk-sentinel > /root/d; head -c 33554432 /dev/urandom > /tmp/noise; sync; echo ok") == "ok\n")
        let busy = try json(try cli.run(["branch", child, "--tag", "b1", "--mode", "diff", "--json"]))
        let busyBytes = try #require(busy["bytes_written"] as? Int)
        #expect(busyBytes >= 32 << 20 && busyBytes < 64 << 20, "dirtying 32 MiB captured \(busyBytes) bytes")
        let full = try json(try cli.run(["branch", child, "--tag", "b1full", "--mode", "full", "--json"]))
        #expect(full["pages_captured"] as? Int == 65536)

        // The branched child runs on; what it writes now is not in the branch.
        #expect(try sh(child, "echo later > /tmp/later; cat /tmp/m") == "mem-sentinel\n")

        for tag in ["b1", "b1full"] {
            let grandchild = try forkOne(tag)
            let seen = try sh(grandchild, "cat /tmp/m /root/d; cmp -s /tmp/noise /tmp/noise && echo noise; ls /tmp/later 2>/dev/null || echo no-later")
            #expect(seen == "mem-sentinel\ndisk-sentinel\nnoise\nno-later\n", "\(tag): \(seen)")
        }
        #expect(try fingerprint("snapshots/root/memory") == parentMemory)
        #expect(try fingerprint("snapshots/root/layer-0.qcow2") == parentDisk)

        // Chain: root → b1 → b2; a fork of b2 sees what each generation wrote.
        let second = try forkOne("b1")
        #expect(try sh(second, "echo gen2 > /root/g2; echo gen2mem > /tmp/g2; sync; echo ok") == "ok\n")
        let b2 = try cli.run(["branch", second, "--tag", "b2"])
        #expect(b2.status == 0, "\(b2.stderr)")
        let info = try json(try cli.run(["snapshot-info", "b2", "--json"]))
        let metadata = try #require(info["metadata"] as? [String: Any])
        #expect((metadata["parent"] as? [String: Any])?["tag"] as? String == "b1")
        // root: 1 layer; the child branched "idle" (2) then "b1" (3); its fork branched "b2" (4).
        #expect((metadata["disk_layers"] as? [Any])?.count == 4)
        // The catalog's lineage, walked both ways.
        #expect(info["ancestors"] as? [String] == ["b1", "root"], "\(info["ancestors"] ?? "none")")
        let descendants = try json(try cli.run(["snapshot-info", "root", "--json"]))["descendants"] as? [String] ?? []
        #expect(Set(descendants).isSuperset(of: ["b1", "b1full", "b2"]), "\(descendants)")
        #expect((descendants.firstIndex(of: "b1") ?? .max) < (descendants.firstIndex(of: "b2") ?? -1), "nearest first: \(descendants)")
        let third = try forkOne("b2")
        #expect(try sh(third, "cat /tmp/m /root/d /root/g2 /tmp/g2") == "mem-sentinel\ndisk-sentinel\ngen2\ngen2mem\n")

        // Compaction: a standalone copy of b2 outlives the whole chain it came from.
        let compact = try cli.run(["compact", "b2", "--to", "flat"])
        #expect(compact.status == 0, "\(compact.stderr)")
        let flat = try json(try cli.run(["snapshot-info", "flat", "--json"]))
        let flatMetadata = try #require(flat["metadata"] as? [String: Any])
        #expect((flatMetadata["disk_layers"] as? [Any])?.count == 1)
        #expect(flatMetadata["parent"] == nil)
        #expect(try cli.run(["rmi", "--cascade", "root"]).status == 0)
        let survivor = try forkOne("flat")
        #expect(try sh(survivor, "cat /tmp/m /root/d /root/g2 /tmp/g2") == "mem-sentinel\ndisk-sentinel\ngen2\ngen2mem\n")
        #expect(try cli.run(["rmi", "--cascade", "flat"]).status == 0)
        _ = try cli.run(["kill", "--all"])
        #expect(cli.qemuProcesses().isEmpty)
    }

    @Test func branchOfAColdBootedSandboxPointsToSnapshot() throws {
        let boot = try cli.run(["boot"])
        let id = boot.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let result = try cli.run(["branch", id, "--tag", "nope"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("--keep-running"), "\(result.stderr)")
        #expect(try cli.run(["kill", id]).status == 0)
    }
}
