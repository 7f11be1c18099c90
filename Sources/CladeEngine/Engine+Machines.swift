import CladeGuest
import CladeModel
import CladeStore
import CladeVMM
import Foundation

/// What every capability needs of a sandbox's machine: launching with an agent port, liveness,
/// teardown, the setup lock, console output.
extension Engine {
    /// A sandbox still `booting` after this many seconds was abandoned by a clade process that died.
    static let bootAbandonedAfter: Double = 300

    /// Starts a machine with `fixedPort`, or with a free loopback port for the agent, choosing
    /// another when the port was taken between picking it and the machine binding it.
    func launchWithAgentPort(_ fixedPort: Int?, spec makeSpec: (Int) throws -> MachineSpec) async throws -> (machine: any VMHandle, port: Int) {
        let attempts = fixedPort == nil ? 4 : 1
        for attempt in 1...attempts {
            let port = try fixedPort ?? PortAllocator.freeLoopbackPort()
            do {
                return (try await backend.launch(try makeSpec(port)), port)
            } catch VMMError.agentPortTaken where attempt < attempts {
                continue
            }
        }
        throw VMMError.launchFailed(backend: backend.name, reason: "no free loopback port for the agent after \(attempts) tries")
    }

    /// The relative name by which a sandbox's or snapshot's first disk layer reaches the image's
    /// root filesystem blob: both directories are two levels below the home.
    static func rootfsBackingName(_ rootfs: Digest) -> String { "../../blobs/sha256/\(rootfs.hex)" }

    /// The machine process id the runtime directory of sandbox `id` records, if any.
    func recordedPid(_ id: String) -> Int32? {
        let pid = machine(id, pid: nil).pid
        return pid > 0 ? pid : nil
    }

    func runningRecord(_ id: String) throws -> SandboxRecord {
        let record = try sandboxCatalog.require(id)
        guard record.state == .running, isAlive(id, pid: record.pid) else {
            if record.state == .dead, let cause = record.deathCause { throw EngineError.notRunning(id: id, state: "dead (\(cause))") }
            guard record.state == .running else { throw EngineError.notRunning(id: id, state: record.state.rawValue) }
            // A VM that a lazy server stopped keeps saying why on every later command.
            let cause = sandboxes.lazyMemoryFailure(sandbox: id, record: record) ?? "its VM exited"
            throw EngineError.notRunning(id: id, state: "dead (\(cause))")
        }
        return record
    }

    /// True while another live process holds `id`'s setup lock.
    func setupInProgress(_ id: String) -> Bool {
        do {
            guard let lock = try FileLock.attempt(home: home, .sandboxSetup(id)) else { return true }
            lock.unlock()
            return false
        } catch {
            return true  // cannot tell: leave it alone rather than delete a live sandbox
        }
    }

    /// Stops the process if it is still ours, then removes the sandbox directory.
    package func destroy(id: String, pid: Int32?) async {
        let paths = sandboxCatalog.paths(id)
        let confinement = (try? sandboxCatalog.get(id))?.confinement
        if let pid {
            await machine(id, pid: pid).stop()
        }
        releaseConfinement(confinement, sandbox: id)
        do {
            try FileSystem.remove(paths.directory)
        } catch {
            logger.error("cannot remove sandbox directory", metadata: ["path": "\(paths.directory.path)", "error": "\(error)"])
        }
        for lock in [LockName.sandboxSetup(id), .sandbox(id)] {
            try? FileSystem.remove(home.locks.appendingPathComponent("\(lock.rawValue).lock"))
        }
        do {
            try sandboxCatalog.forget(id)
        } catch {
            logger.error("cannot drop the sandbox from the catalog; it is dropped when the catalog is next reconciled", metadata: ["id": "\(id)", "error": "\(error)"])
        }
    }

    func consoleTail(_ id: String, lines: Int = 12) -> String {
        machine(id, pid: nil).consoleTail(lines: lines)
    }

    package var snapshotCatalog: SnapshotCatalog { SnapshotCatalog(home: home) }

    package func machineSpec(
        memoryMiB: Int, cpus: Int, accelerator: Accelerator, kernel: URL, initrd: URL, commandLine: String,
        paths: SandboxPaths, port: Int, mac: String
    ) -> MachineSpec {
        MachineSpec(
            name: "clade-\(paths.directory.lastPathComponent)", memoryMiB: memoryMiB, cpus: cpus, accelerator: accelerator,
            kernel: kernel, initrd: initrd, kernelCommandLine: commandLine, rootDisk: paths.disk, memoryFile: paths.memory,
            runtimeDirectory: paths.directory, agentPort: port, mac: mac)
    }

    var journal: OperationJournal { OperationJournal(home: home) }

    /// Opens a journal entry for an operation about to create `paths` (see ``OperationJournal``).
    func beginOperation(_ kind: OperationKind, subject: String, paths: [URL] = []) throws -> OperationJournal.Entry {
        try journal.begin(kind: kind, subject: subject, paths: paths)
    }

    /// Marks that this operation may pause the guest (see ``continueIfAbandoned(id:pid:paths:)``).
    func markPause(_ paths: SandboxPaths) throws {
        try FileSystem.writeAtomically(Data("\(getpid())".utf8), to: paths.pauseMarker)
    }

    func clearPauseMark(_ paths: SandboxPaths) {
        try? FileSystem.remove(paths.pauseMarker)
    }
}
