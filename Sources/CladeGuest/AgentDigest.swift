import CladeModel
import CladeStore
import Foundation

/// The agent binary's digest, remembered per store by the file's identity (device, inode, size,
/// modification time), so booting, baking and benching do not hash ~10 MB on every call. A
/// rebuilt or replaced agent changes at least one of those and is hashed again.
public enum AgentDigest {
    /// What identifies one version of the file without reading it.
    struct FileIdentity: Codable, Equatable {
        var path: String
        var device: UInt64
        var inode: UInt64
        var size: Int64
        var modifiedNanoseconds: Int64
    }

    struct Remembered: Codable {
        var file: FileIdentity
        var digest: Digest
    }

    /// The digest of the agent at `agent`, from `home`'s record of it when the file is unchanged.
    public static func of(_ agent: URL, home: CladeHome) throws -> Digest {
        var info = stat()
        guard stat(agent.path, &info) == 0 else { throw StoreError.systemCall("stat", path: agent.path, errno: errno) }
        let file = FileIdentity(
            path: agent.path, device: UInt64(info.st_dev), inode: UInt64(info.st_ino), size: Int64(info.st_size),
            modifiedNanoseconds: Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec))
        let record = home.state.appendingPathComponent("agent-digest.json")
        if let remembered = try? JSONFiles.read(Remembered.self, from: record), remembered.file == file { return remembered.digest }
        let fresh = Remembered(file: file, digest: try Digest.ofFile(at: agent).digest)
        // A store that cannot be written still gets the right answer, only slower next time.
        try? FileManager.default.createDirectory(at: home.state, withIntermediateDirectories: true)
        try? JSONFiles.write(fresh, to: record)
        return fresh.digest
    }
}
