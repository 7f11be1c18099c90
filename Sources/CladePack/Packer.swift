#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladeStore
import Foundation
import Logging

/// Writes snapshots from a store into an OCI image layout: one manifest per snapshot, its
/// config the snapshot's metadata, one zstd blob per piece, memory split into chunks.
public struct Packer: Sendable {
    public let home: CladeHome
    public var level: Int32
    public var workers: Int
    private let logger: Logger

    public init(home: CladeHome, level: Int32 = 3, workers: Int = max(1, ProcessInfo.processInfo.activeProcessorCount), logger: Logger = Logger(label: "clade.pack")) {
        self.home = home
        self.level = level
        self.workers = workers
        self.logger = logger
    }

    /// The snapshot `tag` and, unless `ancestors` is false, the ancestors still in the store,
    /// root first. An ancestor whose tag now names a different snapshot ends the chain.
    public func chain(of tag: String, ancestors: Bool) throws -> [SnapshotMetadata] {
        let catalog = SnapshotCatalog(home: home)
        var chain = [try catalog.require(tag)]
        while ancestors, let parent = chain[0].parent, chain.count <= SnapshotMetadata.maxChainDepth {
            guard let metadata = try catalog.get(parent.tag), metadata.id == parent.id else {
                logger.info("ancestor is no longer in the store; packing without it", metadata: ["tag": "\(parent.tag)"])
                break
            }
            chain.insert(metadata, at: 0)
        }
        return chain
    }

    /// Packs `tag` (with its ancestors unless `ancestors` is false) into the layout at `output`,
    /// creating it or adding to it.
    public func pack(tag: String, ancestors: Bool = true, into output: URL, progress: PackProgress? = nil) throws -> PackReport {
        let start = Date()
        let snapshots = try chain(of: tag, ancestors: ancestors)
        // Refused before the layout is touched: a pack stopped half-way would leave its blobs behind.
        for metadata in snapshots {
            if let lazy = try LazyFilePlan.load(in: SnapshotCatalog(home: home).directory(metadata.tag)) {
                throw PackError.noSnapshot(
                    "snapshot '\(metadata.tag)' was pulled lazily and its memory is still arriving from \(lazy.reference); pack it once its forks' background fill has completed it, or `clade pull --force` it whole first")
            }
            if let lazy = try LazyFilePlan.loadRootfs(metadata.rootfs, home: home),
                try FileSystem.status(of: BlobStore(home: home).url(for: metadata.rootfs))?.isSymbolicLink == true
            {
                throw PackError.noSnapshot(
                    "snapshot '\(metadata.tag)' was pulled lazily and its root filesystem is still arriving from \(lazy.reference); pack it once that has completed, or `clade pull \(lazy.reference)` first to complete it")
            }
        }
        let layout = try LayoutWriter(root: output)
        let total = try snapshots.reduce(Int64(0)) { sum, metadata in sum + (try contentBytes(of: metadata)) }
        let counter = ProgressCounter(total: total, progress: progress)
        var pieces: [PackedPiece] = []
        var memo = PackMemo()
        var manifests: [(tag: String, descriptor: Descriptor)] = []
        var parentManifest: Descriptor?
        for metadata in snapshots {
            counter.step = "packing \(metadata.tag)"
            let packed = try packSnapshot(metadata, parent: parentManifest, layout: layout, memo: &memo, counter: counter)
            pieces += packed.pieces
            manifests.append((metadata.tag, packed.manifest))
            parentManifest = packed.manifest
        }
        var index = try layout.readIndex()
        let packedTags = Set(manifests.map(\.tag))
        index.manifests.removeAll { $0.annotation(AnnotationKey.refName).map(packedTags.contains) ?? false }
        for (tag, descriptor) in manifests {
            var entry = descriptor
            entry.annotations = [AnnotationKey.refName: tag]
            index.manifests.append(entry)
        }
        try layout.writeIndex(index)
        return PackReport(
            path: output.path, snapshots: snapshots.map(\.tag), manifest: manifests.last?.descriptor.digest.description ?? "",
            pieces: pieces, seconds: Date().timeIntervalSince(start))
    }

    private func contentBytes(of metadata: SnapshotMetadata) throws -> Int64 {
        let directory = SnapshotCatalog(home: home).directory(metadata.tag)
        var files = [directory.appendingPathComponent(metadata.deviceState.file)]
        files += metadata.diskLayers.map { directory.appendingPathComponent($0.file) }
        let blobs = BlobStore(home: home)
        files += [metadata.rootfs, metadata.kernel, metadata.initrd].map(blobs.url(for:))
        var total = metadata.memory.logicalSize
        for file in files {
            guard let status = try FileSystem.status(of: file) else {
                throw PackError.snapshotIncomplete(tag: metadata.tag, reason: "\(file.path) is missing; the store is damaged (run `clade doctor`)")
            }
            total += status.size
        }
        return total
    }

    private func packSnapshot(
        _ metadata: SnapshotMetadata, parent: Descriptor?, layout: LayoutWriter, memo: inout PackMemo, counter: ProgressCounter
    ) throws -> (manifest: Descriptor, pieces: [PackedPiece]) {
        let directory = SnapshotCatalog(home: home).directory(metadata.tag)
        let blobs = BlobStore(home: home)
        var layers: [Descriptor] = []
        var pieces: [PackedPiece] = []
        let compressor = try ZstdCompressor(level: level, workers: max(1, workers))

        func packFile(_ file: URL, kind: String, mediaType: String, knownDigest: Digest?, extra: [String: String] = [:]) throws {
            if let knownDigest, var descriptor = memo.byContent[knownDigest] {
                counter.add(descriptor.annotation(AnnotationKey.contentSize).flatMap { Int64($0) } ?? 0)
                descriptor.annotations = (descriptor.annotations ?? [:]).merging(extra) { $1 }
                layers.append(descriptor)
                pieces.append(PackedPiece(kind: kind, snapshot: metadata.tag, contentBytes: Int64(descriptor.annotation(AnnotationKey.contentSize) ?? "") ?? 0, packedBytes: descriptor.size, newBytes: 0, blobs: 1))
                return
            }
            guard try FileSystem.exists(file) else {
                throw PackError.snapshotIncomplete(tag: metadata.tag, reason: "\(file.path) is missing; the store is damaged (run `clade doctor`)")
            }
            let result = try layout.putCompressed(file: file, compressor: compressor) { counter.add($0) }
            if let knownDigest, knownDigest != result.contentDigest {
                throw PackError.snapshotIncomplete(tag: metadata.tag, reason: "\(file.path) no longer matches its digest \(knownDigest); the store is corrupt")
            }
            let annotations = [
                AnnotationKey.contentDigest: result.contentDigest.description,
                AnnotationKey.contentSize: "\(result.contentSize)",
            ].merging(extra) { $1 }
            let descriptor = Descriptor(mediaType: mediaType, digest: result.digest, size: result.size, annotations: annotations)
            memo.byContent[result.contentDigest] = descriptor
            if let status = try FileSystem.status(of: file) { memo.byFile[PackMemo.key(status)] = result.contentDigest }
            layers.append(descriptor)
            pieces.append(PackedPiece(kind: kind, snapshot: metadata.tag, contentBytes: result.contentSize, packedBytes: result.size, newBytes: result.new ? result.size : 0, blobs: 1))
        }

        try packFile(blobs.url(for: metadata.kernel), kind: "kernel", mediaType: MediaType.kernel, knownDigest: metadata.kernel)
        try packFile(blobs.url(for: metadata.initrd), kind: "initrd", mediaType: MediaType.initrd, knownDigest: metadata.initrd)
        try packRootfs(metadata, layout: layout, memo: &memo, counter: counter, layers: &layers, pieces: &pieces)
        for (index, layer) in metadata.diskLayers.enumerated() {
            let file = directory.appendingPathComponent(layer.file)
            // A layer shared with an ancestor is the same (sealed, read-only) inode: it reuses the
            // ancestor's blob without being read again. Any other layer is hashed while compressed.
            let digest = try FileSystem.status(of: file).flatMap { memo.byFile[PackMemo.key($0)] }
            try packFile(file, kind: "disk-layer", mediaType: MediaType.diskLayer, knownDigest: digest, extra: [AnnotationKey.diskIndex: "\(index)"])
        }
        try packFile(
            directory.appendingPathComponent(metadata.deviceState.file), kind: "device-state", mediaType: MediaType.deviceState,
            knownDigest: metadata.deviceState.sha256)

        let memory = try MemoryChunker(level: level, workers: max(1, workers))
            .pack(directory.appendingPathComponent(metadata.memory.file), into: layout, counter: counter)
        layers += memory.layers
        pieces.append(PackedPiece(kind: "memory", snapshot: metadata.tag, contentBytes: metadata.memory.logicalSize, packedBytes: memory.packedBytes, newBytes: memory.newBytes, blobs: memory.layers.count))

        let config = try layout.put(try CanonicalJSON.encode(metadata))
        pieces.append(PackedPiece(kind: "config", snapshot: metadata.tag, contentBytes: config.size, packedBytes: config.size, newBytes: config.new ? config.size : 0, blobs: 1))
        var annotations = [
            AnnotationKey.packFormat: PackFormat.current,
            AnnotationKey.snapshotTag: metadata.tag,
            AnnotationKey.snapshotID: metadata.id,
            AnnotationKey.memoryChunkSize: "\(PackFormat.memoryChunkSize)",
            AnnotationKey.created: ISO8601DateFormatter().string(from: metadata.createdAt),
        ]
        if let parent { annotations[AnnotationKey.parentManifest] = parent.digest.description }
        if let workingSet = try WorkingSet.load(in: directory), workingSet.chunkSize == Int64(PackFormat.memoryChunkSize), !workingSet.chunks.isEmpty {
            annotations[AnnotationKey.memoryWorkingSet] = workingSet.encoded
        }
        let manifest = Manifest(
            config: Descriptor(mediaType: MediaType.snapshotConfig, digest: config.digest, size: config.size),
            layers: layers, annotations: annotations)
        let stored = try layout.put(try CanonicalJSON.encode(manifest))
        let descriptor = Descriptor(mediaType: MediaType.imageManifest, digest: stored.digest, size: stored.size, artifactType: MediaType.snapshotArtifact)
        return (descriptor, pieces)
    }
}

/// Counts bytes done across threads and reports them.
final class ProgressCounter: Sendable {
    private struct Counts {
        var done: Int64 = 0
        var lastReport: Int64 = 0
        var step = ""
    }
    private let counts = Locked(Counts())
    private let total: Int64
    private let progress: PackProgress?

    init(total: Int64, progress: PackProgress?) {
        self.total = total
        self.progress = progress
    }

    var step: String {
        get { counts.withLock { $0.step } }
        set {
            let done = counts.withLock { counts -> Int64 in
                counts.step = newValue
                return counts.done
            }
            progress?(newValue, done, total)
        }
    }

    func add(_ bytes: Int64) {
        let report: (String, Int64)? = counts.withLock { counts in
            counts.done += bytes
            guard counts.done - counts.lastReport >= 8 << 20 || counts.done == total else { return nil }
            counts.lastReport = counts.done
            return (counts.step, counts.done)
        }
        if let report { progress?(report.0, report.1, total) }
    }
}

/// What one pack run has already written: blobs by content digest, and the content digest of
/// each file read so far by device and inode (snapshot files are sealed 0444, so an inode seen
/// again has the same content).
struct PackMemo {
    var byContent: [Digest: Descriptor] = [:]
    /// The rootfs index layer packed for each rootfs content digest.
    var rootfsIndex: [Digest: Descriptor] = [:]
    var byFile: [String: Digest] = [:]

    static func key(_ status: FileSystem.Status) -> String { "\(status.device):\(status.inode)" }
}

extension Packer {
    /// The rootfs as framed chunks plus its index layer, each packed once per pack.
    fileprivate func packRootfs(
        _ metadata: SnapshotMetadata, layout: LayoutWriter, memo: inout PackMemo, counter: ProgressCounter, layers: inout [Descriptor], pieces: inout [PackedPiece]
    ) throws {
        let rootfs = metadata.rootfs
        if let descriptor = memo.byContent[rootfs], let index = memo.rootfsIndex[rootfs] {
            counter.add(descriptor.annotation(AnnotationKey.contentSize).flatMap { Int64($0) } ?? 0)
            layers += [descriptor, index]
            pieces.append(PackedPiece(kind: "rootfs", snapshot: metadata.tag, contentBytes: Int64(descriptor.annotation(AnnotationKey.contentSize) ?? "") ?? 0, packedBytes: descriptor.size, newBytes: 0, blobs: 2))
            return
        }
        let file = BlobStore(home: home).url(for: rootfs)
        guard let status = try FileSystem.status(of: file) else {
            throw PackError.snapshotIncomplete(tag: metadata.tag, reason: "\(file.path) is missing; the store is damaged (run `clade doctor`)")
        }
        let result = try RootfsFramer(level: level, workers: max(1, workers)).pack(file, expected: rootfs, tag: metadata.tag, into: layout, counter: counter)
        memo.byContent[rootfs] = result.rootfs
        memo.rootfsIndex[rootfs] = result.index
        layers += [result.rootfs, result.index]
        pieces.append(PackedPiece(
            kind: "rootfs", snapshot: metadata.tag, contentBytes: status.size, packedBytes: result.rootfs.size + result.index.size,
            newBytes: result.new ? result.rootfs.size + result.index.size : 0, blobs: 2))
    }
}
