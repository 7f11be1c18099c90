import CladeModel
import CladeStore
import CladeVMM
import Foundation

/// What rolling back interrupted operations did.
public struct RecoveryReport: Sendable, Equatable {
    /// `kind subject` of each journal entry rolled back.
    public var rolledBack: [String] = []
    /// What reconciling the catalog with the directories changed afterwards.
    public var reconciled: CatalogReconciler.Changes = .init()
}

extension Engine {
    var journal: OperationJournal { OperationJournal(home: home) }

    /// Opens a journal entry for an operation about to create `paths` (see ``OperationJournal``).
    func beginOperation(_ kind: OperationKind, subject: String, paths: [URL] = []) throws -> OperationJournal.Entry {
        try journal.begin(kind: kind, subject: subject, paths: paths)
    }

    /// Rolls back every operation whose clade process died half-way, then reconciles the catalog
    /// with the directories if anything was rolled back (or `reconcile` asks for it anyway).
    ///
    /// A sandbox directory an interrupted operation listed is destroyed (its QEMU stopped): the
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
}
