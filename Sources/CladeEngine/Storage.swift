#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladePack
import CladeStore
import CladeVMM
import Foundation

/// What `clade gc` found or removed.
public struct GarbageReport: Codable, Sendable, Equatable {
    /// Blobs no image, snapshot or sandbox references, by digest.
    public var blobs: [String]
    /// Bytes on disk those blobs (and stale temporary files) held.
    public var bytes: Int64
    /// Temporary directories and half-downloaded blobs left by clade processes that are gone.
    public var temporaries: [String]
    public var dryRun: Bool

    enum CodingKeys: String, CodingKey {
        case blobs, bytes, temporaries
        case dryRun = "dry_run"
    }
}

/// The store as a whole: what is referenced, and collecting what is not.
public struct Storage: EngineCapability {
    let engine: Engine

    /// Half-downloaded blobs older than this are dropped; younger ones may still be resumed.
    static let partialDownloadAge: TimeInterval = 24 * 3600

    /// Removes blobs nothing references and the leftovers of dead clade processes. Never runs
    /// beside an operation that may be about to reference a blob: image builds and pulls hold
    /// the store lock shared, and any live journaled operation makes gc refuse. Each removal is
    /// one unlink, so a kill at any point leaves a store whose every blob still verifies.
    public func collectGarbage(dryRun: Bool) async throws -> GarbageReport {
        try home.prepare()
        let lock = try FileLock.attempt(home: home, .blobStore)
        guard let lock else {
            throw EngineError.wrongState("an image build, import or pull is writing to the store; run gc when it has finished")
        }
        defer { lock.unlock() }
        try await engine.recovery.recoverInterruptedOperations()
        let live = try journal.entries().filter { $0.owner.isAlive }
        if let busy = live.first {
            throw EngineError.wrongState("a \(busy.kind) of '\(busy.subject)' is in progress (pid \(busy.owner.pid)); run gc when it has finished")
        }
        let referenced = try referencedBlobs()
        var report = GarbageReport(blobs: [], bytes: 0, temporaries: [], dryRun: dryRun)
        for name in try FileManager.default.contentsOfDirectory(atPath: home.blobs.path).sorted() {
            let url = home.blobs.appendingPathComponent(name)
            guard let status = try FileSystem.status(of: url) else { continue }
            if name.hasSuffix(".partial") {
                guard let modified = try? FileManager.default.attributesOfItem(atPath: url.path)[.modificationDate] as? Date,
                    Date().timeIntervalSince(modified) > Self.partialDownloadAge
                else { continue }
                report.temporaries.append("blobs/sha256/\(name)")
                report.bytes += status.allocatedBytes
                if !dryRun { try FileSystem.remove(url) }
                continue
            }
            guard let digest = try? Digest(hex: name), !referenced.contains(digest) else { continue }
            report.blobs.append(digest.description)
            if status.linkCount <= 1 { report.bytes += status.allocatedBytes }
            if !dryRun { try FileSystem.remove(url) }
        }
        for name in try FileManager.default.contentsOfDirectory(atPath: home.temporary.path).sorted() {
            // Temporary directories are named PREFIX-PID-RANDOM by the process that made them.
            let parts = name.split(separator: "-")
            guard parts.count >= 3, let pid = Int32(parts[parts.count - 2]), pid > 0, kill(pid, 0) != 0, errno == ESRCH else { continue }
            let url = home.temporary.appendingPathComponent(name)
            report.temporaries.append("tmp/\(name)")
            report.bytes += Self.allocatedBytes(under: url)
            if !dryRun { try FileSystem.remove(url) }
        }
        try sweepLazyServers(into: &report, dryRun: dryRun)
        logger.info("garbage collected", metadata: ["blobs": "\(report.blobs.count)", "bytes": "\(report.bytes)", "dry_run": "\(dryRun)"])
        return report
    }

    /// Removes what lazy file servers left (`lazy/<snapshot id>/`, `lazy/rootfs-<hex>/`): a directory no server
    /// serves or is starting, and no sandbox maps, with its mount detached if a killed server
    /// left one. A snapshot still arriving gets a new server, and a new directory, on its next fork.
    func sweepLazyServers(into report: inout GarbageReport, dryRun: Bool) throws {
        let root = home.root.appendingPathComponent("lazy", isDirectory: true)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: root.path) else { return }
        var mapped = Set<String>()
        for id in try sandboxCatalog.ids() {
            for directory in engine.sandboxes.lazyServerDirectories(sandbox: id) { mapped.insert(directory.lastPathComponent) }
        }
        for name in names.sorted() where !mapped.contains(name) {
            let paths = LazyFilePaths(directory: root.appendingPathComponent(name, isDirectory: true))
            if LazyFileServer.isServing(paths) { continue }
            // A rootfs still arriving keeps its plan while the blob store links to its file (the
            // blob sweep above removed the link if nothing references the rootfs any more).
            if paths.servesRootfs, let link = try? FileManager.default.destinationOfSymbolicLink(atPath: home.blobs.appendingPathComponent(String(name.dropFirst(7))).path),
                link == paths.servedFile.path
            {
                continue
            }
            // A zombie or a reused pid is no server (a killed one stays a zombie until reaped).
            if let pid = ProcessControl.readPidFile(paths.pidFile), ProcessControl.isAlive(pid, marker: "lazy-serve") { continue }
            guard let lock = try? FileLock.attempt(home: home, .lazyServer(name)) else { continue }
            defer { lock.unlock() }
            report.temporaries.append("lazy/\(name)")
            report.bytes += (try? FileSystem.status(of: paths.assembling))?.allocatedBytes ?? 0
            if dryRun { continue }
            umount2(paths.mountPoint.path, Int32(MNT_DETACH))
            try FileSystem.remove(paths.directory)
        }
    }

    /// Bytes that `collectGarbage` would now free of `candidates` (the blobs something just
    /// removed had named): those that nothing references any more and no other name links.
    /// Looks at those blobs only, not the whole store; 0 when it cannot tell.
    public func reclaimableBytes(of candidates: Set<Digest>) -> Int64 {
        guard !candidates.isEmpty, let referenced = try? referencedBlobs() else { return 0 }
        var bytes: Int64 = 0
        for digest in candidates.subtracting(referenced) {
            guard let status = try? FileSystem.status(of: blobs.url(for: digest)), status.linkCount <= 1 else { continue }
            bytes += status.allocatedBytes
        }
        return bytes
    }

    /// Every blob an image, a snapshot or a sandbox needs. An unreadable record stops gc: it
    /// might reference anything.
    func referencedBlobs() throws -> Set<Digest> {
        var result = Set<Digest>()
        for image in try imageCatalog.list() {
            result.formUnion([image.rootfs, image.initrd, image.kernel] + image.layers + (image.configBlob.map { [$0] } ?? []))
        }
        for name in try FileManager.default.contentsOfDirectory(atPath: home.snapshots.path) where !name.hasPrefix(".") {
            let file = home.snapshots.appendingPathComponent(name).appendingPathComponent(SnapshotMetadata.fileName)
            guard try FileSystem.exists(file) else { continue }
            let read: SnapshotMetadata?
            do { read = try JSONFiles.read(SnapshotMetadata.self, from: file) } catch {
                throw EngineError.damaged("snapshot '\(name)' cannot be read (\(error)), so gc cannot tell which blobs it needs; repair or remove it (clade rmi \(name)) first")
            }
            guard let metadata = read else { continue }
            result.formUnion([metadata.kernel, metadata.initrd, metadata.rootfs])
        }
        for id in try sandboxCatalog.ids() {
            guard try FileSystem.exists(sandboxCatalog.paths(id).record) else { continue }
            let record: SandboxRecord?
            do { record = try sandboxCatalog.get(id) } catch {
                throw EngineError.damaged("sandbox \(id)'s record cannot be read (\(error)), so gc cannot tell which blobs it needs; kill it (clade kill \(id)) first")
            }
            guard let record else { continue }
            result.formUnion([record.kernel, record.initrd, record.rootfs].compactMap { $0 })
            // A sandbox booted before records named their blobs still needs its image's.
            if record.rootfs == nil, let image = try imageCatalog.get(record.image) { result.formUnion([image.rootfs, image.initrd, image.kernel]) }
        }
        return result
    }

    static func allocatedBytes(under url: URL) -> Int64 {
        var total: Int64 = 0
        let enumerator = FileManager.default.enumerator(at: url, includingPropertiesForKeys: nil)
        if let status = try? FileSystem.status(of: url) { total += status.allocatedBytes }
        while let next = enumerator?.nextObject() as? URL {
            if let status = try? FileSystem.status(of: next) { total += status.allocatedBytes }
        }
        return total
    }
}
