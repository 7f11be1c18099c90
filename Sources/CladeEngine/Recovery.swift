#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladeStore
import CladeVMM
import Foundation
import Glibc

/// What rolling back interrupted operations did.
public struct RecoveryReport: Sendable, Equatable {
    /// `kind subject` of each journal entry rolled back.
    public var rolledBack: [String] = []
    /// What reconciling the catalog with the directories changed afterwards.
    public var reconciled: CatalogReconciler.Changes = .init()
}

/// Recovery: rolling back operations a dead clade left half-done, continuing guests it left
/// paused, sweeping its staging directories, and re-adopting running machines after a restart.
public struct Recovery: EngineCapability {
    let engine: Engine

    /// Rolls back every operation whose clade process died half-way, then reconciles the catalog
    /// with the directories if anything was rolled back (or `reconcile` asks for it anyway).
    ///
    /// A sandbox directory an interrupted operation listed is destroyed (its VM stopped): the
    /// caller never learned of it, so nobody would ever kill it. Staging directories and files
    /// being deleted are removed. A snapshot the operation had already published stays: its
    /// directory is complete (publishing is one rename), and reconciling records it.
    @discardableResult
    public func recoverInterruptedOperations(reconcile: Bool = false) async throws -> RecoveryReport {
        var report = RecoveryReport()
        for entry in try journal.abandoned() {
            logger.warning(
                "rolling back an operation interrupted when its clade process died",
                metadata: ["kind": "\(entry.kind)", "subject": "\(entry.subject)", "pid": "\(entry.owner.pid)"])
            for url in entry.urls(in: home) {
                if url.deletingLastPathComponent().standardizedFileURL == home.sandboxes.standardizedFileURL {
                    let id = url.lastPathComponent
                    guard (try? Names.validateSandboxID(id)) != nil else { continue }
                    let pid = (try? sandboxCatalog.get(id))??.pid ?? recordedPid(id)
                    await destroy(id: id, pid: pid)
                } else if (try? FileSystem.exists(url)) == true {
                    try? FileSystem.remove(url)
                }
            }
            journal.end(entry)
            report.rolledBack.append("\(entry.kind) \(entry.subject)")
        }
        if reconcile || !report.rolledBack.isEmpty {
            report.reconciled = try CatalogReconciler(home: home, database: try CatalogDatabase.shared(home)).reconcile()
        }
        return report
    }

    /// A running sandbox left paused by a clade process that died mid-operation is continued.
    /// Only sandboxes with a pause marker are checked, so listing costs no round trip to the
    /// machine otherwise; operations hold the sandbox's lock while paused, so a free lock means
    /// the marker's owner is gone.
    func continueIfAbandoned(id: String, machine: any VMHandle, paths: SandboxPaths) async {
        guard (try? FileSystem.exists(paths.pauseMarker)) == true else { return }
        guard let lock = try? FileLock.attempt(home: home, .sandbox(id)) else { return }
        defer { lock.unlock() }
        let status = await machine.status(timeout: 3)
        guard status != .unreachable else { return }  // no answer; keep the marker for the next look
        defer { clearPauseMark(paths) }
        if status == .paused {
            logger.warning("continuing a sandbox left paused by an interrupted operation", metadata: ["id": "\(id)"])
            try? await machine.resumeAfterInterruption()
        }
        // A branch freezes the guest's processes around its pause; the dead operation cannot thaw them.
        if let record = (try? sandboxCatalog.get(id)) ?? nil { await engine.releaseUserProcesses(record) }
    }

    /// Removes `.staging-<tag>-<pid>` and `.deleting-<tag>-<pid>` directories whose clade process is
    /// gone: the remains of an interrupted snapshot, branch, compaction or removal. They were never
    /// visible as tags, so removing them changes nothing a user can see.
    func sweepInterruptedSnapshotWork() {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: home.snapshots.path) else { return }
        for entry in entries where entry.hasPrefix(".staging-") || entry.hasPrefix(".deleting-") {
            guard let pid = entry.split(separator: "-").last.flatMap({ Int32($0) }) else { continue }
            if pid == getpid() || Glibc.kill(pid, 0) == 0 { continue }
            logger.info("removing the remains of an interrupted operation", metadata: ["path": "\(entry)"])
            try? FileSystem.remove(home.snapshots.appendingPathComponent(entry))
        }
    }

    /// Re-attaches to a running sandbox's machine (a restarted daemon calls this for each one it
    /// finds). A guest found paused with no operation holding the sandbox is continued. Returns
    /// false when the machine does not answer within 3 s.
    public func adopt(id: String) async -> Bool {
        let paths = sandboxCatalog.paths(id)
        let record = (try? sandboxCatalog.get(id)) ?? nil
        let machine = machine(id, pid: record?.pid)
        let status = await machine.status(timeout: 3)
        guard status != .unreachable else {
            logger.warning("a running sandbox's VM does not answer its control channel", metadata: ["id": "\(id)"])
            return false
        }
        if let record { reapplyConfinement(record) }
        if status == .paused, let lock = try? FileLock.attempt(home: home, .sandbox(id)) {
            defer { lock.unlock() }
            logger.warning("continuing a sandbox found paused with no operation on it", metadata: ["id": "\(id)"])
            try? await machine.resumeAfterInterruption()
            clearPauseMark(paths)
        }
        return true
    }
}
