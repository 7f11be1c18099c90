#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation

/// Hands out per-sandbox uids from a range no account uses. A claim is a file created with
/// `O_EXCL` in a host-wide directory on tmpfs (`/run`), so claims are unique across clade
/// processes and stores, and vanish with the VMs at reboot. A claim whose sandbox directory is
/// gone is stale and taken over.
public struct JailIdentityPool: Sendable {
    /// 2,200,000,000 … +1,048,575: above subordinate-id ranges (`/etc/subuid` starts at 100,000
    /// and hands out 65,536 a user) and below `(uid_t)-1`.
    public static let firstUID: UInt32 = 2_200_000_000
    public static let size: UInt32 = 1 << 20
    public static var uidRange: ClosedRange<UInt32> { firstUID...(firstUID + size - 1) }

    public let directory: URL

    public init(directory: URL = URL(fileURLWithPath: "/run/clade/vmm-uids")) {
        self.directory = directory
    }

    /// Claims an identity for the sandbox whose directory is `owner`. `tookOver` is true when the
    /// uid was taken from an abandoned claim, whose host state (firewall rules) may still be there.
    public func claim(for owner: URL) throws -> (identity: JailIdentity, tookOver: Bool) {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for _ in 0..<128 {
            let uid = Self.firstUID + UInt32.random(in: 0..<Self.size)
            let claim = claimFile(uid)
            var tookOver = false
            var fd = open(claim.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd < 0 {
                guard errno == EEXIST else { throw StoreError.systemCall("open", path: claim.path, errno: errno) }
                guard isStale(claim) else { continue }
                unlink(claim.path)
                fd = open(claim.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
                guard fd >= 0 else { continue }  // another clade took it over first
                tookOver = true
            }
            let text = owner.path
            _ = text.withCString { write(fd, $0, strlen($0)) }
            close(fd)
            return (JailIdentity(uid: uid, gid: uid), tookOver)
        }
        throw VMMError.confinementFailed(what: "give the sandbox a uid of its own", reason: "no free uid in \(Self.uidRange) after 128 tries", fix: "remove stale claims in \(directory.path)")
    }

    /// Takes over `identity` for `owner` after a restart (the claim may be gone after a reboot).
    public func reclaim(_ identity: JailIdentity, for owner: URL) {
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        try? Data(owner.path.utf8).write(to: claimFile(identity.uid))
    }

    /// The sandbox directory that holds the claim on `uid`, if any.
    public func owner(of uid: UInt32) -> URL? {
        guard let path = try? String(contentsOf: claimFile(uid), encoding: .utf8), !path.isEmpty else { return nil }
        return URL(fileURLWithPath: path)
    }

    public func release(_ identity: JailIdentity) {
        unlink(claimFile(identity.uid).path)
    }

    private func claimFile(_ uid: UInt32) -> URL { directory.appendingPathComponent(String(uid)) }

    private func isStale(_ claim: URL) -> Bool {
        guard let owner = try? String(contentsOf: claim, encoding: .utf8), !owner.isEmpty else {
            // Written right after creation: an empty claim older than a few seconds was abandoned.
            let age = (try? claim.resourceValues(forKeys: [.contentModificationDateKey]).contentModificationDate).map { Date().timeIntervalSince($0) }
            return (age ?? 0) > 10
        }
        return !FileManager.default.fileExists(atPath: owner)
    }
}
