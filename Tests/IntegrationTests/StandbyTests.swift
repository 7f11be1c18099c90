import CladeStore
import Foundation
import Testing

/// Standby and resume, and the unshare guard protecting a snapshot shared by siblings.
@Suite(.serialized) struct StandbyTests {
    static let home = CLIHarness.privateHome("standby")
    let cli = CLIHarness(home: StandbyTests.home)

    func sh(_ id: String, _ script: String) throws -> CLIHarness.Result {
        try cli.run(["exec", id, "--", "sh", "-c", script])
    }

    func fingerprint(_ relative: String) throws -> String {
        let url = Self.home.appendingPathComponent(relative)
        let status = try #require(try FileSystem.status(of: url))
        return "\(status.inode) \(try Digest.ofFile(at: url).digest)"
    }

    func endpoint(_ id: String) throws -> String? {
        let listed = try cli.run(["ls", "--json"])
        let entries = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]] ?? []
        return entries.first { $0["id"] as? String == id }.flatMap { "\($0["state"] ?? "") \($0["agent_endpoint"] ?? "")" }
    }

    @Test func standbyOfAForkUnsharesItsMemoryAndResumeContinuesIt() throws {
        #expect(try cli.run(["bake", "--tag", "shared"]).status == 0)
        let fork = try cli.run(["fork", "shared", "-n", "2", "--json"])
        let ids = fork.stdout.split(separator: "\n").compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["id"] as? String }
        try #require(ids.count == 2)
        let (first, second) = (ids[0], ids[1])
        #expect(try FileSystem.status(of: Self.home.appendingPathComponent("snapshots/shared/memory"))?.linkCount == 3)
        let snapshotBefore = try fingerprint("snapshots/shared/memory")
        let siblingBefore = try fingerprint("sandboxes/\(second)/memory")

        let started = try sh(first, "echo kept > /tmp/kept; (i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.2; done) >/dev/null 2>&1 & sleep 1; cat /tmp/counter")
        let before = Int(started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        #expect(before > 0)
        let endpointBefore = try endpoint(first)

        let standby = try cli.run(["standby", first, "--json"])
        #expect(standby.status == 0, "\(standby.stderr)")
        #expect(standby.stdout.contains("\"unshared\" : true"))
        #expect(try endpoint(first)?.hasPrefix("standby") == true)
        #expect(try sh(first, "true").stderr.contains("clade resume \(first)"))
        // The guard gave the fork a private inode; the snapshot and the sibling are untouched.
        #expect(try FileSystem.status(of: Self.home.appendingPathComponent("sandboxes/\(first)/memory"))?.linkCount == 1)
        #expect(try fingerprint("snapshots/shared/memory") == snapshotBefore)
        #expect(try fingerprint("sandboxes/\(second)/memory") == siblingBefore)
        #expect(try sh(second, "echo alive").stdout == "alive\n")

        #expect(try cli.run(["resume", first]).status == 0)
        #expect(try endpoint(first) == endpointBefore, "same id and agent endpoint after resume")
        Thread.sleep(forTimeInterval: 1)
        let after = try sh(first, "cat /tmp/kept /tmp/counter")
        let lines = after.stdout.split(separator: "\n")
        #expect(lines.first == "kept")
        #expect((lines.last.flatMap { Int($0) } ?? 0) > before, "the counter loop must continue: \(after.stdout)")

        // A second standby/resume writes the now-private file in place.
        #expect(try cli.run(["standby", first]).status == 0)
        #expect(try cli.run(["resume", first]).status == 0)
        #expect(try sh(first, "cat /tmp/kept").stdout == "kept\n")
        #expect(try fingerprint("snapshots/shared/memory") == snapshotBefore)
        #expect(try cli.run(["rmi", "--cascade", "shared"]).status == 0)
        #expect(cli.sandboxDirectories().isEmpty)
    }

    /// Disk-only standby of a fork: nothing of its memory is kept; resume boots it from its disk
    /// as itself (files kept, a new boot), and the snapshot's sealed memory file is untouched.
    @Test func diskOnlyStandbyBootsTheForkFromItsDisk() throws {
        if try cli.run(["snapshots"]).stdout.contains("shared") == false {
            #expect(try cli.run(["bake", "--tag", "shared"]).status == 0)
        }
        let forked = try cli.run(["fork", "shared", "--json"])
        let id = try #require((try? JSONSerialization.jsonObject(with: Data(forked.stdout.utf8)) as? [String: Any])?["id"] as? String, "\(forked.stderr)")
        let snapshotBefore = try fingerprint("snapshots/shared/memory")
        let bootBefore = try sh(id, "echo persisted > /root/marker; cat /proc/sys/kernel/random/boot_id").stdout
        let endpointBefore = try endpoint(id)
        let standby = try cli.run(["standby", id, "--disk-only"])
        #expect(standby.status == 0, "\(standby.stderr)")
        #expect(try endpoint(id)?.hasPrefix("standby") == true)
        #expect(!FileManager.default.fileExists(atPath: Self.home.appendingPathComponent("sandboxes/\(id)/memory").path), "a disk-only standby keeps no memory")
        let resumed = try cli.run(["resume", id], timeout: 300)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let after = try sh(id, "cat /root/marker; cat /proc/sys/kernel/random/boot_id; hostname").stdout.split(separator: "\n").map(String.init)
        #expect(after.first == "persisted", "the file written before the standby: \(after)")
        #expect(after.count == 3 && after[1] + "\n" != bootBefore, "resume booted anew: \(after) vs \(bootBefore)")
        #expect(after.last == id, "the booted guest keeps its sandbox's name")
        #expect(try endpoint(id) == endpointBefore, "same agent endpoint")
        #expect(try fingerprint("snapshots/shared/memory") == snapshotBefore, "the snapshot's memory file changed")
        #expect(try cli.run(["kill", id]).status == 0)
    }

    @Test func coldBootedSandboxStandbyAndResume() throws {
        let id = try cli.run(["boot"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try sh(id, "echo cold > /tmp/x").status == 0)
        // running ⇄ paused; a paused sandbox refuses exec with its state, and `ls` leaves it paused.
        #expect(try cli.run(["pause", id]).status == 0)
        #expect(try endpoint(id)?.hasPrefix("paused") == true)
        let refused = try sh(id, "true")
        #expect(refused.status != 0 && refused.stderr.contains("is paused"), "\(refused.stderr)")
        #expect(try cli.run(["unpause", id]).status == 0)
        #expect(try sh(id, "cat /tmp/x").stdout == "cold\n")
        let unpauseRunning = try cli.run(["unpause", id])
        #expect(unpauseRunning.status != 0 && unpauseRunning.stderr.contains("not paused"))
        #expect(try cli.run(["standby", id]).status == 0)
        let again = try cli.run(["standby", id])
        #expect(again.status != 0 && again.stderr.contains("standby"), "\(again.stderr)")
        #expect(try cli.run(["resume", id]).status == 0)
        #expect(try sh(id, "cat /tmp/x").stdout == "cold\n")
        let resumeRunning = try cli.run(["resume", id])
        #expect(resumeRunning.status != 0 && resumeRunning.stderr.contains("is running"), "\(resumeRunning.stderr)")
        #expect(try cli.run(["kill", id]).status == 0)
        #expect(cli.qemuProcesses().isEmpty)
    }
}
