import CladeEngine
import CladeFakeBackend
import CladeModel
import CladeVMM
import Foundation
import Testing

/// Published guest ports on the fake backend: recorded, idempotent, re-applied on resume.
@Suite struct PortTests {
    @Test func aPublishedPortIsRecordedAndComesBackAfterResume() async throws {
        let fixture = try EngineFixture("ports")
        defer { fixture.remove() }
        let engine = fixture.engine
        let sandbox = try await engine.sandboxes.boot(BootOptions())
        let published = try await engine.sandboxes.publishPort(id: sandbox.id, guestPort: 8080)
        #expect(published.guestPort == 8080)
        #expect(try await engine.sandboxes.publishPort(id: sandbox.id, guestPort: 8080) == published, "publishing twice returns the first")
        let directory = fixture.home.sandboxes.appendingPathComponent(sandbox.id)
        #expect(fixture.backend.machines.get(directory)?.forwards[published.hostPort] == 8080)
        #expect(try await engine.sandboxes.get(id: sandbox.id).publishedPorts == [published])

        _ = try await engine.standby.enter(id: sandbox.id)
        _ = try await engine.standby.resume(id: sandbox.id)
        #expect(fixture.backend.machines.get(directory)?.forwards[published.hostPort] == 8080, "resume forwards the same host port again")

        await #expect(throws: EngineError.self) { _ = try await engine.sandboxes.publishPort(id: sandbox.id, guestPort: 0) }
        try await engine.sandboxes.kill(id: sandbox.id)
    }

    @Test func aBackendWithoutForwardingRefusesUpFront() async throws {
        let fixture = try EngineFixture("ports-unsupported", capabilities: BackendCapabilities.all.subtracting(.portForwarding))
        defer { fixture.remove() }
        let sandbox = try await fixture.engine.sandboxes.boot(BootOptions())
        await #expect(throws: VMMError.self) { _ = try await fixture.engine.sandboxes.publishPort(id: sandbox.id, guestPort: 80) }
        try await fixture.engine.sandboxes.kill(id: sandbox.id)
    }
}
