#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladePack
import CladeStore
import Foundation

/// Where a pack goes or comes from, and how to authenticate to a registry.
public struct RegistryAccess: Sendable {
    public var insecure: Bool
    public var credentials: RegistryCredentials?

    public init(insecure: Bool = false, credentials: RegistryCredentials? = nil) {
        self.insecure = insecure
        self.credentials = credentials
    }
}

/// Moving snapshots between hosts: the engine is the front door for packs too, so the CLI and
/// the daemon never build packers or registry clients of their own.
public struct Packs: EngineCapability {
    let engine: Engine

    /// Packs `tag` (with its ancestors unless told not to) into an OCI layout directory or a `.tar`.
    public func pack(tag: String, ancestors: Bool = true, to output: URL, level: Int32 = 3, progress: PackProgress? = nil) throws -> PackReport {
        try Packer(home: home, level: level, logger: logger).pack(tag: tag, ancestors: ancestors, to: output, progress: progress)
    }

    /// Verifies a pack (directory or `.tar`) and registers its snapshot.
    public func unpack(from path: URL, options: UnpackOptions = UnpackOptions(), progress: PackProgress? = nil) throws -> UnpackReport {
        let storeLock = try FileLock.shared(home: home, .blobStore)
        defer { storeLock.unlock() }
        return try Unpacker(home: home, disks: disks, logger: logger).unpack(from: path, options: options, progress: progress)
    }

    /// Uploads `tag` to a registry, sending only blobs the registry lacks.
    public func push(tag: String, ancestors: Bool = true, to reference: RegistryReference, access: RegistryAccess = .init(), progress: PackProgress? = nil) async throws -> PushReport {
        try await transfer(access).push(tag: tag, ancestors: ancestors, to: reference, progress: progress)
    }

    /// Downloads a snapshot from a registry (only blobs this store lacks), verifies and registers it.
    /// A tag that already holds the same snapshot is reported up to date.
    /// With `lazyMemory`, the snapshot's memory stays in the registry until its forks touch it
    /// (see ``Forks``); everything else is fetched and verified as for any pull.
    public func pull(
        _ reference: RegistryReference, options: UnpackOptions = UnpackOptions(), access: RegistryAccess = .init(), lazyMemory: Bool = false,
        progress: PackProgress? = nil
    ) async throws -> UnpackReport {
        if lazyMemory, geteuid() != 0 {
            throw EngineError.unsupported("a lazy pull serves memory through a FUSE mount that confined QEMUs of other uids must open, which needs clade running as root; pull it whole instead (without --lazy)")
        }
        let started = Date()
        let storeLock = try FileLock.shared(home: home, .blobStore)
        defer { storeLock.unlock() }
        var report = try await transfer(access).pull(reference, options: options, lazyMemory: lazyMemory, progress: progress)
        if !lazyMemory, try engine.forks.holdsLazily(tag: report.tag) {
            // The store holds this snapshot (or the root filesystem it shares) lazily: a whole
            // pull means waiting for the rest, fetched by the servers that also serve its forks.
            report.bytesDownloaded += try await engine.forks.completeLazySnapshot(tag: report.tag) { present, total in progress?("lazily held chunks", Int64(present), Int64(total)) }
            report.upToDate = false
            report.completedLazyMemory = true
            report.seconds = Date().timeIntervalSince(started)
        }
        return report
    }

    private func transfer(_ access: RegistryAccess) -> RegistryTransfer {
        RegistryTransfer(home: home, disks: disks, insecure: access.insecure, credentials: access.credentials, logger: logger)
    }
}
