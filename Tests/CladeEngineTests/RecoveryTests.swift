import CladeEngine
import CladeFakeBackend
import CladeModel
import CladeStore
import CladeVMM
import Foundation
import GRDB
import Testing

/// Crash recovery decisions, driven with the fake backend.
@Suite struct RecoveryTests {
    /// A fork whose clade process died after starting children: the journal lists the children,
    /// nobody learned their ids, so the next look stops and removes them and keeps the rest.
    @Test func aForkKilledHalfWayIsRolledBackFromTheJournal() async throws {
        let fixture = try EngineFixture("rollback")
        defer { fixture.remove() }
        try await fixture.bake("base")
        let kept = try #require(try await fixture.engine.forks.fork(tag: "base", count: 1).first?.record)
        let orphans = try await fixture.engine.forks.fork(tag: "base", count: 2).compactMap(\.record)
        #expect(orphans.count == 2)
        // What the dead process's journal entry would hold: the children's directories, and a
        // staging directory it had begun.
        let staging = fixture.home.snapshots.appendingPathComponent(".staging-x-999999")
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
        let paths = (orphans.map { "sandboxes/\($0.id)" } + ["snapshots/.staging-x-999999"])
        let encoded = String(decoding: try JSONEncoder().encode(paths), as: UTF8.self)
        try CatalogDatabase.shared(fixture.home).write { db in
            try db.execute(
                sql: "INSERT INTO operations (kind, subject, owner_pid, owner_start, started_at_unix, paths) VALUES ('fork', 'base', ?, '1', 0, ?)",
                arguments: [Int(Int32.max - 7), encoded])
        }
        let listed = try await fixture.engine.sandboxes.list()
        #expect(listed.map(\.id) == [kept.id])
        #expect(fixture.backend.machines.count == 1, "the orphans' machines are stopped")
        #expect(!FileManager.default.fileExists(atPath: staging.path))
        #expect(try OperationJournal(home: fixture.home).entries().isEmpty)
        #expect(try SandboxCatalog(home: fixture.home).indexed().map(\.id) == [kept.id])
    }

    /// A sandbox left paused by a clade that died mid-branch (pause marker, lock free) is continued;
    /// one paused on purpose (no marker) is left alone.
    @Test func aSandboxLeftPausedByADeadOperationIsContinued() async throws {
        let fixture = try EngineFixture("paused")
        defer { fixture.remove() }
        try await fixture.bake("base")
        let children = try await fixture.engine.forks.fork(tag: "base", count: 2).compactMap(\.record)
        let (abandoned, user) = (children[0], children[1])
        let abandonedDirectory = fixture.home.sandboxes.appendingPathComponent(abandoned.id)
        try await fixture.backend.attach(runtimeDirectory: abandonedDirectory, pid: abandoned.pid).pause()
        try Data("999999".utf8).write(to: SandboxCatalog(home: fixture.home).paths(abandoned.id).pauseMarker)
        try await fixture.engine.sandboxes.pause(id: user.id)

        _ = try await fixture.engine.sandboxes.list()
        #expect(await fixture.backend.attach(runtimeDirectory: abandonedDirectory, pid: nil).status(timeout: 1) == .running)
        #expect(!FileManager.default.fileExists(atPath: SandboxCatalog(home: fixture.home).paths(abandoned.id).pauseMarker.path))
        let userDirectory = fixture.home.sandboxes.appendingPathComponent(user.id)
        #expect(await fixture.backend.attach(runtimeDirectory: userDirectory, pid: nil).status(timeout: 1) == .paused)
    }

    /// A restarted daemon adopts running machines: a paused one with no operation holding it is
    /// continued; a machine that is gone is reported.
    @Test func adoptionContinuesOrphanedPausesAndReportsTheDead() async throws {
        let fixture = try EngineFixture("adopt")
        defer { fixture.remove() }
        try await fixture.bake("base")
        let children = try await fixture.engine.forks.fork(tag: "base", count: 2).compactMap(\.record)
        let first = fixture.home.sandboxes.appendingPathComponent(children[0].id)
        try await fixture.backend.attach(runtimeDirectory: first, pid: nil).pause()
        #expect(await fixture.engine.recovery.adopt(id: children[0].id))
        #expect(await fixture.backend.attach(runtimeDirectory: first, pid: nil).status(timeout: 1) == .running)
        await fixture.backend.attach(runtimeDirectory: fixture.home.sandboxes.appendingPathComponent(children[1].id), pid: nil).stop()
        #expect(await fixture.engine.recovery.adopt(id: children[1].id) == false)
        #expect(try await fixture.engine.sandboxes.get(id: children[1].id).state == .dead)
    }

    /// Removing what is already gone succeeds: two concurrent kills of one sandbox both succeed or
    /// report it missing, and nothing is left.
    @Test func concurrentKillsOfOneSandboxLeaveNothingAndDoNotFail() async throws {
        let fixture = try EngineFixture("double-kill")
        defer { fixture.remove() }
        try await fixture.bake("base")
        let child = try #require(try await fixture.engine.forks.fork(tag: "base", count: 1).first?.record)
        let engine = fixture.engine
        let failures = await withTaskGroup(of: (any Error)?.self) { group in
            for _ in 0..<2 {
                group.addTask {
                    do { try await engine.sandboxes.kill(id: child.id) } catch { return error }
                    return nil
                }
            }
            var collected: [any Error] = []
            for await case let error? in group { collected.append(error) }
            return collected
        }
        for error in failures {
            guard case ModelError.notFound = error else {
                Issue.record("a second kill failed with \(error)")
                continue
            }
        }
        #expect(fixture.directoryEntries(fixture.home.sandboxes).isEmpty)
        #expect(fixture.backend.machines.count == 0)
    }
}
