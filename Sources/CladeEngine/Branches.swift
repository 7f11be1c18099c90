#if canImport(Glibc)
import Glibc
#endif
import CladeGuestProtocol
import CladeModel
import CladeStore
import CladeVMM
import Foundation

/// How `branch` captures memory.
public enum BranchMode: String, Codable, Sendable, CaseIterable {
    /// Every page of guest RAM is written to a new memory file.
    case full
    /// Only the pages the sandbox wrote since its restore, over a private copy of its parent's memory.
    case diff
    /// The guest stops only while its memory is write-protected, its device state saved and its
    /// disk frozen; RAM is copied while it runs on, so the pause does not grow with what it has written.
    case live
    /// A request, never a result: `live` where the sandbox can be copied live, else `diff`.
    case auto

    /// The mode `auto` stands for when a live copy is possible (`liveBlocker` nil) or not;
    /// other modes are themselves.
    public func resolved(liveBlocker: String?) -> BranchMode {
        guard self == .auto else { return self }
        return liveBlocker == nil ? .live : .diff
    }
}

/// What a branch cost.
public struct BranchReport: Codable, Sendable, Equatable {
    public var tag: String
    public var mode: BranchMode
    /// From `stop` to `cont`: the time the guest did not run.
    public var pauseMilliseconds: Double
    public var pagesCaptured: Int
    public var bytesWritten: Int64
    public var totalMilliseconds: Double
    /// Live branches: mapping the guest's pages in before the pause, while it runs.
    public var prefaultMilliseconds: Double?

    enum CodingKeys: String, CodingKey {
        case tag, mode
        case prefaultMilliseconds = "prefault_ms"
        case pauseMilliseconds = "pause_ms"
        case pagesCaptured = "pages_captured"
        case bytesWritten = "bytes_written"
        case totalMilliseconds = "total_ms"
    }
}

/// Branches: capture a running fork into a new snapshot layered on its origin, and let it run on.
public struct Branches: EngineCapability {
    let engine: Engine

    /// Snapshots a running fork into a new tag whose parent is its origin, and lets it run on.
    ///
    /// Paused only for: stop, device-only state, the pagemap scan, reading the dirty pages and
    /// freezing the disk (a new overlay on top). The new memory file is a private copy of the
    /// fork's base memory (reflink where possible, else sparse copy) with the dirty pages written
    /// in at their offsets, built after the guest runs again. The base memory file is never
    /// written: the copy is a new inode, so the unshare guard's rule holds by construction.
    ///
    /// A live branch (`mode: .live`, or `.auto` where the sandbox allows it: memory on tmpfs,
    /// userfaultfd for its VMM) pauses only to arm write protection, save device state and freeze
    /// the disk, then copies RAM while the guest runs; see ``CladeVMM/VMHandle/copyMemoryLive(_:)``.
    public func branch(id: String, tag: String, mode requested: BranchMode = .diff, progress: @Sendable (String) -> Void = { _ in }) async throws -> (SnapshotMetadata, BranchReport) {
        let started = Date()
        let lock = try claimTag(tag)
        defer { lock.unlock() }
        let sandboxLock = try FileLock(home: home, .sandbox(id))
        defer { sandboxLock.unlock() }
        var record = try runningRecord(id)
        let liveBlocker = liveCopyBlocker(record)
        let mode = requested.resolved(liveBlocker: liveBlocker)
        guard let origin = record.snapshot else {
            throw EngineError.wrongState("sandbox \(id) was cold-booted, so its memory is not layered on a snapshot; capture it with `clade snapshot \(id) --tag \(tag) --keep-running`")
        }
        let boot = try bootFiles(of: record)
        guard let layerCount = record.layerCount, let activeDisk = record.activeDisk, let pid = record.pid else {
            throw EngineError.unsupported("sandbox \(id) was started by an older clade that did not record its disk chain; fork a new one")
        }
        guard layerCount + 1 <= SnapshotMetadata.maxChainDepth else {
            throw EngineError.badInput("a branch of \(id) would have \(layerCount + 1) disk layers, more than the limit of \(SnapshotMetadata.maxChainDepth); `clade compact \(origin) --to NEW` and fork from NEW")
        }
        // Refused before anything is created when the backend cannot do what this mode needs.
        if mode == .live, let liveBlocker {
            throw EngineError.unsupported("sandbox \(id) cannot be branched live: \(liveBlocker); branch it with --mode diff (auto does)")
        }
        try backend.require(mode == .live ? [.liveMemoryCopy] : [.devicesOnlyState, .liveDiskFreeze, Self.memoryCapability(mode)])
        try await fetchLazyMemoryBeforeBranching(id, progress: progress)
        let machine = machine(id, pid: pid)
        let paths = sandboxCatalog.paths(id)
        let staging = try makeStagingDirectory(for: tag)
        let entry = try beginOperation(.branch, subject: tag, paths: [staging])
        defer { journal.end(entry) }
        let stagedState = staging.appendingPathComponent("devices.state")
        let nextDisk = "disk-\(layerCount + 1).\(disks.layerFormat)"

        // Prepare the disk switch before pausing: the current overlay gets its layer name (a
        // hardlink) and the next overlay is created on top of it, so the pause only has to swap.
        let frozen = paths.layer(layerCount)
        let next = paths.directory.appendingPathComponent(nextDisk)
        func undoDiskPreparation() {
            try? FileSystem.remove(frozen)
            try? FileSystem.remove(next)
        }
        do {
            try? FileSystem.remove(frozen)
            try? FileSystem.remove(next)
            guard link(paths.directory.appendingPathComponent(activeDisk).path, frozen.path) == 0 else {
                throw StoreError.systemCall("link", path: frozen.path, errno: errno)
            }
            try disks.createOverlay(at: next, backingName: frozen.lastPathComponent, backingFormat: .layer)
        } catch {
            undoDiskPreparation()
            try? FileSystem.remove(staging)
            throw error
        }

        try markPause(paths)
        defer { clearPauseMark(paths) }
        let memory = staging.appendingPathComponent("memory")
        var captured = CapturedMemory.none
        var live: LiveCopyReport?
        var held = false
        let diskMoved = Locked(false)
        let pauseStart = Date()
        do {
            if mode == .live {
                progress("copying the memory of \(id) while it runs")
                let fd = try FileSystem.open(memory, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
                close(fd)
                let plan = LiveCopyPlan(
                    memoryFile: memory, memoryBytes: Int64(record.memoryMiB) << 20, sourceMemoryFile: paths.memory, deviceState: stagedState,
                    diskOverlay: next, onDiskFrozen: { diskMoved.withLock { $0 = true } })
                held = await engine.holdUserProcesses(record)
                live = try await machine.copyMemoryLive(plan)
            } else {
                progress("pausing \(id)")
                held = await engine.holdUserProcesses(record)
                try await machine.saveState(to: stagedState, kind: .devicesOnly)
                captured = try await machine.captureMemory(mode == .diff ? .written : .all, memoryFile: paths.memory)
                FaultPoint.branchPaused.crashIfRequested()
                // Freeze the disk: the current overlay becomes layer N, the new overlay takes the writes.
                try await machine.freezeDisk(onto: next)
                try await machine.resume()
            }
        } catch {
            try? await machine.resume()
            if held { await engine.releaseUserProcesses(record) }
            try? FileSystem.remove(staging)
            if diskMoved.current {
                // The machine writes to the new overlay now: the record follows it, and the old
                // overlay is a sealed layer like any other.
                chmod(frozen.path, 0o444)
                record.activeDisk = nextDisk
                record.layerCount = layerCount + 1
                try? sandboxCatalog.put(record)
            } else {
                undoDiskPreparation()
            }
            if let reason = engine.sandboxes.lazyMemoryFailureReason(sandbox: id) {
                // Reading the guest's memory met a chunk the registry could not give: the guest
                // never saw it, so it runs on; only the copy failed.
                throw EngineError.guestFailed(
                    "sandbox \(id) could not be branched: part of its memory is still in the registry and could not be fetched lazily (\(reason)); it keeps running. Branch it with --mode diff, or again once `clade pull` of its snapshot has completed")
            }
            throw error
        }
        // The source continues as itself: its processes run on with its own RNG state.
        if held { await engine.releaseUserProcesses(record) }
        // The VM now only reads the frozen layer; seal it like every other snapshot file.
        guard chmod(frozen.path, 0o444) == 0 else { throw StoreError.systemCall("chmod", path: frozen.path, errno: errno) }
        let pauseMilliseconds = live?.pauseMilliseconds ?? Date().timeIntervalSince(pauseStart) * 1000
        record.activeDisk = nextDisk
        record.layerCount = layerCount + 1
        try sandboxCatalog.put(record)

        do {
            if mode != .live { progress("writing the \(mode.rawValue) memory file (\(captured.pages.pages.count) pages)") }
            if mode == .diff {
                try Materializer(logger: logger).materialize(paths.memory, at: memory, order: Materializer.privateCopyOrder)
                chmod(memory.path, 0o644)
            } else if mode == .full {
                let fd = try FileSystem.open(memory, flags: O_WRONLY | O_CREAT | O_EXCL, mode: 0o644)
                let sized = ftruncate(fd, off_t(record.memoryMiB) << 20)
                close(fd)
                guard sized == 0 else { throw StoreError.systemCall("ftruncate", path: memory.path, errno: errno) }
            }
            if mode != .live { try captured.write(into: memory) }
            for index in 0...layerCount {
                try Materializer(logger: logger).materialize(paths.layer(index), at: staging.appendingPathComponent(SandboxPaths.layerName(index)))
            }
            let metadata = try writeSnapshotMetadata(
                in: staging, tag: tag, of: record, boot: boot, layerCount: layerCount + 1,
                deviceStateFormat: SnapshotMetadata.DeviceState.devicesFormat,
                parent: .init(tag: origin, id: record.snapshotID ?? "unknown"), branchedFrom: id)
            FaultPoint.branchStaged.crashIfRequested()
            try publishStagedSnapshot(staging, as: tag)
            let pages = live?.pagesWritten ?? captured.pages.pages.count
            let report = BranchReport(
                tag: tag, mode: mode, pauseMilliseconds: pauseMilliseconds, pagesCaptured: pages,
                bytesWritten: live.map { Int64($0.pagesWritten * DirtyPages.pageSize) } ?? Int64(captured.contents.count),
                totalMilliseconds: Date().timeIntervalSince(started) * 1000, prefaultMilliseconds: live?.prefaultMilliseconds)
            logger.info("branched", metadata: ["id": "\(id)", "tag": "\(tag)", "mode": "\(mode.rawValue)", "pause_ms": "\(Int(pauseMilliseconds))", "pages": "\(pages)"])
            return (metadata, report)
        } catch {
            try? FileSystem.remove(staging)
            throw error
        }
    }

    /// Why sandbox `record` cannot be branched live on this host; nil when it can.
    public func liveCopyBlocker(_ record: SandboxRecord) -> String? {
        let unprivileged = geteuid() != 0 || record.confinement?.uid != nil || !(record.confinement?.namespaces ?? []).isEmpty
        return backend.liveMemoryCopyBlocker(memoryFile: sandboxCatalog.paths(record.id).memory, unprivilegedProcess: unprivileged)
    }

    static func memoryCapability(_ mode: BranchMode) -> BackendCapabilities {
        switch mode {
        case .diff: .dirtyPageCapture
        case .full: .fullMemoryCapture
        case .live, .auto: .liveMemoryCopy
        }
    }
}
