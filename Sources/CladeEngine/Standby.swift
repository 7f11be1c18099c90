#if canImport(Glibc)
import Glibc
#endif
import CladeGuest
import CladeGuestProtocol
import CladeModel
import CladeStore
import CladeVMM
import Foundation

/// What a standby cost.
public struct StandbyReport: Codable, Sendable {
    public var id: String
    public var pauseMilliseconds: Double
    public var pagesCaptured: Int
    /// Whether the unshare guard had to give the sandbox a private memory file first.
    public var unshared: Bool

    enum CodingKeys: String, CodingKey {
        case id, unshared
        case pauseMilliseconds = "pause_ms"
        case pagesCaptured = "pages_captured"
    }
}

/// Standby: capture a running sandbox to disk and stop its process; resume it in place later.
public struct Standby: EngineCapability {
    let engine: Engine

    /// Captures a running sandbox into its own directory and stops its process. Without
    /// `keepMemory`, only its disk is kept (see ``enterKeepingDisk(id:)``).
    ///
    /// A fork's RAM is a private view of its memory file, so its written pages are merged into
    /// that file in place, after the unshare guard has made the file private if other names
    /// share its inode (the snapshot and sibling forks). A cold-booted sandbox's RAM already is
    /// its (private) memory file; only device state is saved.
    @discardableResult
    public func enter(id: String, keepMemory: Bool = true) async throws -> StandbyReport {
        guard keepMemory else { return try await enterKeepingDisk(id: id) }
        let lock = try FileLock(home: home, .sandbox(id))
        defer { lock.unlock() }
        var record = try runningRecord(id)
        guard let pid = record.pid else { throw EngineError.notRunning(id: id, state: record.state.rawValue) }
        let paths = sandboxCatalog.paths(id)
        let forked = record.snapshot != nil
        try backend.require(forked ? [.devicesOnlyState, .dirtyPageCapture] : .stateWithSharedMemory)
        let machine = machine(id, pid: pid)
        let start = Date()
        var captured = CapturedMemory.none
        let staged = paths.directory.appendingPathComponent(".standby.state.partial")
        try? FileSystem.remove(staged)
        try markPause(paths)
        defer { clearPauseMark(paths) }
        do {
            if forked {
                try await machine.saveState(to: staged, kind: .devicesOnly)
                captured = try await machine.captureMemory(.written, memoryFile: paths.memory)
            } else {
                try await machine.saveState(to: staged, kind: .memoryInSharedFile)
            }
        } catch {
            try? await machine.resume()
            try? FileSystem.remove(staged)
            throw error
        }
        let pause = Date().timeIntervalSince(start) * 1000
        FaultPoint.standbyCaptured.crashIfRequested()
        // Merge while the VM is still there but paused: the unshare guard renames a private copy
        // over the path and the VM keeps mapping the old inode, so if clade dies anywhere before the record
        // says standby, `clade ls` simply continues the paused VM and a retry starts over correctly
        // (the dirty set only grows, so rewriting pages into the private file is idempotent).
        var unshared = false
        do {
            if forked {
                unshared = try Materializer(logger: logger).makeExclusive(paths.memory)
                if unshared { chmod(paths.memory.path, 0o600) }
                try captured.write(into: paths.memory)
            }
            guard rename(staged.path, paths.standbyState.path) == 0 else {
                throw StoreError.systemCall("rename", path: paths.standbyState.path, errno: errno)
            }
        } catch {
            try? await machine.resume()
            try? FileSystem.remove(staged)
            throw error
        }
        record.state = .standby
        try sandboxCatalog.put(record)
        FaultPoint.standbyRecorded.crashIfRequested()
        // Only now may the process go; a crash before this line leaves a paused VM that
        // `clade ls` stops, because the record already says standby.
        await machine.stop()
        record.pid = nil
        try sandboxCatalog.put(record)
        logger.info("standby", metadata: ["id": "\(id)", "pause_ms": "\(Int(pause))", "pages": "\(captured.pages.pages.count)", "unshared": "\(unshared)"])
        return StandbyReport(id: id, pauseMilliseconds: pause, pagesCaptured: captured.pages.pages.count, unshared: unshared)
    }

    /// Restores a standby sandbox in place: same id, disk, memory file and agent endpoint.
    @discardableResult
    public func resume(id: String) async throws -> SandboxRecord {
        let lock = try FileLock(home: home, .sandbox(id))
        defer { lock.unlock() }
        var record = try sandboxCatalog.require(id)
        guard record.state == .standby else {
            throw EngineError.wrongState("sandbox \(id) is \(record.state.rawValue), not on standby; only a standby sandbox can be resumed")
        }
        let isolation = try engine.requireIsolation(for: record.network ?? .standard, optedOut: record.confinement)
        // Held until the record says running: `list` leaves the new process alone meanwhile.
        let setup = try FileLock(home: home, .sandboxSetup(id))
        defer { setup.unlock() }
        if record.standbyDiskOnly == true { return try await bootFromDisk(&record, isolation: isolation) }
        let boot = try bootFiles(of: record)
        // A root filesystem still arriving lazily needs its server before QEMU opens it.
        try engine.forks.ensureLazyRootfsServed(boot.rootfs)
        let paths = sandboxCatalog.paths(id)
        let forked = record.snapshot != nil
        var spec = machineSpec(
            memoryMiB: record.memoryMiB, cpus: record.cpus, accelerator: Accelerator(rawValue: record.accelerator) ?? .tcg,
            kernel: blobs.url(for: boot.kernel), initrd: blobs.url(for: boot.initrd), commandLine: boot.commandLine, paths: paths,
            port: record.agentPort, mac: record.mac)
        spec.rootDisk = paths.directory.appendingPathComponent(record.activeDisk ?? paths.disk.lastPathComponent)
        spec.restoreIntoSharedMemory = !forked
        do {
            spec.confinement = try confine(&record, policy: isolation.policy, checked: isolation)
            // On failure the backend stops the machine it launched.
            record.pid = try await backend.restore(spec, from: paths.standbyState, kind: forked ? .devicesOnly : .memoryInSharedFile).pid
            record.state = .running
            try sandboxCatalog.put(record)
            try await engine.forks.pushIdentity(record)
            // A new process has only the agent's forward: publish the ports again, on the same host ports.
            for published in record.publishedPorts ?? [] {
                try await machine(id, pid: record.pid).forwardPort(host: published.hostPort, guest: published.guestPort)
            }
        } catch {
            if let pid = record.pid { await machine(id, pid: pid).stop() }
            record.pid = nil
            record.state = .standby
            try? sandboxCatalog.put(record)
            throw EngineError.guestFailed("sandbox \(id) could not be resumed and stays on standby: \(error)")
        }
        try? FileSystem.remove(paths.standbyState)
        return record
    }
}
