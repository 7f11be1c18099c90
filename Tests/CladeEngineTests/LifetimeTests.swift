import CladeEngine
import CladeFakeBackend
import CladeModel
import CladeStore
import Foundation
import Testing

/// End times on the fake backend: set at fork, moved, cleared, and enforced by the reaper.
@Suite struct LifetimeTests {
    @Test func expiredSandboxesAreKilledOrPutOnStandbyAsAsked() async throws {
        let fixture = try EngineFixture("lifetimes")
        defer { fixture.remove() }
        let engine = fixture.engine
        _ = try await fixture.bake("base")
        let killed = try #require(try await engine.forks.fork(tag: "base", count: 1, lifetime: Lifetime(seconds: 60)).first?.record)
        let parked = try #require(try await engine.forks.fork(tag: "base", count: 1, lifetime: Lifetime(seconds: 60, action: .standby)).first?.record)
        let kept = try #require(try await engine.forks.fork(tag: "base", count: 1).first?.record)
        #expect(killed.expiresAt != nil && killed.onTimeout == .kill)
        #expect(kept.expiresAt == nil)

        // Nothing is due yet.
        #expect(await engine.lifetimes.reapExpired().isEmpty)
        // Moving the end time: clearing it keeps the sandbox past the original end.
        let cleared = try await engine.lifetimes.set(id: kept.id, lifetime: Lifetime(seconds: 1))
        #expect(cleared.expiresAt != nil)
        try await engine.lifetimes.set(id: kept.id, lifetime: nil)

        let later = Date().addingTimeInterval(120)
        let reaped = await engine.lifetimes.reapExpired(now: later)
        #expect(Set(reaped.map(\.id)) == [killed.id, parked.id])
        #expect(reaped.allSatisfy { $0.error == nil }, "\(reaped)")
        #expect(!FileManager.default.fileExists(atPath: fixture.home.sandboxes.appendingPathComponent(killed.id).path))
        let standby = try await engine.sandboxes.get(id: parked.id)
        #expect(standby.state == .standby)
        #expect(standby.expiresAt == nil, "a sandbox put on standby at its end time has no end time left")
        #expect(try await engine.sandboxes.get(id: kept.id).state == .running)
        #expect(await engine.lifetimes.reapExpired(now: later).isEmpty, "a second pass finds nothing to do")

        await #expect(throws: EngineError.self) { try await engine.lifetimes.set(id: kept.id, lifetime: Lifetime(seconds: -1)) }
        await #expect(throws: EngineError.self) { _ = try await engine.forks.fork(tag: "base", count: 1, lifetime: Lifetime(seconds: 0)) }
        for record in try await engine.sandboxes.list() { try await engine.sandboxes.kill(id: record.id) }
    }
}
