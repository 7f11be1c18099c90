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
        try Names.validate(newTag, kind: "tag")
        let lock = try FileLock(home: home, name: "snapshot-\(newTag)")
        defer { lock.unlock() }
        if try snapshotCatalog.get(newTag) != nil {
            throw ModelError.alreadyExists(kind: "snapshot", name: newTag, hint: "choose another --to or remove it with `clade rmi \(newTag)`")
        }
        let source = try snapshotCatalog.require(tag)
        try preflight(source)
        guard let top = source.diskLayers.last else { throw EngineError.invalidOption("snapshot '\(tag)' has no disk layer") }
        let directory = snapshotCatalog.directory(tag)
        let staging = home.snapshots.appendingPathComponent(".staging-\(newTag)-\(getpid())")
        try? FileSystem.remove(staging)
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: false)
        do {
            let materializer = Materializer(logger: logger)
            try materializer.materialize(directory.appendingPathComponent(source.memory.file), at: staging.appendingPathComponent("memory"))
            try materializer.materialize(directory.appendingPathComponent(source.deviceState.file), at: staging.appendingPathComponent("devices.state"))
            // The staging directory is two levels below the home, like every snapshot directory,
            // so the relative backing name resolves here and after the rename.
            let layer = staging.appendingPathComponent(SandboxPaths.layerName(0))
            try ExternalCommand("qemu-img", [
                "convert", "-q", "-O", "qcow2", "-B", "../../blobs/sha256/\(source.rootfs.hex)", "-F", "raw",
                directory.appendingPathComponent(top.file).path, layer.path,
            ], currentDirectory: staging).check()
            guard chmod(layer.path, 0o444) == 0 else { throw StoreError.systemCall("chmod", path: layer.path, errno: errno) }
            var metadata = source
            metadata.tag = newTag
            metadata.id = UUID().uuidString.lowercased()
            metadata.createdAt = Date()
            metadata.parent = nil
            metadata.diskLayers = [.init(file: SandboxPaths.layerName(0), format: "qcow2", backing: source.rootfs)]
            try JSONFiles.write(metadata, to: staging.appendingPathComponent(SnapshotMetadata.fileName))
            let final = snapshotCatalog.directory(newTag)
            guard rename(staging.path, final.path) == 0 else { throw StoreError.systemCall("rename", path: final.path, errno: errno) }
            try? FileSystem.sync(home.snapshots)
            logger.info("compacted", metadata: ["from": "\(tag)", "to": "\(newTag)", "layers_before": "\(source.diskLayers.count)"])
            return metadata
        } catch {
            try? FileSystem.remove(staging)
            throw error
        }
    }
}
