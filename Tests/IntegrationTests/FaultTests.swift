import CladeModel
import CladeStore
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

    /// A fork or a bake whose clade process dies after starting VMs is rolled back from the
    /// catalog's journal by the next clade command: its VMs are stopped and their files removed
    /// (nobody was told their ids, so nobody would ever kill them), and the catalog matches.
    @Test func interruptedForksAndBakesAreRolledBackFromTheJournal() throws {
        let store = CladeHome(root: Self.home)
        #expect(try cli.run(["bake", "--tag", "journal"]).status == 0)
        let kept = try cli.run(["fork", "journal", "-n", "1", "--json"])
        let keptID = try #require((try JSONSerialization.jsonObject(with: Data(kept.stdout.utf8)) as? [String: Any])?["id"] as? String)

        let crashedFork = try crashing("fork-children-started").run(["fork", "journal", "-n", "2"])
        #expect(crashedFork.status == 137, "\(crashedFork.stderr)")
        #expect(cli.qemuProcesses().count == 3, "the interrupted fork's two children were running when it died")
        #expect(try OperationJournal(home: store).entries().map(\.kind) == ["fork"])

        let listed = try cli.run(["ls", "--json"])
        let ids = (try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
        #expect(ids == [keptID], "only the completed fork's child remains: \(ids)")
        #expect(cli.qemuProcesses().count == 1)
        #expect(try SandboxCatalog(home: store).indexed().map(\.id) == [keptID])
        #expect(try SandboxCatalog(home: store).ids() == [keptID])
        #expect(try OperationJournal(home: store).entries().isEmpty)

        let crashedBake = try crashing("bake-booted").run(["bake", "--tag", "half"])
        #expect(crashedBake.status == 137, "\(crashedBake.stderr)")
        #expect(cli.qemuProcesses().count == 2, "the interrupted bake's VM was running when it died")
        #expect(try !snapshotTags().contains("half"))
        #expect(cli.qemuProcesses().count == 1, "listing snapshots rolled the bake back")
        #expect(try SandboxCatalog(home: store).indexed().map(\.id) == [keptID])

        #expect(try cli.run(["exec", keptID, "--", "true"]).status == 0)
        #expect(try cli.run(["rmi", "--cascade", "journal"]).status == 0)
        #expect(cli.qemuProcesses().isEmpty)
        #expect(try SnapshotCatalog(home: store).list().isEmpty)
    }
}
