#if canImport(Glibc)
import Glibc
#endif
import CladeGuestProtocol
import CladeModel
import CladeStore
import CladeVMM
import Foundation

/// What a sandbox booted from, by digest: everything a snapshot of it must name.
struct BootFiles {
    let kernel: Digest
    let initrd: Digest
    let rootfs: Digest
    let commandLine: String
}

/// The steps every way of making a snapshot (snapshot, branch, compact) shares: take the tag's
/// lock, check the tag is free, build the files in a hidden staging directory, and publish the
/// directory with one rename once it is complete.
extension Engine {
    /// Takes the lock for `tag` and fails if the tag is already taken. `option` names the flag
    /// that chose the tag, for the hint.
    func claimTag(_ tag: String, option: String = "--tag") throws -> FileLock {
        try Names.validate(tag, kind: "tag")
        let lock = try FileLock(home: home, .snapshot(tag))
        if try snapshotCatalog.get(tag) != nil {
            lock.unlock()
            throw ModelError.alreadyExists(kind: "snapshot", name: tag, hint: "choose another \(option) or remove it with `clade rmi \(tag)`")
        }
        return lock
    }

    /// A fresh, hidden directory beside the snapshots (same filesystem, two levels below the home
    /// so relative backing names resolve in it), swept if this process dies.
    func makeStagingDirectory(for tag: String) throws -> URL {
        try home.prepare()
        let staging = home.snapshots.appendingPathComponent(".staging-\(tag)-\(getpid())")
        try? FileSystem.remove(staging)
        try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: false)
        return staging
    }

    /// The boot files a sandbox recorded; an actionable error for sandboxes from older builds.
    func bootFiles(of record: SandboxRecord) throws -> BootFiles {
        guard let kernel = record.kernel, let initrd = record.initrd, let rootfs = record.rootfs, let commandLine = record.kernelCommandLine else {
            throw EngineError.unsupported("sandbox \(record.id) was started by an older clade that did not record its boot files; start a new one")
        }
        return BootFiles(kernel: kernel, initrd: initrd, rootfs: rootfs, commandLine: commandLine)
    }

    /// Seals `memory` and `devices.state` in `staging` (0444) and writes the `snapshot.json` that
    /// describes them, the sandbox's machine and its `layerCount` disk layers.
    func writeSnapshotMetadata(
        in staging: URL, tag: String, of record: SandboxRecord, boot: BootFiles, layerCount: Int,
        deviceStateFormat: String, parent: SnapshotMetadata.Parent?, branchedFrom: String? = nil
    ) throws -> SnapshotMetadata {
        let memory = staging.appendingPathComponent("memory")
        let deviceState = staging.appendingPathComponent("devices.state")
        try reclaimOwnership(of: staging)
        for file in [memory, deviceState] where chmod(file.path, 0o444) != 0 {
            throw StoreError.systemCall("chmod", path: file.path, errno: errno)
        }
        let state = try Digest.ofFile(at: deviceState)
        guard let memoryStatus = try FileSystem.status(of: memory) else { throw StoreError.systemCall("stat", path: memory.path, errno: ENOENT) }
        let spec = machineSpec(
            memoryMiB: record.memoryMiB, cpus: record.cpus, accelerator: Accelerator(rawValue: record.accelerator) ?? .tcg,
            kernel: blobs.url(for: boot.kernel), initrd: blobs.url(for: boot.initrd), commandLine: boot.commandLine,
            paths: sandboxCatalog.paths(record.id), port: 0, mac: record.mac)
        let metadata = SnapshotMetadata(
            tag: tag, id: UUID().uuidString.lowercased(),
            hypervisor: .init(name: backend.name, version: (try? backend.version()) ?? "unknown"),
            machine: .init(
                type: "microvm", vcpus: record.cpus, memoryMiB: record.memoryMiB,
                devices: backend.deviceLayout(for: spec), kernelCommandLine: boot.commandLine, accelerator: record.accelerator),
            image: record.image, kernel: boot.kernel, initrd: boot.initrd, rootfs: boot.rootfs,
            diskLayers: (0..<layerCount).map { index in
                .init(file: SandboxPaths.layerName(index), format: disks.layerFormat, backing: index == 0 ? boot.rootfs : nil)
            },
            memory: .init(file: "memory", logicalSize: memoryStatus.size, physicalSize: memoryStatus.allocatedBytes),
            deviceState: .init(file: "devices.state", size: state.size, sha256: state.digest, format: deviceStateFormat),
            parent: parent, agentProtocolVersion: agentProtocolVersion, branchedFrom: branchedFrom)
        var withConfig = metadata
        withConfig.imageConfig = record.imageConfig
        withConfig.network = record.network
        try JSONFiles.write(withConfig, to: staging.appendingPathComponent(SnapshotMetadata.fileName))
        return withConfig
    }

    /// A confined VMM wrote some of these files as its sandbox's uid; a snapshot's files belong to
    /// clade, so that no sandbox uid (which a later sandbox may reuse) can change them.
    func reclaimOwnership(of staging: URL) throws {
        guard geteuid() == 0 else { return }
        for name in try FileManager.default.contentsOfDirectory(atPath: staging.path) {
            let path = staging.appendingPathComponent(name).path
            guard chown(path, geteuid(), getegid()) == 0 else { throw StoreError.systemCall("chown", path: path, errno: errno) }
        }
    }

    /// Makes a complete staging directory visible as snapshot `tag`, atomically.
    func publishStagedSnapshot(_ staging: URL, as tag: String) throws {
        let final = snapshotCatalog.directory(tag)
        guard rename(staging.path, final.path) == 0 else { throw StoreError.systemCall("rename", path: final.path, errno: errno) }
        try? FileSystem.sync(home.snapshots)
        do {
            try snapshotCatalog.recordPublished(tag)
        } catch {
            // The snapshot is complete on disk; the catalog catches up when it is next reconciled.
            logger.error("snapshot published but not recorded in the catalog", metadata: ["tag": "\(tag)", "error": "\(error)"])
        }
    }
}
