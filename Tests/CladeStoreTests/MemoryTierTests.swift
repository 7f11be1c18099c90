#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing

@testable import CladeStore

@Suite struct MemoryTierTests {
    func scratch() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("tier-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test func oneSealedCopyPerSnapshotAndOrphansOfDeletedStoresAreSwept() throws {
        let base = try scratch()
        defer { try? FileManager.default.removeItem(at: base) }
        let environment = [MemoryTier.directoryVariable: base.appendingPathComponent("tier").path]
        let kept = CladeHome(root: base.appendingPathComponent("kept"))
        let deleted = CladeHome(root: base.appendingPathComponent("deleted"))
        for home in [kept, deleted] { try FileManager.default.createDirectory(at: home.snapshots, withIntermediateDirectories: true) }
        let memory = base.appendingPathComponent("memory")
        try Data(repeating: 7, count: 8192).write(to: memory)

        let keptTier = MemoryTier(home: kept, environment: environment)
        let deletedTier = MemoryTier(home: deleted, environment: environment)
        #expect(keptTier.directory != deletedTier.directory)
        let placed = try keptTier.place(memory, snapshotID: "s1")
        #expect(try keptTier.place(memory, snapshotID: "s1") == placed)
        #expect(try Data(contentsOf: placed) == Data(repeating: 7, count: 8192))
        #expect(try #require(try FileSystem.status(of: placed)).mode & 0o777 == 0o444)
        _ = try deletedTier.place(memory, snapshotID: "s2")

        // The second store is deleted without `rmi`: its copy must not stay pinned in RAM.
        try FileManager.default.removeItem(at: deleted.root)
        keptTier.sweepOrphans()
        #expect(!FileManager.default.fileExists(atPath: deletedTier.directory.path))
        #expect(FileManager.default.fileExists(atPath: placed.path))
        keptTier.remove(snapshotID: "s1")
        #expect(!FileManager.default.fileExists(atPath: placed.path))
    }
}
