#if canImport(Glibc)
import Glibc
#endif
import CladeGuest
import CladeGuestProtocol
import CladeModel
import CladeStore
import CladeVMM
import Foundation

/// Options for `clade bake`.
public struct BakeOptions: Sendable {
    public var boot: BootOptions
    public var tag: String
    /// A shell command run (with `sh -c`) before the snapshot, e.g. to start an interpreter.
    public var warm: String?
    /// Who runs `warm`; nil means the image's user (as every exec).
    public var warmUser: String?
    /// A Python 3 executable to leave running in the snapshot as its resident interpreter
    /// (answering `eval`), after it has run `preload`.
    public var interpreter: String?
    public var preload: String?

    public init(boot: BootOptions, tag: String, warm: String? = nil, warmUser: String? = nil, interpreter: String? = nil, preload: String? = nil) {
        self.boot = boot
        self.tag = tag
        self.warm = warm
        self.warmUser = warmUser
        self.interpreter = interpreter
        self.preload = preload
    }
}

/// A snapshot with its sizes and what depends on it.
public struct SnapshotInfo: Encodable, Sendable {
    public var metadata: SnapshotMetadata
    public var logicalBytes: Int64
    public var physicalBytes: Int64
    public var dependentSandboxes: [String]
    public var childSnapshots: [String]
    /// From the catalog's lineage: parent, grandparent, … to the root.
    public var ancestors: [String]
    /// Every snapshot layered on this one, directly or not, nearest first.
    public var descendants: [String]

    enum CodingKeys: String, CodingKey {
        case metadata, ancestors, descendants
        case logicalBytes = "logical_bytes"
        case physicalBytes = "physical_bytes"
        case dependentSandboxes = "dependent_sandboxes"
        case childSnapshots = "child_snapshots"
    }
}

/// Snapshots: take one of a cold-booted sandbox, bake, list, inspect, remove, compact.
public struct Snapshots: EngineCapability {
    let engine: Engine


    /// Pauses a cold-booted sandbox and captures it as snapshot `tag`: device state via QMP, the
    /// memory file (sealed 0444) and the disk overlay (frozen 0444 as the snapshot's layer).
    /// Without `keepRunning` the sandbox is gone afterwards; with it, it continues as a fork of the
    /// new snapshot with the same id and endpoint (a new process on a private view of the memory).
    public func take(id: String, tag: String, keepRunning: Bool = false, progress: @Sendable (String) -> Void = { _ in }) async throws -> SnapshotMetadata {
        let lock = try claimTag(tag)
        defer { lock.unlock() }
        let record = try runningRecord(id)
        if record.snapshot != nil {
            throw EngineError.wrongState(
                "sandbox \(id) was forked from snapshot '\(record.snapshot ?? "")'; its memory is a private copy-on-write view, so it is captured with `clade branch` (not available yet), not `clade snapshot`")
        }
        let boot = try bootFiles(of: record)
        try backend.require(.stateWithSharedMemory)
        let paths = sandboxCatalog.paths(id)
        let staging = try makeStagingDirectory(for: tag)
        let entry = try beginOperation(.snapshot, subject: tag, paths: [staging])
        defer { journal.end(entry) }
        let stagedState = staging.appendingPathComponent("devices.state")
        let machine = machine(id, pid: record.pid)
        // Held until each fork has its own seed; `keepRunning` restarts it as such a fork.
        let held = await engine.holdUserProcesses(record)
        await engine.waitUntilGuestIdles(pid: record.pid)
        progress("pausing \(id) and saving its device state")
        let pauseStart = Date()
        do {
            try await machine.saveState(to: stagedState, kind: .memoryInSharedFile)
        } catch {
            try? await machine.resume()
            if held { await engine.releaseUserProcesses(record) }
            try? FileSystem.remove(staging)
            throw error
        }
        let pauseMilliseconds = Date().timeIntervalSince(pauseStart) * 1000
        // The VM is paused and its state saved; stop it so nothing can write the memory file again.
        await machine.stop()
        let memory = staging.appendingPathComponent("memory")
        let disk = staging.appendingPathComponent(SandboxPaths.layerName(0))
        do {
            for (from, to) in [(paths.memory, memory), (paths.disk, disk)] {
                try Materializer(logger: logger).move(from, to: to)
            }
            guard chmod(disk.path, 0o444) == 0 else { throw StoreError.systemCall("chmod", path: disk.path, errno: errno) }
            let metadata = try writeSnapshotMetadata(
                in: staging, tag: tag, of: record, boot: boot, layerCount: 1,
                deviceStateFormat: SnapshotMetadata.DeviceState.migrationFormat, parent: nil)
            try publishStagedSnapshot(staging, as: tag)
            releaseConfinement(record.confinement, sandbox: id)
            try FileSystem.remove(paths.directory)
            try sandboxCatalog.forget(id)
            logger.info("snapshot taken", metadata: ["tag": "\(tag)", "pause_ms": "\(Int(pauseMilliseconds))", "device_state_bytes": "\(metadata.deviceState.size)"])
            if keepRunning {
                progress("resuming \(id) as a fork of \(tag)")
                _ = try await engine.forks.startChild(of: metadata, id: id, port: record.agentPort, mac: record.mac, network: record.network,
                    keepingOptOutOf: record.confinement, limits: record.limits.map { LimitRequest(cpuCores: $0.cpuCores, memoryMiB: $0.memoryMiB, processes: $0.processes) })
            }
            return metadata
        } catch {
            try? FileSystem.remove(staging)
            await destroy(id: id, pid: nil)
            throw error
        }
    }

    /// Boots, optionally warms up, snapshots and stops: the usual way to make a snapshot.
    public func bake(_ options: BakeOptions, progress: @Sendable (String) -> Void = { _ in }) async throws -> SnapshotMetadata {
        // Fail before booting if the tag is taken; `snapshot` takes the tag's lock for real.
        try claimTag(options.tag).unlock()
        if options.preload != nil && options.interpreter == nil {
            throw EngineError.badInput("--preload runs in the resident interpreter; name one with --interpreter (e.g. python3)")
        }
        let entry = try beginOperation(.bake, subject: options.tag)
        defer { journal.end(entry) }
        let record = try await engine.sandboxes.boot(options.boot, partOf: entry, progress: progress)
        do {
            FaultPoint.bakeBooted.crashIfRequested()
            if let warm = options.warm {
                progress("warming up: \(warm)")
                // The warm-up runs the way every exec will: as the image's user, in its environment.
                let defaults = ExecDefaults(record.imageConfig).apply(env: nil, cwd: nil, user: options.warmUser)
                let response = try await AgentClient(port: record.agentPort, sandbox: record.id).exec(
                    ["sh", "-c", warm], env: defaults.env, cwd: defaults.cwd, user: defaults.user, timeout: 600)
                guard response.exitCode == 0 else {
                    throw EngineError.guestFailed("the warm-up command exited with \(response.exitCode.map(String.init) ?? "an error"): \(response.error ?? response.stderr ?? "")")
                }
            }
            if let interpreter = options.interpreter {
                progress("starting the resident interpreter \(interpreter)" + (options.preload.map { " after: \($0)" } ?? ""))
                let user = ExecDefaults(record.imageConfig).apply(env: nil, cwd: nil, user: options.warmUser).user
                try await ResidentInterpreter.start(
                    on: AgentClient(port: record.agentPort, sandbox: record.id), interpreter: interpreter, preload: options.preload, user: user)
            }
            progress("snapshotting as \(options.tag)")
            return try await take(id: record.id, tag: options.tag, progress: progress)
        } catch {
            if (try? sandboxCatalog.get(record.id)) != nil { try? await engine.sandboxes.kill(id: record.id) }
            throw error
        }
    }

    /// Every snapshot, from the catalog (after rolling back operations a dead clade left half-done).
    public func list() async throws -> [SnapshotMetadata] {
        try await engine.recovery.recoverInterruptedOperations()
        engine.recovery.sweepInterruptedSnapshotWork()
        return try snapshotCatalog.list()
    }

    public func info(_ tag: String) async throws -> SnapshotInfo {
        let metadata = try snapshotCatalog.require(tag)
        let directory = snapshotCatalog.directory(tag)
        var logical: Int64 = 0, physical: Int64 = 0
        for name in try FileManager.default.contentsOfDirectory(atPath: directory.path) {
            if let status = try FileSystem.status(of: directory.appendingPathComponent(name)) {
                logical += status.size
                physical += status.allocatedBytes
            }
        }
        let (sandboxIDs, children) = try await dependents(of: tag)
        return SnapshotInfo(
            metadata: metadata, logicalBytes: logical, physicalBytes: physical, dependentSandboxes: sandboxIDs, childSnapshots: children,
            ancestors: try snapshotCatalog.ancestors(of: tag), descendants: try snapshotCatalog.descendants(of: tag))
    }

    /// Live sandboxes forked from `tag`, and snapshots whose parent is `tag`.
    func dependents(of tag: String) async throws -> (sandboxes: [String], snapshots: [String]) {
        let live = try await engine.sandboxes.list().filter { $0.snapshot == tag && $0.state != .dead }.map(\.id)
        let children = try snapshotCatalog.list().filter { $0.parent?.tag == tag }.map(\.tag)
        return (live, children)
    }

    /// Removes snapshot `tag`. Refuses while sandboxes or snapshots depend on it, listing them;
    /// `force` removes the names anyway (running forks keep their own hardlinks and keep working);
    /// `cascade` first kills its sandboxes and removes its descendants.
    public func remove(_ tag: String, force: Bool = false, cascade: Bool = false) async throws -> [String] {
        _ = try snapshotCatalog.require(tag)
        let (live, children) = try await dependents(of: tag)
        var removed: [String] = []
        if cascade {
            for child in children { removed += try await remove(child, force: force, cascade: true) }
            for id in live { try await engine.sandboxes.kill(id: id) }
        } else if !force, !(live.isEmpty && children.isEmpty) {
            throw EngineError.inUse(tag: tag, sandboxes: live, snapshots: children)
        }
        let lock = try FileLock(home: home, .snapshot(tag))
        defer { lock.unlock() }
        let directory = snapshotCatalog.directory(tag)
        let snapshotID = (try? snapshotCatalog.require(tag))?.id
        // Rename first so the tag disappears atomically, then unlink the files.
        let doomed = home.snapshots.appendingPathComponent(".deleting-\(tag)-\(getpid())")
        let entry = try beginOperation(.removeSnapshot, subject: tag, paths: [doomed])
        defer { journal.end(entry) }
        guard rename(directory.path, doomed.path) == 0 else { throw StoreError.systemCall("rename", path: directory.path, errno: errno) }
        try snapshotCatalog.recordRemoved(tag)
        try FileSystem.remove(doomed)
        // Sandboxes left running by --force still name the RAM tier's copy: it stays until they go.
        // A tag pulled from this store's own push shares the id, and the copy, with the original.
        let sharedID = (try? snapshotCatalog.list().contains { $0.id == snapshotID }) ?? true
        if let snapshotID, live.isEmpty || cascade, !sharedID { engine.memoryTier.remove(snapshotID: snapshotID) }
        removed.append(tag)
        return removed
    }

    /// Flattens snapshot `tag`'s disk chain into one layer over the rootfs blob and writes the
    /// result as `newTag`, a standalone snapshot with no parent: its forks are as fast as those of
    /// a baked snapshot, and it survives the removal of every ancestor. Memory and device state are
    /// already standalone per snapshot, so they are hardlinked, not copied.
    @discardableResult
    public func compact(_ tag: String, to newTag: String) async throws -> SnapshotMetadata {
        let lock = try claimTag(newTag, option: "--to")
        defer { lock.unlock() }
        let source = try snapshotCatalog.require(tag)
        try engine.forks.preflight(source)
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
            try disks.flatten(directory.appendingPathComponent(top.file), into: layer, backingName: Engine.rootfsBackingName(source.rootfs))
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
