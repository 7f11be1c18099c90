#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation
import Logging

/// Builds byte-deterministic ext4 images from a directory.
///
/// The same directory yields the same bytes on any host (seed 001: overlays resolved
/// against differently built bases corrupt guests). mke2fs gets a fixed UUID and hash seed
/// and a fake clock; every inode's times are set to a constant (mke2fs copies ctime from the
/// source, which cannot be set with `touch`, so a debugfs pass rewrites it); mke2fs sorts
/// directory entries itself, so readdir order on the build host does not matter.
public struct Ext4Builder: Sendable {
    public static let uuid = "6f3b8a2e-2c1d-4e5f-9a7b-0c1d2e3f4a5b"
    public static let hashSeed = "0b5e7c3a-1d2f-4a6b-8c9d-e0f1a2b3c4d5"
    /// Seconds since the epoch stamped on every inode and on the superblock.
    public static let fixedTime = "1"
    /// Directories every clade image has: mount points for init and the agent's tmpfs.
    static let requiredDirectories = [".clade", "proc", "sys", "dev", "tmp", "run", "root"]

    public let home: CladeHome
    private let logger: Logger

    public init(home: CladeHome, logger: Logger = Logger(label: "clade.ext4")) {
        self.home = home
        self.logger = logger
    }

    /// Builds an image of `source` with `freeMiB` of free space and stores it as a blob.
    ///
    /// With `metadata` (an unpacked image), `source` is used in place and consumed, and every
    /// path's owner, mode and extended attributes, and the device nodes, come from `metadata`
    /// rather than from the host; without it, `source` is copied and left alone, and files
    /// belong to root in the image when clade does not run as root.
    public func build(from source: URL, freeMiB: Int = 256, metadata: RootMetadata? = nil) throws -> (digest: Digest, size: Int64) {
        guard let status = try FileSystem.status(of: source.resolvingSymlinksInPath()), status.isDirectory else {
            throw GuestError.sourceDirectoryMissing(source.path)
        }
        for tool in ["mke2fs", "debugfs"] where ExternalCommand.locate(tool) == nil {
            throw GuestError.toolMissing("\(tool) (apt-get install e2fsprogs)")
        }
        let work = try home.makeTemporaryDirectory(prefix: "ext4")
        defer { try? FileSystem.remove(work) }
        let staging: URL
        if metadata != nil {
            staging = source
        } else {
            staging = work.appendingPathComponent("root")
            try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: false)
            try ExternalCommand("cp", ["-a", "--", source.resolvingSymlinksInPath().path + "/.", staging.path]).check()
        }
        for directory in Self.requiredDirectories {
            let url = staging.appendingPathComponent(directory)
            if try !FileSystem.exists(url) {
                try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
                chmod(url.path, directory == "tmp" ? 0o1777 : 0o755)
            }
        }
        let paths = try ExternalCommand("find", [".", "-mindepth", "1"], currentDirectory: staging).check().stdout
            .split(separator: "\n").map { String($0.dropFirst()) }.sorted()
        for path in paths where path.contains("\"") || path.contains("\\") {
            throw GuestError.unsupportedPath(path, reason: "file names with '\"' or '\\' are not supported")
        }
        try ExternalCommand("find", [staging.path, "-exec", "touch", "-h", "-d", "@\(Self.fixedTime)", "{}", "+"]).check()

        let contentBytes = Int64(try ExternalCommand("du", ["-s", "-B1", "--apparent-size", staging.path]).check().stdout
            .split(whereSeparator: \.isWhitespace).first.flatMap { Int64($0) } ?? 0)
        let metadataBytes = Int64(paths.count + 64) * 4096
        let deviceCount = Int64(metadata?.devices.count ?? 0)
        let sizeMiB = max(64, (contentBytes * 5 / 4 + metadataBytes + deviceCount * 4096) / (1 << 20) + 16 + Int64(freeMiB))
        let image = work.appendingPathComponent("rootfs.ext4")
        let environment = ["E2FSPROGS_FAKE_TIME": Self.fixedTime]
        try ExternalCommand("mke2fs", [
            "-q", "-F", "-t", "ext4", "-b", "4096", "-I", "256", "-m", "0", "-L", "clade-root",
            "-U", Self.uuid, "-E", "hash_seed=\(Self.hashSeed),root_owner=0:0",
            "-d", staging.path, image.path, "\(sizeMiB)M",
        ], environment: environment).check()

        var commands: [String] = []
        if let metadata {
            commands = try MetadataScript(metadata: metadata, work: work).lines(existing: paths)
        }
        let devicePaths = metadata.map { $0.devices.keys.map { "/" + $0 } } ?? []
        commands += (["/"] + paths + devicePaths + ["/lost+found"]).flatMap { path -> [String] in
            var lines = ["ctime", "atime", "mtime", "crtime"].map { "sif \"\(path)\" \($0) \(Self.fixedTime)" }
            if metadata == nil, getuid() != 0 { lines += ["sif \"\(path)\" uid 0", "sif \"\(path)\" gid 0"] }
            return lines
        }
        let script = work.appendingPathComponent("normalize.debugfs")
        try Data((commands.joined(separator: "\n") + "\n").utf8).write(to: script)
        let output = try ExternalCommand("debugfs", ["-w", "-f", script.path, image.path], environment: environment).check()
        let problems = output.stderr.split(separator: "\n").filter { !$0.hasPrefix("debugfs ") && !$0.isEmpty }
        if !problems.isEmpty {
            throw StoreError.commandFailed(command: "debugfs (normalising inode times)", status: 1, output: problems.prefix(5).joined(separator: "\n"))
        }
        try ExternalCommand("e2fsck", ["-fn", image.path]).check()
        let result = try BlobStore(home: home).ingest(image)
        logger.info("built root filesystem", metadata: ["digest": "\(result.digest)", "size_mib": "\(sizeMiB)"])
        return result
    }
}
