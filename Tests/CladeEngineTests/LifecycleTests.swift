import CladeEngine
import CladeFakeBackend
import CladeModel
import CladeStore
import CladeVMM
import Foundation
import Testing

/// The real engine on the fake backend: every lifecycle operation, no VM.
@Suite struct LifecycleTests {
    @Test func bakeForkBranchStandbyResumeKill() async throws {
        let fixture = try EngineFixture("lifecycle")
        defer { fixture.remove() }
        let engine = fixture.engine
        let base = try await fixture.bake("base")
        #expect(base.hypervisor.name == "fake")
        #expect(base.machine.devices == ["fake-block", "fake-net", "fake-serial"])
        #expect(base.diskLayers.map(\.format) == ["fakecow"])
        #expect(fixture.backend.machines.count == 0, "the baked VM must be stopped")

        let outcomes = try await engine.forks.fork(tag: "base", count: 3)
        let children = outcomes.compactMap(\.record)
        #expect(children.count == 3, "\(outcomes.compactMap(\.error))")
        for child in children {
            #expect(try await engine.sandboxes.exec(id: child.id, argv: ["cat", "/sentinel"]).stdout == "baked")
            #expect(try await engine.sandboxes.exec(id: child.id, argv: ["hostname"]).stdout == "\(child.id)\n", "each fork gets its own identity")
            #expect(child.snapshot == "base")
            #expect(child.layerCount == 1)
        }
        let forkOverlay = try String(contentsOf: fixture.home.sandboxes.appendingPathComponent("\(children[0].id)/disk.qcow2"), encoding: .utf8)
        #expect(forkOverlay.contains("backing=layer-0.qcow2"), "a fork's overlay sits on the snapshot's layer by relative name")

        // Branch one child after it wrote a file; a fork of the branch sees the write.
        let source = children[0]
        fixture.backend.machines.get(fixture.home.sandboxes.appendingPathComponent(source.id))?.guest.write("/branched", "yes")
        let (branch, report) = try await engine.branches.branch(id: source.id, tag: "b1", mode: .diff)
        #expect(branch.parent?.tag == "base")
        #expect(branch.branchedFrom == source.id)
        #expect(branch.diskLayers.count == 2)
        #expect(report.pagesCaptured == 1)
        #expect(try await engine.sandboxes.get(id: source.id).state == .running, "the branched sandbox runs on")
        let grandchild = try #require(try await engine.forks.fork(tag: "b1", count: 1).first?.record)
        #expect(try await engine.sandboxes.exec(id: grandchild.id, argv: ["cat", "/branched"]).stdout == "yes")

        // Standby a fork: its memory file is shared with the snapshot, so the unshare guard copies it first.
        let snapshotMemory = fixture.home.snapshots.appendingPathComponent("base/memory")
        let before = try Digest.ofFile(at: snapshotMemory).digest
        let standby = try await engine.standby.enter(id: children[1].id)
        #expect(standby.unshared)
        #expect(try Digest.ofFile(at: snapshotMemory).digest == before, "the snapshot's memory file was written through a fork")
        #expect(try await engine.sandboxes.get(id: children[1].id).state == .standby)
        await #expect(throws: EngineError.self) { try await engine.sandboxes.exec(id: children[1].id, argv: ["true"]) }
        let resumed = try await engine.standby.resume(id: children[1].id)
        #expect(resumed.state == .running)
        #expect(resumed.agentPort == children[1].agentPort, "resume keeps the agent endpoint")
        #expect(try await engine.sandboxes.exec(id: children[1].id, argv: ["cat", "/sentinel"]).stdout == "baked")

        // Pause and unpause.
        try await engine.sandboxes.pause(id: children[2].id)
        #expect(try await engine.sandboxes.get(id: children[2].id).state == .paused)
        try await engine.sandboxes.unpause(id: children[2].id)

        for record in try await engine.sandboxes.list() { try await engine.sandboxes.kill(id: record.id) }
        #expect(fixture.backend.machines.count == 0)
        #expect(fixture.directoryEntries(fixture.home.sandboxes).isEmpty)
        #expect(try SandboxCatalog(home: fixture.home).indexed().isEmpty)
        #expect(try OperationJournal(home: fixture.home).entries().isEmpty)
    }

    @Test func oneChildFailingLeavesTheOthersRunning() async throws {
        let fixture = try EngineFixture("one-fails")
        defer { fixture.remove() }
        try await fixture.bake("base")
        fixture.backend.failNextRestores(1)
        let outcomes = try await fixture.engine.forks.fork(tag: "base", count: 4)
        let running = outcomes.compactMap(\.record)
        let failures = outcomes.compactMap(\.error)
        #expect(running.count == 3)
        #expect(failures.count == 1)
        #expect(failures.first?.contains("injected restore failure") == true, "\(failures)")
        // Nothing of the failed child is left: no machine, directory or catalog row.
        #expect(fixture.backend.machines.count == 3)
        #expect(fixture.directoryEntries(fixture.home.sandboxes) == running.map(\.id).sorted())
        #expect(try SandboxCatalog(home: fixture.home).indexed().map(\.id).sorted() == running.map(\.id).sorted())
        for record in running {
            #expect(try await fixture.engine.sandboxes.exec(id: record.id, argv: ["cat", "/sentinel"]).stdout == "baked")
        }
        #expect(try OperationJournal(home: fixture.home).entries().isEmpty)
    }

    @Test func aBackendWithoutDirtyPageCaptureRefusesDiffBranchesUpFront() async throws {
        let fixture = try EngineFixture("no-dirty", capabilities: BackendCapabilities.all.subtracting(.dirtyPageCapture))
        defer { fixture.remove() }
        try await fixture.bake("base")
        let child = try #require(try await fixture.engine.forks.fork(tag: "base", count: 1).first?.record)
        await #expect {
            try await fixture.engine.branches.branch(id: child.id, tag: "diff", mode: .diff)
        } throws: { error in
            guard case VMMError.unsupported(let backend, let operation) = error else { return false }
            return backend == "fake" && operation.contains("capture dirty pages")
        }
        #expect(fixture.directoryEntries(fixture.home.snapshots) == ["base"], "a refused branch leaves no staging or tag")
        #expect(fixture.directoryEntries(fixture.home.sandboxes.appendingPathComponent(child.id)).allSatisfy { !$0.hasPrefix("layer-1") })
        // A fork's standby needs dirty pages too.
        await #expect(throws: VMMError.self) { try await fixture.engine.standby.enter(id: child.id) }
        #expect(try await fixture.engine.sandboxes.get(id: child.id).state == .running)
        // What the backend can do still works.
        let (full, _) = try await fixture.engine.branches.branch(id: child.id, tag: "full", mode: .full)
        #expect(full.parent?.tag == "base")
        #expect(try OperationJournal(home: fixture.home).entries().isEmpty)
    }

    @Test func aFailedResumeStaysOnStandbyAndCanBeRetried() async throws {
        let fixture = try EngineFixture("resume-fails")
        defer { fixture.remove() }
        try await fixture.bake("base")
        let child = try #require(try await fixture.engine.forks.fork(tag: "base", count: 1).first?.record)
        await #expect(throws: EngineError.self) { try await fixture.engine.standby.resume(id: child.id) }  // running, not standby
        try await fixture.engine.standby.enter(id: child.id)
        #expect(fixture.backend.machines.count == 0)
        fixture.backend.failNextRestores(1)
        await #expect(throws: EngineError.self) { try await fixture.engine.standby.resume(id: child.id) }
        #expect(try await fixture.engine.sandboxes.get(id: child.id).state == .standby)
        #expect(fixture.backend.machines.count == 0, "a failed resume leaves no machine behind")
        _ = try await fixture.engine.standby.resume(id: child.id)
        #expect(try await fixture.engine.sandboxes.exec(id: child.id, argv: ["cat", "/sentinel"]).stdout == "baked")
    }

    @Test func coldBootedStandbyNeedsNoUnshare() async throws {
        let fixture = try EngineFixture("cold-standby")
        defer { fixture.remove() }
        let record = try await fixture.engine.sandboxes.boot(fixture.boot)
        let report = try await fixture.engine.standby.enter(id: record.id)
        #expect(!report.unshared, "a cold-booted sandbox's memory file is its own")
        #expect(report.pagesCaptured == 0)
        _ = try await fixture.engine.standby.resume(id: record.id)
        try await fixture.engine.sandboxes.kill(id: record.id)
    }

    @Test func compactFlattensTheChainIntoAStandaloneSnapshot() async throws {
        let fixture = try EngineFixture("compact")
        defer { fixture.remove() }
        try await fixture.bake("base")
        let child = try #require(try await fixture.engine.forks.fork(tag: "base", count: 1).first?.record)
        _ = try await fixture.engine.branches.branch(id: child.id, tag: "b1", mode: .diff)
        let compacted = try await fixture.engine.snapshots.compact("b1", to: "flat")
        #expect(compacted.parent == nil)
        #expect(compacted.diskLayers.count == 1)
        let layer = try String(contentsOf: fixture.home.snapshots.appendingPathComponent("flat/layer-0.qcow2"), encoding: .utf8)
        #expect(layer.contains("backing=../../blobs/sha256/"), "flattened onto the rootfs blob by relative name")
        let forked = try #require(try await fixture.engine.forks.fork(tag: "flat", count: 1).first?.record)
        #expect(try await fixture.engine.sandboxes.exec(id: forked.id, argv: ["cat", "/sentinel"]).stdout == "baked")
    }
}
