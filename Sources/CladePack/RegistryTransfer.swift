import CladeModel
import CladeStore
import CladeVMM
import Foundation
import Logging

/// `clade push` and `clade pull`: a pack moved through an OCI registry, blob by blob, sending
/// and fetching only what the other side lacks.
public struct RegistryTransfer: Sendable {
    public let home: CladeHome
    public let disks: any DiskChain
    public var insecure: Bool
    public var credentials: RegistryCredentials?
    private let logger: Logger

    public init(
        home: CladeHome, disks: any DiskChain, insecure: Bool = false, credentials: RegistryCredentials? = nil,
        logger: Logger = Logger(label: "clade.registry")
    ) {
        self.home = home
        self.disks = disks
        self.insecure = insecure
        self.credentials = credentials
        self.logger = logger
    }

    /// Packs `tag` (with ancestors unless told not to) and uploads it as `reference`.
    public func push(tag: String, ancestors: Bool = true, to reference: RegistryReference, progress: PackProgress? = nil) async throws -> PushReport {
        guard !reference.isDigest else { throw PackError.invalidReference(reference.description, reason: "push to a tag, not a digest") }
        let start = Date()
        let layout = try home.makeTemporaryDirectory(prefix: "push")
        defer { try? FileSystem.remove(layout) }
        let packed = try Packer(home: home).pack(tag: tag, ancestors: ancestors, into: layout, progress: progress)
        let reader = try LayoutReader(root: layout)
        let client = RegistryClient(reference: reference, insecure: insecure, credentials: credentials, logger: logger)
        do {
            let report = try await upload(packed, from: reader, with: client, progress: progress, start: start)
            await client.shutdown()
            return report
        } catch {
            await client.shutdown()
            throw error
        }
    }

    private func upload(_ packed: PackReport, from reader: LayoutReader, with client: RegistryClient, progress: PackProgress?, start: Date) async throws -> PushReport {
        var uploaded: [String: Int64] = [:]
        var skipped: [String: Int64] = [:]
        var blobsUploaded = 0
        var blobsSkipped = 0
        var handled = Set<Digest>()
        var manifests: [(Descriptor, Data)] = []
        for tag in packed.snapshots {
            guard let entry = reader.index.manifests.first(where: { $0.annotation(AnnotationKey.refName) == tag }) else { continue }
            manifests.append((entry, try reader.readJSONBlob(entry, what: "manifest of \(tag)")))
        }
        let parsed = try manifests.map { try CanonicalJSON.decode(Manifest.self, from: $0.1, what: "manifest") }
        let total = parsed.reduce(Int64(0)) { sum, manifest in sum + manifest.layers.reduce(manifest.config.size) { $0 + $1.size } }
        let counter = ProgressCounter(total: total, progress: progress)
        counter.step = "pushing to \(client.reference)"
        for ((descriptor, data), manifest) in zip(manifests, parsed) {
            for blob in [manifest.config] + manifest.layers where handled.insert(blob.digest).inserted {
                let kind = MediaType.kind(of: blob.mediaType)
                if try await client.hasBlob(blob.digest) {
                    skipped[kind, default: 0] += blob.size
                    blobsSkipped += 1
                    counter.add(blob.size)
                    continue
                }
                try await client.uploadBlob(reader.blobURL(blob.digest), digest: blob.digest, size: blob.size) { counter.add($0) }
                uploaded[kind, default: 0] += blob.size
                blobsUploaded += 1
            }
            try await client.putManifest(data, mediaType: MediaType.imageManifest, reference: descriptor.digest.description)
        }
        if let leaf = manifests.last {
            try await client.putManifest(leaf.1, mediaType: MediaType.imageManifest, reference: client.reference.reference)
        }
        return PushReport(
            reference: client.reference.description, manifest: packed.manifest, uploaded: uploaded, skipped: skipped,
            blobsUploaded: blobsUploaded, blobsSkipped: blobsSkipped, seconds: Date().timeIntervalSince(start))
    }

    /// Downloads `reference` into a resumable cache in the store (only blobs the store lacks),
    /// then unpacks it with every check `clade unpack` makes. With `lazyMemory`, the snapshot's
    /// own memory chunks stay in the registry: it is registered with a chunk table instead, for
    /// the FUSE server to fetch as guests touch it (ancestors are pulled whole).
    public func pull(
        _ reference: RegistryReference, options: UnpackOptions = UnpackOptions(), lazyMemory: Bool = false, progress: PackProgress? = nil
    ) async throws -> UnpackReport {
        var options = options
        if lazyMemory { options.lazyMemory = LazyMemorySource(reference: reference.description, insecure: insecure) }
        let start = Date()
        try home.prepare()
        let key = Digest.of(Data(reference.description.utf8)).short
        let lock = try FileLock(home: home, .pull(key))
        defer { lock.unlock() }
        let cache = home.temporary.appendingPathComponent("pull-\(key)")
        let layout = try LayoutWriter(root: cache)
        let client = RegistryClient(reference: reference, insecure: insecure, credentials: credentials, logger: logger)
        let leaf: FetchedManifest
        do {
            leaf = try await fetchManifest(reference.reference, of: reference, with: client)
        } catch {
            await client.shutdown()
            throw error
        }
        if !options.force, let tag = tagAlreadyHolds(leaf.manifest, tagOverride: options.tag) {
            await client.shutdown()
            logger.info("already up to date", metadata: ["reference": "\(reference)", "tag": "\(tag)"])
            var report = UnpackReport(
                tag: tag, registered: [], alreadyPresent: [tag], blobsWritten: 0, blobsSkipped: 0, bytesWritten: 0, bytesDownloaded: 0,
                seconds: Date().timeIntervalSince(start))
            report.upToDate = true
            return report
        }
        let downloaded: [String: Int64]
        do {
            downloaded = try await fetch(reference, leaf: leaf, into: layout, with: client, tagOverride: options.tag, skippingLeafMemory: lazyMemory, progress: progress)
            await client.shutdown()
        } catch {
            // The cache holds only verified blobs, so it is kept for a rerun to resume from.
            await client.shutdown()
            throw error
        }
        FaultPoint.pullDownloadsDone.crashIfRequested()
        do {
            var report = try Unpacker(home: home, disks: disks, logger: logger).unpack(layout: cache, options: options, progress: progress)
            try? FileSystem.remove(cache)
            report.downloaded = downloaded
            report.bytesDownloaded = downloaded.values.reduce(0, +)
            report.seconds = Date().timeIntervalSince(start)
            return report
        } catch let error as PackError {
            // A pack that fails verification is not worth resuming.
            try? FileSystem.remove(cache)
            throw error
        }
    }

    /// The local tag `reference` would land on, when that tag already holds the very snapshot the
    /// registry's manifest describes: pulling it again is a no-op, as it is for container tools.
    /// Snapshots are immutable and their ids unique, so the same id under the tag is the same
    /// snapshot; nothing is downloaded or written either way.
    private func tagAlreadyHolds(_ manifest: Manifest, tagOverride: String?) -> String? {
        guard let tag = tagOverride ?? manifest.annotations?[AnnotationKey.snapshotTag],
              let id = manifest.annotations?[AnnotationKey.snapshotID],
              let local = try? SnapshotCatalog(home: home).get(tag), local.id == id
        else { return nil }
        return tag
    }

    /// A manifest as the registry sent it, with its digest, decoded.
    private struct FetchedManifest {
        let data: Data
        let digest: Digest
        let manifest: Manifest
    }

    private func fetchManifest(_ wanted: String, of reference: RegistryReference, with client: RegistryClient) async throws -> FetchedManifest {
        let (data, digest) = try await client.getManifest(wanted)
        let manifest = try CanonicalJSON.decode(Manifest.self, from: data, what: "manifest \(digest.short) from \(reference.host)")
        return FetchedManifest(data: data, digest: digest, manifest: manifest)
    }

    /// Walks the chain from `leaf` (already fetched by `pull`) through its parents.
    private func fetch(
        _ reference: RegistryReference, leaf: FetchedManifest, into layout: LayoutWriter, with client: RegistryClient, tagOverride: String?, skippingLeafMemory: Bool,
        progress: PackProgress?
    ) async throws -> [String: Int64] {
        let localIDs = Set(try SnapshotCatalog(home: home).list().map(\.id))
        let blobs = BlobStore(home: home)
        var chain: [(descriptor: Descriptor, manifest: Manifest)] = []
        var next: String? = reference.reference
        while let wanted = next {
            guard chain.count <= SnapshotMetadata.maxChainDepth else {
                throw PackError.malformed(what: "\(reference)", reason: "its snapshot chain is deeper than \(SnapshotMetadata.maxChainDepth)")
            }
            let fetched = chain.isEmpty ? leaf : try await fetchManifest(wanted, of: reference, with: client)
            let (data, digest, manifest) = (fetched.data, fetched.digest, fetched.manifest)
            try SnapshotPlan.checkFormat(manifest, what: "manifest \(digest.short) from \(reference.host)")
            try layout.put(data)
            chain.append((Descriptor(mediaType: MediaType.imageManifest, digest: digest, size: Int64(data.count)), manifest))
            // An ancestor this store already has ends the walk: its own ancestors are here too.
            if let id = manifest.annotations?[AnnotationKey.snapshotID], localIDs.contains(id), chain.count > 1 { break }
            next = manifest.annotations?[AnnotationKey.parentManifest]
        }
        FaultPoint.pullManifestsFetched.crashIfRequested()

        var wanted: [Descriptor] = []
        var seen = Set<Digest>()
        // A lazy pull leaves a framed rootfs in the registry and takes its index instead.
        let lazyRootfs: String? = skippingLeafMemory ? chain.first.flatMap { leaf in
            leaf.manifest.layers.contains { $0.mediaType == MediaType.rootfsIndex }
                ? leaf.manifest.layers.first { $0.mediaType == MediaType.rootfs }?.annotation(AnnotationKey.contentDigest) : nil
        } : nil
        for (position, entry) in chain.enumerated() {
            wanted.append(entry.manifest.config)
            let present = position > 0 && entry.manifest.annotations?[AnnotationKey.snapshotID].map(localIDs.contains) == true
            if present { continue }
            for layer in entry.manifest.layers {
                if skippingLeafMemory, position == 0, layer.mediaType == MediaType.memoryChunk { continue }
                if layer.mediaType == MediaType.rootfsIndex, lazyRootfs == nil || position > 0 { continue }
                if layer.mediaType == MediaType.rootfs, let lazyRootfs, layer.annotation(AnnotationKey.contentDigest) == lazyRootfs,
                    (try? Digest(parsing: lazyRootfs)).map({ !((try? blobs.contains($0)) ?? false) }) == true
                {
                    continue
                }
                if [MediaType.kernel, MediaType.initrd, MediaType.rootfs].contains(layer.mediaType),
                    let content = layer.annotation(AnnotationKey.contentDigest).flatMap({ try? Digest(parsing: $0) }),
                    try blobs.contains(content)
                {
                    continue
                }
                wanted.append(layer)
            }
        }
        wanted = wanted.filter { seen.insert($0.digest).inserted }
        let missing = try wanted.filter { !(try layout.contains($0.digest)) }
        for descriptor in missing where descriptor.size < 0 || descriptor.size > SnapshotPlan.maxDiskBytes {
            throw PackError.tooLarge(what: "blob \(descriptor.digest.short)", declared: descriptor.size, limit: SnapshotPlan.maxDiskBytes, reason: "no snapshot piece is that large")
        }
        let total = missing.reduce(Int64(0)) { $0 + $1.size }
        let free = try FileSystem.freeBytes(at: home.root)
        guard total + (64 << 20) <= free else {
            throw PackError.tooLarge(what: "\(reference)", declared: total, limit: max(0, free - (64 << 20)), reason: "the store at \(home.root.path) has \(free) bytes free")
        }
        let counter = ProgressCounter(total: total, progress: progress)
        counter.step = "pulling \(reference)"
        var downloaded: [String: Int64] = [:]
        for descriptor in missing {
            // A pack blob kept in the store (a memory chunk a lazy server verified) is not
            // fetched again; it was verified against this digest when it was kept.
            if link(blobs.url(for: descriptor.digest).path, layout.blobs.appendingPathComponent(descriptor.digest.hex).path) == 0 {
                counter.add(descriptor.size)
                continue
            }
            let fetched = try await client.downloadBlob(descriptor.digest, size: descriptor.size, to: layout.blobs.appendingPathComponent(descriptor.digest.hex)) { counter.add($0) }
            downloaded[MediaType.kind(of: descriptor.mediaType), default: 0] += fetched
            FaultPoint.pullBlobDownloaded.crashIfRequested()
        }
        guard let leaf = chain.first else { throw PackError.noSnapshot("the registry returned no manifest") }
        var entry = leaf.descriptor
        entry.annotations = [AnnotationKey.refName: tagOverride ?? leaf.manifest.annotations?[AnnotationKey.snapshotTag] ?? "pulled"]
        try layout.writeIndex(ImageIndex(manifests: [entry]))
        return downloaded
    }
}
