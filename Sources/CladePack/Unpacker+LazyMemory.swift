#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladeStore
import Foundation

/// Where a lazily pulled snapshot's memory chunks stay until a guest touches them.
public struct LazyMemorySource: Sendable, Equatable {
    public var reference: String
    public var insecure: Bool

    public init(reference: String, insecure: Bool) {
        self.reference = reference
        self.insecure = insecure
    }
}

extension Unpacker {
    /// In place of the memory file: the chunk table the FUSE server fetches from, and `memory` as
    /// a link to the file that server will serve. Nothing is fetched here.
    static func stageLazyMemory(_ plan: SnapshotPlan, source: LazyMemorySource, home: CladeHome, in directory: URL) throws {
        let lazyPlan = LazyMemoryPlan(
            reference: source.reference, insecure: source.insecure, snapshotID: plan.metadata.id,
            logicalSize: plan.metadata.memory.logicalSize, chunkSize: Int64(plan.memoryChunkSize),
            chunks: plan.memoryChunks.map { offset, piece in
                LazyMemoryPlan.Chunk(offset: offset, digest: piece.descriptor.digest.description, size: piece.descriptor.size, contentSize: piece.contentSize)
            },
            workingSet: plan.workingSet.map { recorded in
                let held = Set(plan.memoryChunks.map(\.offset))
                return recorded.chunks.map { $0 * Int64(plan.memoryChunkSize) }.filter { held.contains($0) }
            })
        try lazyPlan.validate(what: "the memory chunk table of \(plan.metadata.tag)")
        try JSONFiles.write(lazyPlan, to: directory.appendingPathComponent(LazyMemoryPlan.fileName, isDirectory: false))
        let served = LazyMemoryPaths(home: home, snapshotID: plan.metadata.id).servedFile
        let memory = directory.appendingPathComponent("memory", isDirectory: false)
        guard symlink(served.path, memory.path) == 0 else { throw StoreError.systemCall("symlink", path: memory.path, errno: errno) }
    }
}
