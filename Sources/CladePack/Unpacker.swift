#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladeStore
import CladeVMM
import Foundation
import Logging

/// How `clade unpack` and `clade pull` place a pack.
public struct UnpackOptions: Sendable {
    /// A new tag for the requested snapshot (ancestors keep theirs).
    public var tag: String?
    /// Replace a snapshot that already has the tag.
    public var force: Bool
    /// Which snapshot of a layout holding several: its `org.opencontainers.image.ref.name`.
    public var ref: String?
    /// Leave the requested snapshot's memory in the registry, to be fetched as guests touch it
    /// (`clade pull --lazy`, and `clade fork REFERENCE`): set by the registry transfer.
    public var lazyMemory: LazyMemorySource?

    public init(tag: String? = nil, force: Bool = false, ref: String? = nil, lazyMemory: LazyMemorySource? = nil) {
        self.tag = tag
        self.force = force
        self.ref = ref
        self.lazyMemory = lazyMemory
    }
}

/// Places the snapshots of an OCI layout into a store. Everything is checked and written into
/// a private staging directory first; only a fully verified pack is moved into place, blobs by
/// rename under their digest and each snapshot directory by one rename. A refused pack leaves
/// nothing behind.
public struct Unpacker: Sendable {
    public let home: CladeHome
    /// Reads the headers of the disk layers a pack carries, to refuse hostile backing files.
    public let disks: any DiskChain
    private let logger: Logger

    public init(home: CladeHome, disks: any DiskChain, logger: Logger = Logger(label: "clade.unpack")) {
        self.home = home
        self.disks = disks
        self.logger = logger
    }

    /// Verifies the layout at `root` and registers its snapshot (with ancestors it carries).
    public func unpack(layout root: URL, options: UnpackOptions = UnpackOptions(), progress: PackProgress? = nil) throws -> UnpackReport {
        let start = Date()
        let reader = try LayoutReader(root: root)
        let plans = try plan(reader, options: options)
        var report = try place(plans, from: reader, options: options, progress: progress)
        report.seconds = Date().timeIntervalSince(start)
        return report
    }

    // MARK: - Planning

    /// The chain to restore, root first, every manifest and config verified.
    func plan(_ reader: LayoutReader, options: UnpackOptions) throws -> [SnapshotPlan] {
        var tagged: [String: Descriptor] = [:]
        for (position, entry) in reader.index.manifests.enumerated() {
            guard entry.mediaType == MediaType.imageManifest else {
                throw PackError.unknownMediaType(blob: "index.json entry \(position)", mediaType: entry.mediaType)
            }
            guard let name = entry.annotation(AnnotationKey.refName) else { continue }
            do { try Names.validate(name, kind: "tag") } catch let error as StoreError {
                throw PackError.malformed(what: "index.json entry \(position)", reason: error.description)
            }
            if let existing = tagged[name], existing.digest != entry.digest { throw PackError.ambiguousTag(name) }
            tagged[name] = entry
        }
        guard !reader.index.manifests.isEmpty else { throw PackError.noSnapshot("index.json lists no manifests") }

        // Structure first, before any digest is trusted: which manifest names which parent.
        var parents: [Digest: Digest] = [:]
        var descriptors: [Digest: Descriptor] = [:]
        var pending = reader.index.manifests
        while let descriptor = pending.popLast() {
            guard descriptors[descriptor.digest] == nil else { continue }
            descriptors[descriptor.digest] = descriptor
            let data = try reader.readJSONBlob(descriptor, what: "manifest \(descriptor.digest.short)", verify: false)
            let manifest = try CanonicalJSON.decode(Manifest.self, from: data, what: "manifest \(descriptor.digest.short)")
            try SnapshotPlan.checkFormat(manifest, what: "manifest \(descriptor.digest.short)")
            guard let text = manifest.annotations?[AnnotationKey.parentManifest] else { continue }
            guard let parent = try? Digest(parsing: text) else {
                throw PackError.malformed(what: "manifest \(descriptor.digest.short)", reason: "\(AnnotationKey.parentManifest) '\(text)' is not a digest")
            }
            parents[descriptor.digest] = parent
            if reader.hasBlob(parent) {
                pending.append(Descriptor(mediaType: MediaType.imageManifest, digest: parent, size: try blobSize(reader, parent)))
            }
        }
        for first in parents.keys {
            var seen = [first]
            var current = first
            while let next = parents[current], descriptors[next] != nil {
                if let loopStart = seen.firstIndex(of: next) {
                    throw PackError.cycle((seen[loopStart...] + [next]).map(\.short))
                }
                seen.append(next)
                current = next
            }
        }

        let leaf: Descriptor
        if let ref = options.ref {
            guard let entry = tagged[ref] else {
                throw PackError.noSnapshot("no manifest is tagged '\(ref)'; the pack holds \(tagged.keys.sorted().joined(separator: ", "))")
            }
            leaf = entry
        } else {
            let parentSet = Set(parents.values)
            let leaves = reader.index.manifests.filter { !parentSet.contains($0.digest) }
            let distinct = Dictionary(leaves.map { ($0.digest, $0) }, uniquingKeysWith: { first, _ in first })
            guard distinct.count == 1, let only = distinct.values.first else {
                let names = leaves.map { $0.annotation(AnnotationKey.refName) ?? $0.digest.short }
                throw PackError.noSnapshot("the pack holds \(names.count) snapshots (\(names.joined(separator: ", "))); choose one with --ref NAME")
            }
            leaf = only
        }

        var chain: [Descriptor] = [leaf]
        while let parent = parents[chain[0].digest], let descriptor = descriptors[parent] {
            guard chain.count <= SnapshotMetadata.maxChainDepth else {
                throw PackError.malformed(what: "the pack", reason: "its snapshot chain is deeper than \(SnapshotMetadata.maxChainDepth)")
            }
            chain.insert(descriptor, at: 0)
        }

        var plans: [SnapshotPlan] = []
        for descriptor in chain {
            let what = "manifest \(descriptor.digest.short)"
            let manifest = try CanonicalJSON.decode(Manifest.self, from: try reader.readJSONBlob(descriptor, what: what), what: what)
            let config = try reader.readJSONBlob(manifest.config, what: "config of \(what)")
            let plan = try SnapshotPlan(manifestDigest: descriptor.digest, manifest: manifest, config: config)
            if let previous = plans.last, plan.metadata.parent?.id != previous.metadata.id {
                throw PackError.malformed(what: what, reason: "its config names parent \(plan.metadata.parent?.id ?? "none"), but its manifest's parent is snapshot \(previous.metadata.id)")
            }
            plans.append(plan)
        }
        return plans
    }

    private func blobSize(_ reader: LayoutReader, _ digest: Digest) throws -> Int64 {
        var status = stat()
        guard lstat(reader.blobURL(digest).path, &status) == 0 else { throw StoreError.systemCall("lstat", path: reader.blobURL(digest).path, errno: errno) }
        return Int64(status.st_size)
    }

    // MARK: - Placing

    private func place(_ plans: [SnapshotPlan], from reader: LayoutReader, options: UnpackOptions, progress: PackProgress?) throws -> UnpackReport {
        guard let leafPlan = plans.last else { throw PackError.noSnapshot("the chain is empty") }
        let catalog = SnapshotCatalog(home: home)
        let blobs = BlobStore(home: home)
        let leafTag = options.tag ?? leafPlan.metadata.tag
        do { try Names.validate(leafTag, kind: "tag") } catch let error as StoreError { throw PackError.malformed(what: "--tag", reason: error.description) }
        if !options.force, try catalog.get(leafTag) != nil { throw PackError.tagTaken(leafTag) }

        let localIDs = Set(try catalog.list().map(\.id))
        let ancestors = plans.dropLast()
        let skipped = ancestors.filter { localIDs.contains($0.metadata.id) }
        let toWrite = ancestors.filter { !localIDs.contains($0.metadata.id) } + [leafPlan]

        // Decide which blobs are needed, then check the space they need before writing any.
        var neededBlobs: [Digest: PlannedPiece] = [:]
        var skippedBlobs = 0
        var bytesNeeded: Int64 = 0
        var compressedToRead: Int64 = 0
        // A lazy pull leaves a framed rootfs the store lacks in the registry, for its own server.
        let lazyRootfs = try options.lazyMemory.flatMap { source in
            try leafPlan.rootfs.contentDigest.map(blobs.contains) == false ? try Self.lazyRootfsPlan(leafPlan, source: source, from: reader) : nil
        }
        for plan in toWrite {
            for piece in [plan.kernel, plan.initrd, plan.rootfs] {
                guard let digest = piece.contentDigest else { continue }
                if try blobs.contains(digest) { skippedBlobs += 1; continue }
                if let lazyRootfs, lazyRootfs.contentDigest == digest.description {
                    bytesNeeded += piece.contentSize  // the background fill writes all of it
                    continue
                }
                if neededBlobs[digest] == nil {
                    neededBlobs[digest] = piece
                    bytesNeeded += piece.contentSize
                    compressedToRead += piece.descriptor.size
                }
            }
            let lazy = options.lazyMemory != nil && plan.metadata.id == leafPlan.metadata.id
            for piece in plan.diskLayers + [plan.deviceState] + plan.memoryChunks.map(\.piece) {
                // Lazy memory still needs its room: the background fill writes all of it.
                bytesNeeded += piece.contentSize
                if !lazy || !plan.memoryChunks.contains(where: { $0.piece.descriptor.digest == piece.descriptor.digest }) {
                    compressedToRead += piece.descriptor.size
                }
            }
        }
        try home.prepare()
        let free = try FileSystem.freeBytes(at: home.root)
        let margin: Int64 = 64 << 20
        guard bytesNeeded + margin <= free else {
            throw PackError.tooLarge(what: "the pack's content", declared: bytesNeeded, limit: max(0, free - margin), reason: "the store at \(home.root.path) has \(free) bytes free")
        }

        sweepAbandonedStaging()
        let staging = try home.makeTemporaryDirectory(prefix: "unpack")
        defer { try? FileSystem.remove(staging) }
        let journal = OperationJournal(home: home)
        let entry = try journal.begin(kind: .unpack, subject: leafTag, paths: [staging])
        defer { journal.end(entry) }
        let stagedBlobs = staging.appendingPathComponent("blobs")
        try FileManager.default.createDirectory(at: stagedBlobs, withIntermediateDirectories: false)
        let counter = ProgressCounter(total: compressedToRead, progress: progress)
        var bytesWritten: Int64 = 0

        // Disk layers and device state first (small, and a layer shared along the chain is
        // linked, not written twice); then boot blobs and memory files in parallel.
        var stagedLayers: [Digest: URL] = [:]
        var directories: [URL] = []
        var jobs: [@Sendable () throws -> Void] = []
        for (digest, piece) in neededBlobs.sorted(by: { $0.key < $1.key }) {
            let target = stagedBlobs.appendingPathComponent(digest.hex)
            jobs.append { try Self.decompress(piece, from: reader, to: target, counter: counter) }
            bytesWritten += piece.contentSize
        }
        for (position, plan) in toWrite.enumerated() {
            let directory = staging.appendingPathComponent("snapshot-\(position)")
            directories.append(directory)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
            counter.step = "verifying \(plan.metadata.tag)"
            for (index, piece) in plan.diskLayers.enumerated() {
                let target = directory.appendingPathComponent(SandboxPaths.layerName(index))
                if let digest = piece.contentDigest, let earlier = stagedLayers[digest] {
                    guard link(earlier.path, target.path) == 0 else { throw StoreError.systemCall("link", path: target.path, errno: errno) }
                    continue
                }
                try Self.decompress(piece, from: reader, to: target, counter: counter)
                try DiskLayerCheck.requireCanonicalBacking(target, disks: disks, index: index, rootfs: plan.metadata.rootfs, what: piece.what)
                if let digest = piece.contentDigest { stagedLayers[digest] = target }
                bytesWritten += piece.contentSize
            }
            try Self.decompress(plan.deviceState, from: reader, to: directory.appendingPathComponent("devices.state"), counter: counter)
            let memory = directory.appendingPathComponent("memory")
            bytesWritten += plan.deviceState.contentSize
            if let source = options.lazyMemory, position == toWrite.count - 1 {
                try Self.stageLazyMemory(plan, source: source, home: home, in: directory)
                continue
            }
            jobs.append { try MemoryAssembler.assemble(plan, from: reader, into: memory, counter: counter) }
            bytesWritten += plan.memoryChunks.reduce(0) { $0 + $1.piece.contentSize }
        }
        counter.step = "verifying and writing"
        try Self.runConcurrently(jobs)

        var stagedSnapshots: [(plan: SnapshotPlan, directory: URL, tag: String)] = []
        for (position, plan) in toWrite.enumerated() {
            let directory = directories[position]
            var metadata = plan.metadata
            if position == toWrite.count - 1 { metadata.tag = leafTag }
            if options.lazyMemory == nil || position < toWrite.count - 1,
                let memoryStatus = try FileSystem.status(of: directory.appendingPathComponent("memory"))
            {
                metadata.memory.physicalSize = memoryStatus.allocatedBytes
            }
            try JSONFiles.write(metadata, to: directory.appendingPathComponent(SnapshotMetadata.fileName))
            // Kept with the snapshot, so a later push carries it on.
            try plan.workingSet?.save(in: directory)
            stagedSnapshots.append((plan, directory, metadata.tag))
            FaultPoint.unpackStagedSnapshot.crashIfRequested()
        }
        FaultPoint.unpackVerified.crashIfRequested()

        // Commit: take every tag's lock, re-check, then move blobs and publish ancestors first.
        var locks: [FileLock] = []
        defer { locks.forEach { $0.unlock() } }
        var publish: [(directory: URL, tag: String, replace: Bool)] = []
        var alreadyPresent = skipped.map(\.metadata.tag)
        for (position, staged) in stagedSnapshots.enumerated() {
            let isLeaf = position == stagedSnapshots.count - 1
            locks.append(try FileLock(home: home, .snapshot(staged.tag)))
            let existing = try catalog.get(staged.tag)
            if isLeaf {
                if existing != nil, !options.force { throw PackError.tagTaken(staged.tag) }
                publish.append((staged.directory, staged.tag, existing != nil))
            } else if let existing {
                // The leaf carries every layer it needs; an ancestor whose tag is taken here is
                // lineage only and is not registered.
                logger.warning("an ancestor's tag is taken by another snapshot; not registering the ancestor", metadata: ["tag": "\(staged.tag)", "existing": "\(existing.id)"])
                alreadyPresent.append(staged.tag)
            } else {
                publish.append((staged.directory, staged.tag, false))
            }
        }
        for (digest, _) in neededBlobs {
            try blobs.adoptVerified(stagedBlobs.appendingPathComponent(digest.hex), as: digest)
        }
        if let lazyRootfs { try Self.stageLazyRootfs(lazyRootfs, home: home) }
        FaultPoint.unpackBlobsPlaced.crashIfRequested()
        for item in publish {
            let final = catalog.directory(item.tag)
            if item.replace {
                let aside = home.snapshots.appendingPathComponent(".deleting-\(item.tag)-\(getpid())")
                guard rename(final.path, aside.path) == 0 else { throw StoreError.systemCall("rename", path: final.path, errno: errno) }
                defer { try? FileSystem.remove(aside) }
                guard rename(item.directory.path, final.path) == 0 else { throw StoreError.systemCall("rename", path: final.path, errno: errno) }
            } else {
                guard rename(item.directory.path, final.path) == 0 else { throw StoreError.systemCall("rename", path: final.path, errno: errno) }
            }
            try? FileSystem.sync(home.snapshots)
            do {
                try catalog.recordPublished(item.tag)
            } catch {
                // The snapshot is in place; the catalog catches up when it is next reconciled.
                logger.error("snapshot unpacked but not recorded in the catalog", metadata: ["tag": "\(item.tag)", "error": "\(error)"])
            }
        }
        return UnpackReport(
            tag: leafTag, registered: publish.map(\.tag), alreadyPresent: alreadyPresent, blobsWritten: neededBlobs.count,
            blobsSkipped: skippedBlobs, bytesWritten: bytesWritten, bytesDownloaded: 0, seconds: 0)
    }

    /// Decompresses one piece into a new file, verifying the blob and, when the pack names it,
    /// the content digest. Zero pages become holes, so a mostly-empty disk image stays small.
    static func decompress(_ piece: PlannedPiece, from reader: LayoutReader, to target: URL, counter: ProgressCounter) throws {
        let fd = try FileSystem.open(target, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode: 0o644)
        var hasher = DigestHasher()
        do {
            defer { close(fd) }
            var offset: Int64 = 0
            try reader.decompressBlob(piece.descriptor, what: piece.what, contentSize: piece.contentSize, onRead: { counter.add($0) }) { chunk in
                hasher.update(chunk)
                try MemoryAssembler.writeNonZeroPages(fd: fd, chunk, at: offset, path: target.path)
                offset += Int64(chunk.count)
            }
            guard ftruncate(fd, off_t(offset)) == 0 else { throw StoreError.systemCall("ftruncate", path: target.path, errno: errno) }
            guard fsync(fd) == 0 else { throw StoreError.systemCall("fsync", path: target.path, errno: errno) }
        }
        if let expected = piece.contentDigest {
            let actual = hasher.finalize()
            guard actual == expected else { throw PackError.digestMismatch(what: "\(piece.what) (decompressed)", expected: expected, actual: actual) }
        }
        guard chmod(target.path, 0o444) == 0 else { throw StoreError.systemCall("chmod", path: target.path, errno: errno) }
    }

    /// Runs independent jobs on all cores; throws the first failure after all have stopped.
    static func runConcurrently(_ jobs: [@Sendable () throws -> Void]) throws {
        let failure = FirstFailure()
        DispatchQueue.concurrentPerform(iterations: jobs.count) { index in
            guard !failure.happened else { return }
            do { try jobs[index]() } catch { failure.record(error) }
        }
        if let error = failure.error { throw error }
    }

    /// Removes `tmp/unpack-<pid>-*` directories of clade processes that are gone.
    private func sweepAbandonedStaging() {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: home.temporary.path) else { return }
        for entry in entries where entry.hasPrefix("unpack-") {
            let parts = entry.split(separator: "-")
            guard parts.count >= 2, let pid = Int32(parts[1]), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
            try? FileSystem.remove(home.temporary.appendingPathComponent(entry))
        }
    }
}

/// The first error thrown by concurrent jobs.
struct FirstFailure: Sendable {
    private let first = Locked<Error?>(nil)

    var happened: Bool { first.withLock { $0 != nil } }
    var error: Error? { first.current }

    func record(_ error: Error) {
        first.withLock { if $0 == nil { $0 = error } }
    }
}
