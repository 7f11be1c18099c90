#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladeStore
import Foundation

extension Engine {
    /// Flattens snapshot `tag`'s disk chain into one layer over the rootfs blob and writes the
    /// result as `newTag`, a standalone snapshot with no parent: its forks are as fast as those of
    /// a baked snapshot, and it survives the removal of every ancestor. Memory and device state are
    /// already standalone per snapshot, so they are hardlinked, not copied.
    @discardableResult
    public func compact(_ tag: String, to newTag: String) async throws -> SnapshotMetadata {
        let lock = try claimTag(newTag, option: "--to")
        defer { lock.unlock() }
        let source = try snapshotCatalog.require(tag)
        try preflight(source)
        guard let top = source.diskLayers.last else { throw EngineError.damaged("snapshot '\(tag)' has no disk layer") }
        let directory = snapshotCatalog.directory(tag)
        let staging = try makeStagingDirectory(for: newTag)
        let entry = try beginOperation(.compact, subject: newTag, paths: [staging])
        defer { journal.end(entry) }
        do {
            let materializer = Materializer(logger: logger)
            try materializer.materialize(directory.appendingPathComponent(source.memory.file), at: staging.appendingPathComponent("memory"))
            try materializer.materialize(directory.appendingPathComponent(source.deviceState.file), at: staging.appendingPathComponent("devices.state"))
            // The staging directory is two levels below the home, like every snapshot directory,
            // so the relative backing name resolves here and after the rename.
            let layer = staging.appendingPathComponent(SandboxPaths.layerName(0))
            try disks.flatten(directory.appendingPathComponent(top.file), into: layer, backingName: Self.rootfsBackingName(source.rootfs))
            guard chmod(layer.path, 0o444) == 0 else { throw StoreError.systemCall("chmod", path: layer.path, errno: errno) }
            var metadata = source
            metadata.tag = newTag
            metadata.id = UUID().uuidString.lowercased()
            metadata.createdAt = Date()
            metadata.parent = nil
            metadata.diskLayers = [.init(file: SandboxPaths.layerName(0), format: disks.layerFormat, backing: source.rootfs)]
            try JSONFiles.write(metadata, to: staging.appendingPathComponent(SnapshotMetadata.fileName))
            try publishStagedSnapshot(staging, as: newTag)
            logger.info("compacted", metadata: ["from": "\(tag)", "to": "\(newTag)", "layers_before": "\(source.diskLayers.count)"])
            return metadata
        } catch {
            try? FileSystem.remove(staging)
            throw error
        }
    }
}
