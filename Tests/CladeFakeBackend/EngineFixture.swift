import CladeEngine
import CladeModel
import CladeStore
import CladeVMM
import Foundation

/// A private store with a tiny image whose blobs are placeholder files, and an engine on the
/// fake backend. The accelerator choice is cached up front, as a real probe would leave it.
public struct EngineFixture: Sendable {
    public let root: URL
    public let home: CladeHome
    public let backend: FakeBackend
    public let engine: Engine

    public init(_ name: String, capabilities: BackendCapabilities = .all) throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("clade-engine-\(name)-\(getpid())-\(UUID().uuidString.prefix(8))")
        home = CladeHome(root: root)
        try home.prepare()
        backend = FakeBackend(capabilities: capabilities)
        engine = Engine(home: home, backend: backend)
        let blobs = BlobStore(home: home)
        var digests: [Digest] = []
        for (index, content) in ["fake kernel", "fake initrd", "fake rootfs"].enumerated() {
            let file = root.appendingPathComponent("piece-\(index)")
            try Data(content.utf8).write(to: file)
            digests.append(try blobs.ingest(file).digest)
        }
        try ImageCatalog(home: home).put(ImageRecord(
            name: "default", rootfs: digests[2], rootfsSize: 11, initrd: digests[1], kernel: digests[0],
            kernelRelease: "fake", agentVersion: "test"))
        let choice = AcceleratorChoice(accelerator: .tcg, reason: "fake", backendVersion: "1.0")
        try JSONFiles.write(choice, to: home.state.appendingPathComponent("accelerator.json"))
    }

    public var boot: BootOptions { BootOptions(memoryMiB: 64, cpus: 1, readyTimeout: 10) }

    /// Bakes `tag` from a guest that has `/sentinel` written.
    @discardableResult
    public func bake(_ tag: String, sentinel: String = "baked") async throws -> SnapshotMetadata {
        let record = try await engine.sandboxes.boot(boot)
        backend.machines.get(home.sandboxes.appendingPathComponent(record.id))?.guest.write("/sentinel", sentinel)
        return try await engine.snapshots.take(id: record.id, tag: tag)
    }

    public func directoryEntries(_ url: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []).sorted()
    }

    public func remove() { try? FileManager.default.removeItem(at: root) }
}
