import Foundation
import Testing

/// clade dying in the middle of a branch or a standby (simulated with CLADE_FAULT crash points,
/// which exit like SIGKILL at a chosen step) leaves no half snapshot, loses no sandbox, leaves
/// none paused for good, and a retry succeeds.
@Suite(.serialized) struct FaultTests {
    static let home = CLIHarness.privateHome("fault")
    let cli = CLIHarness(home: FaultTests.home)

    func crashing(_ point: String) -> CLIHarness {
        var harness = cli
        harness.environment["CLADE_FAULT"] = point
        return harness
    }

    func state(_ id: String) throws -> String? {
        let listed = try cli.run(["ls", "--json"])
        let entries = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]] ?? []
        return entries.first { $0["id"] as? String == id }?["state"] as? String
    }

    func snapshotTags() throws -> [String] {
        let listed = try cli.run(["snapshots", "--json"])
        let entries = try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]] ?? []
        return entries.compactMap { $0["tag"] as? String }
    }

    @Test func interruptedBranchesAndStandbysRecover() throws {
        #expect(try cli.run(["bake", "--tag", "base"]).status == 0)
        let fork = try cli.run(["fork", "base", "-n", "1", "--json"])
        let id = try #require((try JSONSerialization.jsonObject(with: Data(fork.stdout.utf8)) as? [String: Any])?["id"] as? String)
        #expect(try cli.run(["exec", id, "--", "sh", "-c", "echo precious > /tmp/p"]).status == 0)

        for point in ["branch-paused", "branch-staged"] {
            let crashed = try crashing(point).run(["branch", id, "--tag", "b-\(point)"])
            #expect(crashed.status == 137, "\(point): \(crashed.stderr)")
            #expect(try !snapshotTags().contains("b-\(point)"), "\(point): a half snapshot must not be visible")
            #expect(try state(id) == "running", "\(point)")
            let alive = try cli.run(["exec", id, "--timeout", "20", "--", "cat", "/tmp/p"])
            #expect(alive.stdout == "precious\n", "\(point): the sandbox must run again: \(alive.stderr)")
        }
        let hidden = try FileManager.default.contentsOfDirectory(atPath: Self.home.appendingPathComponent("snapshots").path)
        #expect(!hidden.contains { $0.hasPrefix(".staging-") }, "leftovers of interrupted branches are swept: \(hidden)")
        let retry = try cli.run(["branch", id, "--tag", "b-retry"])
        #expect(retry.status == 0, "\(retry.stderr)")
        let grandchild = try cli.run(["fork", "b-retry", "-n", "1", "--json"])
        let grandchildID = try #require((try JSONSerialization.jsonObject(with: Data(grandchild.stdout.utf8)) as? [String: Any])?["id"] as? String)
        #expect(try cli.run(["exec", grandchildID, "--", "cat", "/tmp/p"]).stdout == "precious\n")

        #expect(try cli.run(["standby", id]).status == 0)
        #expect(try state(id) == "standby")
        #expect(try cli.run(["resume", id]).status == 0)

        let captured = try crashing("standby-captured").run(["standby", id])
        #expect(captured.status == 137)
        #expect(try state(id) == "running")
        #expect(try cli.run(["exec", id, "--timeout", "20", "--", "cat", "/tmp/p"]).stdout == "precious\n")

        let recorded = try crashing("standby-recorded").run(["standby", id])
        #expect(recorded.status == 137)
        #expect(try state(id) == "standby")
        #expect(cli.qemuProcesses().count == 1, "only the grandchild's QEMU may remain; the paused one is stopped")
        #expect(try cli.run(["resume", id]).status == 0)
        #expect(try cli.run(["exec", id, "--", "cat", "/tmp/p"]).stdout == "precious\n")

        #expect(try cli.run(["rmi", "--cascade", "base"]).status == 0)
        _ = try cli.run(["kill", "--all"])
        #expect(cli.qemuProcesses().isEmpty)
    }
}
