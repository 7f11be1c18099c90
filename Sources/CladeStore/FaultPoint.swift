#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Deterministic crash points for fault tests: with `CLADE_FAULT=<rawValue>` set, clade exits at
/// once with status 137 (as if SIGKILLed) when it reaches that point. The README lists them.
public enum FaultPoint: String, Sendable, CaseIterable {
    case bakeBooted = "bake-booted"
    case forkChildrenStarted = "fork-children-started"
    case branchPaused = "branch-paused"
    case branchStaged = "branch-staged"
    /// A live branch's copy is under way (the guest runs; its processes may be held).
    case branchLiveCopying = "branch-live-copying"
    /// A live branch stopped the guest at its switchover (device state saved, disk frozen).
    case branchLivePaused = "branch-live-paused"
    case standbyCaptured = "standby-captured"
    case standbyRecorded = "standby-recorded"
    case unpackStagedSnapshot = "unpack-staged-snapshot"
    case unpackVerified = "unpack-verified"
    case unpackBlobsPlaced = "unpack-blobs-placed"
    case pullManifestsFetched = "pull-manifests-fetched"
    case pullBlobHalfWritten = "pull-blob-half-written"
    case pullBlobDownloaded = "pull-blob-downloaded"
    case pullDownloadsDone = "pull-downloads-done"

    /// Exits with 137 if `CLADE_FAULT` names this point.
    public func crashIfRequested() {
        guard ProcessInfo.processInfo.environment["CLADE_FAULT"] == rawValue else { return }
        _exit(137)
    }
}
