#if canImport(Glibc)
import Glibc
#endif
/// The advisory locks clade takes, by what they protect. The file name on disk is
/// `locks/<rawValue>.lock`; names are the same as before they were typed.
public struct LockName: Sendable, Hashable, CustomStringConvertible {
    public let rawValue: String

    private init(_ rawValue: String) { self.rawValue = rawValue }

    /// Held while a snapshot tag is claimed, written or removed.
    public static func snapshot(_ tag: String) -> LockName { LockName("snapshot-\(tag)") }
    /// Held while an operation (branch, standby, resume, pause) works on a running sandbox.
    public static func sandbox(_ id: String) -> LockName { LockName("sandbox-\(id)") }
    /// Held while a sandbox is being created, so a concurrent listing never mistakes it for dead.
    public static func sandboxSetup(_ id: String) -> LockName { LockName("sandbox-setup-\(id)") }
    public static func image(_ name: String) -> LockName { LockName("image-\(name)") }
    /// Held while a lazily pulled snapshot's FUSE server is checked and started, so one starts.
    public static func lazyServer(_ snapshotID: String) -> LockName { LockName("lazy-\(snapshotID)") }
    /// Held by a pull of one reference (its resumable cache).
    public static func pull(_ key: String) -> LockName { LockName("pull-\(key)") }

    /// Held shared by everything that adds blobs not yet referenced (image builds, imports,
    /// pulls, pack unpacks) and exclusively by `gc`, which must not take them for garbage.
    public static let blobStore = LockName("store-blobs")

    /// Held by the one process ending expired sandboxes at a time.
    public static let reaper = LockName("lifetime-reaper")

    public var description: String { rawValue }
}

extension FileLock {
    /// Blocks until `lock` is held.
    public convenience init(home: CladeHome, _ lock: LockName) throws {
        try self.init(home: home, name: lock.rawValue)
    }

    /// Blocks until `lock` is held shared (beside other shared holders, never beside an exclusive one).
    public static func shared(home: CladeHome, _ lock: LockName) throws -> FileLock {
        try FileLock(home: home, name: lock.rawValue, mode: LOCK_SH)
    }

    /// Takes `lock` if it is free; nil when another process holds it.
    public static func attempt(home: CladeHome, _ lock: LockName) throws -> FileLock? {
        try attempt(home: home, name: lock.rawValue)
    }
}
