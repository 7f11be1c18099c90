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
        let lazyPlan = LazyFilePlan(
            reference: source.reference, insecure: source.insecure, snapshotID: plan.metadata.id,
            logicalSize: plan.metadata.memory.logicalSize, chunkSize: Int64(plan.memoryChunkSize),
            chunks: plan.memoryChunks.map { offset, piece in
                LazyFilePlan.Chunk(offset: offset, digest: piece.descriptor.digest.description, size: piece.descriptor.size, contentSize: piece.contentSize)
            },
            workingSet: plan.workingSet.map { recorded in
                let held = Set(plan.memoryChunks.map(\.offset))
                return recorded.chunks.map { $0 * Int64(plan.memoryChunkSize) }.filter { held.contains($0) }
            })
        try lazyPlan.validate(what: "the memory chunk table of \(plan.metadata.tag)")
        try JSONFiles.write(lazyPlan, to: directory.appendingPathComponent(LazyFilePlan.fileName, isDirectory: false))
        let served = LazyFilePaths(home: home, snapshotID: plan.metadata.id).servedFile
        let memory = directory.appendingPathComponent("memory", isDirectory: false)
        guard symlink(served.path, memory.path) == 0 else { throw StoreError.systemCall("symlink", path: memory.path, errno: errno) }
    }
}

extension Unpacker {
    /// The rootfs of a lazily pulled leaf as a plan for its FUSE server, when the pack frames it
    /// (format 1.1) and the store does not hold it yet; nil means it is unpacked whole.
    static func lazyRootfsPlan(_ plan: SnapshotPlan, source: LazyMemorySource, from reader: LayoutReader) throws -> LazyFilePlan? {
        guard let indexLayer = plan.rootfsIndex, indexLayer.size <= LayoutReader.maxJSONBytes, reader.hasBlob(indexLayer.digest),
            let rootfs = plan.rootfs.contentDigest
        else { return nil }
        let what = "the rootfs index of \(plan.metadata.tag)"
        let index = try CanonicalJSON.decode(RootfsIndex.self, from: try reader.readJSONBlob(indexLayer, what: what), what: what)
        try index.validate(rootfs: plan.rootfs.descriptor, contentDigest: rootfs, contentSize: plan.rootfs.contentSize, what: what)
        guard index.frames.count <= LazyFilePlan.maxChunks else { return nil }  // too large to serve lazily: unpack it whole
        let lazy = LazyFilePlan(
            reference: source.reference, insecure: source.insecure, snapshotID: LazyFilePaths.rootfsPrefix + rootfs.hex, logicalSize: index.contentSize,
            chunkSize: index.chunkSize,
            chunks: index.frames.enumerated().compactMap { number, frame in
                frame.digest.map { digest in
                    LazyFilePlan.Chunk(
                        offset: Int64(number) * index.chunkSize, digest: digest, size: frame.size,
                        contentSize: min(index.chunkSize, index.contentSize - Int64(number) * index.chunkSize), blobOffset: frame.offset)
                }
            },
            kind: .rootfs, blob: index.blob, blobSize: index.blobSize, contentDigest: rootfs.description)
        try lazy.validate(what: what)
        return lazy
    }

    /// Places a lazily served rootfs: its plan in its server's directory, and the blob store's
    /// entry as a link to the file that server will serve. A blob that appeared meanwhile (whole,
    /// or served by another lazy pull) is kept as it is.
    static func stageLazyRootfs(_ lazy: LazyFilePlan, home: CladeHome) throws {
        guard let text = lazy.contentDigest, let rootfs = try? Digest(parsing: text) else { return }
        let target = BlobStore(home: home).url(for: rootfs)
        if try FileSystem.exists(target) { return }
        let paths = LazyFilePaths(home: home, rootfs: rootfs)
        try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        try JSONFiles.write(lazy, to: paths.rootfsPlan)
        guard symlink(paths.servedFile.path, target.path) == 0 || errno == EEXIST else {
            throw StoreError.systemCall("symlink", path: target.path, errno: errno)
        }
    }
}
