#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Snapshot memory files copied onto tmpfs, for sandboxes whose RAM must be write-protectable
/// (live branches: userfaultfd protects tmpfs and memfd pages, not pages of an ext4 file).
///
/// One copy per snapshot, shared by every sibling placed there: each maps it private, exactly
/// as forks map the store's own file, so siblings still share every page they only read. The
/// copy lives in memory until the snapshot is removed (tmpfs pages leave RAM only for swap).
/// A sandbox names it with a symbolic link at its usual `memory` path.
public struct MemoryTier: Sendable {
    /// The environment variable that moves the tier off `/dev/shm`.
    public static let directoryVariable = "CLADE_MEMORY_TIER_DIR"

    /// This store's directory in the tier (one store's files never meet another's).
    public let directory: URL
    /// The store the directory belongs to, recorded in it so an orphan can be recognized.
    let home: CladeHome

    public init(home: CladeHome, environment: [String: String] = ProcessInfo.processInfo.environment) {
        let root = environment[Self.directoryVariable].flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) } ?? URL(fileURLWithPath: "/dev/shm")
        let store = Digest.of(Data(home.root.path.utf8)).hex.prefix(12)
        directory = root.appendingPathComponent("clade-\(geteuid())-\(store)")
        self.home = home
    }

    static let ownerFile = "store"

    /// The tier's copy of the snapshot `snapshotID`'s memory file.
    public func file(for snapshotID: String) -> URL {
        directory.appendingPathComponent("\(snapshotID).memory")
    }

    /// The tier's copy of `memory` (snapshot `snapshotID`'s sealed memory file), made on first use.
    public func place(_ memory: URL, snapshotID: String) throws -> URL {
        let target = file(for: snapshotID)
        if try FileSystem.status(of: target) != nil { return target }
        sweepOrphans()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try FileSystem.writeAtomically(Data(home.root.path.utf8), to: directory.appendingPathComponent(Self.ownerFile))
        let partial = directory.appendingPathComponent(".\(snapshotID).memory.\(getpid()).\(UInt32.random(in: 0...UInt32.max))")
        defer { unlink(partial.path) }
        try Materializer.copy(from: memory, to: partial, mode: 0o444, sparse: true)
        // link, not rename: when two forks place it at once, the first copy stays the only one.
        if link(partial.path, target.path) != 0, errno != EEXIST {
            throw StoreError.systemCall("link", path: target.path, errno: errno)
        }
        return target
    }

    /// Drops the tier's copy of snapshot `snapshotID`'s memory (running sandboxes keep their mapping).
    public func remove(snapshotID: String) {
        unlink(file(for: snapshotID).path)
    }

    /// Removes this user's tier directories whose store is gone (deleted without `rmi`), so a
    /// removed store does not keep its snapshots' memory pinned in RAM.
    public func sweepOrphans() {
        let root = directory.deletingLastPathComponent()
        let prefix = "clade-\(geteuid())-"
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: root.path) else { return }
        for entry in entries where entry.hasPrefix(prefix) {
            let candidate = root.appendingPathComponent(entry)
            guard let owner = try? String(contentsOf: candidate.appendingPathComponent(Self.ownerFile), encoding: .utf8) else { continue }
            let snapshots = URL(fileURLWithPath: owner).appendingPathComponent("snapshots")
            do {
                if try FileSystem.status(of: snapshots) == nil { try FileManager.default.removeItem(at: candidate) }
            } catch {
                continue  // cannot tell (or cannot remove): leave it
            }
        }
    }
}
