#if canImport(Glibc)
import Glibc
#endif
import CladeGuest
import CladeGuestProtocol
import CladeModel
import CladeStore
import CladeVMM
import Foundation

/// Standby that keeps only the disk: nothing of the guest's memory is written, so it costs a
/// sync instead of a capture, and the sandbox comes back by booting from its own disk (a new
/// boot: processes and memory are gone, files stay).
extension Standby {
    /// Flushes the guest's filesystems to its disk, then stops its process.
    @discardableResult
    func enterKeepingDisk(id: String) async throws -> StandbyReport {
        let lock = try FileLock(home: home, .sandbox(id))
        defer { lock.unlock() }
        var record = try runningRecord(id)
        guard let pid = record.pid else { throw EngineError.notRunning(id: id, state: record.state.rawValue) }
        let start = Date()
        // The guest's page cache, then QEMU's own caches (a guest flush reaches the qcow2 image).
        let synced = try await AgentClient(port: record.agentPort, sandbox: id).run(ProcessSpec(args: ["sync"], user: "root")) { _ in }
        guard synced.code == 0 else { throw EngineError.guestFailed("sandbox \(id) could not sync its filesystems (exit \(synced.code)); it keeps running") }
        record.state = .standby
        record.standbyDiskOnly = true
        try sandboxCatalog.put(record)
        await machine(id, pid: pid).stop()
        record.pid = nil
        try sandboxCatalog.put(record)
        // A fork's memory file is a name for its snapshot's sealed one; the next boot must have a
        // fresh file of its own, never write into that.
        let paths = sandboxCatalog.paths(id)
        try? FileSystem.remove(paths.memory)
        try? FileSystem.remove(paths.standbyState)
        let pause = Date().timeIntervalSince(start) * 1000
        logger.info("standby keeping the disk only", metadata: ["id": "\(id)", "ms": "\(Int(pause))"])
        return StandbyReport(id: id, pauseMilliseconds: pause, pagesCaptured: 0, unshared: false)
    }

    /// Boots a disk-only standby sandbox from its own disk, as itself: same id, agent port, MAC
    /// and hostname.
    func bootFromDisk(_ record: inout SandboxRecord, isolation: Engine.IsolationCheck) async throws -> SandboxRecord {
        let id = record.id
        let boot = try bootFiles(of: record)
        // A root filesystem still arriving lazily needs its server before QEMU opens it.
        try engine.forks.ensureLazyRootfsServed(boot.rootfs)
        let paths = sandboxCatalog.paths(id)
        try? FileSystem.remove(paths.memory)
        // A fork's command line is its snapshot's, naming the machine it was baked on.
        let commandLine = boot.commandLine.split(separator: " ").map { $0.hasPrefix("clade.hostname=") ? "clade.hostname=\(id)" : String($0) }
            .joined(separator: " ")
        var spec = machineSpec(
            memoryMiB: record.memoryMiB, cpus: record.cpus, accelerator: Accelerator(rawValue: record.accelerator) ?? .tcg,
            kernel: blobs.url(for: boot.kernel), initrd: blobs.url(for: boot.initrd), commandLine: commandLine, paths: paths,
            port: record.agentPort, mac: record.mac)
        spec.rootDisk = paths.directory.appendingPathComponent(record.activeDisk ?? paths.disk.lastPathComponent)
        do {
            spec.confinement = try confine(&record, policy: isolation.policy, checked: isolation)
            let machine = try await backend.launch(spec)
            record.pid = machine.pid
            _ = try await AgentClient(port: record.agentPort, sandbox: id).waitUntilReady(timeout: 180) {
                if !machine.isAlive { throw EngineError.guestFailed("the VM exited while booting: \(machine.consoleTail(lines: 8))") }
            }
            for published in record.publishedPorts ?? [] {
                try await machine.forwardPort(host: published.hostPort, guest: published.guestPort)
            }
        } catch {
            if let pid = record.pid { await machine(id, pid: pid).stop() }
            record.pid = nil
            record.state = .standby
            try? sandboxCatalog.put(record)
            throw EngineError.guestFailed("sandbox \(id) could not be booted from its disk and stays on standby: \(error)")
        }
        record.state = .running
        record.standbyDiskOnly = nil
        record.kernelCommandLine = commandLine
        try sandboxCatalog.put(record)
        return record
    }
}
