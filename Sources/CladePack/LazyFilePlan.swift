import CladeModel
import CladeStore
import Foundation

/// What a lazily pulled file needs to be fetched later: where the pack came from and the chunk
/// table. For a snapshot's memory it is written as `lazy-memory.json` in the snapshot's directory
/// in place of the memory file, whose name is then a link to the FUSE server's file; for a root
/// filesystem as `plan.json` in its server's directory, with the rootfs blob a link to the
/// served file. Either is removed once the file is whole.
public struct LazyFilePlan: Codable, Sendable, Equatable {
    public static let fileName = "lazy-memory.json"
    public static let rootfsFileName = "plan.json"

    /// Which file a plan serves.
    public enum Kind: String, Codable, Sendable {
        /// A snapshot's memory: chunks are blobs of their own.
        case memory
        /// A root filesystem shared by every snapshot of its image: chunks are frames (ranges)
        /// of one blob, verified by their content digests.
        case rootfs
    }
    /// Chunks a plan may list: 16 GiB of guest memory at the pack's 512 KiB chunks.
    static let maxChunks = 32_768

    public struct Chunk: Codable, Sendable, Equatable {
        public var offset: Int64
        /// The compressed blob's digest and size, as the registry serves it.
        public var digest: String
        public var size: Int64
        /// Decompressed bytes (the chunk size, less at the file's end).
        public var contentSize: Int64
        /// A rootfs frame's offset in its blob; `digest` is then the decompressed chunk's digest
        /// and `size` the frame's length.
        public var blobOffset: Int64? = nil
    }

    public var reference: String
    public var insecure: Bool
    public var snapshotID: String
    public var logicalSize: Int64
    public var chunkSize: Int64
    public var chunks: [Chunk]
    /// Offsets of the chunks to prefetch before children resume (the pack's working set, less
    /// chunks it does not hold, which are zeros); nil when the pack recorded none.
    public var workingSet: [Int64]?
    /// nil for memory (plans written before roots were served lazily).
    public var kind: Kind? = nil
    /// A rootfs's blob (digest and size) and the digest the whole file must have before it
    /// replaces the link in the blob store.
    public var blob: String? = nil
    public var blobSize: Int64? = nil
    public var contentDigest: String? = nil

    public var servesRootfs: Bool { kind == .rootfs }
    /// What the plan's file is, in messages.
    public var fileWhat: String { servesRootfs ? "root filesystem" : "memory" }

    /// Checks every bound a hostile plan (or pack) could break before the server trusts it:
    /// chunks on chunk boundaries inside the file, no two at one offset, sizes as the pack format
    /// requires, digests well formed.
    public func validate(what: String) throws {
        guard chunkSize > 0, chunkSize <= 64 << 20, logicalSize > 0, logicalSize <= Int64(Self.maxChunks) * chunkSize else {
            throw PackError.malformed(what: what, reason: "\(fileWhat) of \(logicalSize) bytes in chunks of \(chunkSize) is out of bounds")
        }
        guard chunks.count <= Self.maxChunks else {
            throw PackError.malformed(what: what, reason: "\(chunks.count) \(fileWhat) chunks is more than \(Self.maxChunks)")
        }
        var seen = Set<Int64>()
        for chunk in chunks {
            guard chunk.offset >= 0, chunk.offset % chunkSize == 0, chunk.offset < logicalSize, seen.insert(chunk.offset).inserted else {
                throw PackError.malformed(what: what, reason: "\(fileWhat) chunk offset \(chunk.offset) is not a distinct chunk boundary inside \(logicalSize) bytes")
            }
            guard chunk.contentSize == min(chunkSize, logicalSize - chunk.offset) else {
                throw PackError.malformed(what: what, reason: "\(fileWhat) chunk at \(chunk.offset) claims \(chunk.contentSize) bytes")
            }
            guard chunk.size > 0, chunk.size <= chunkSize + (1 << 20) else {
                throw PackError.malformed(what: what, reason: "\(fileWhat) chunk at \(chunk.offset) is \(chunk.size) bytes compressed, more than a chunk can need")
            }
            _ = try digest(of: chunk, what: what)
            if servesRootfs {
                guard let offset = chunk.blobOffset, let blobSize, offset >= 0, offset + chunk.size <= blobSize else {
                    throw PackError.malformed(what: what, reason: "rootfs frame for offset \(chunk.offset) lies outside its blob")
                }
            }
        }
        if servesRootfs {
            guard let blob, (try? Digest(parsing: blob)) != nil, let contentDigest, (try? Digest(parsing: contentDigest)) != nil, workingSet == nil else {
                throw PackError.malformed(what: what, reason: "a rootfs plan needs its blob and content digests, and has no working set")
            }
        }
        for offset in workingSet ?? [] where !seen.contains(offset) {
            throw PackError.malformed(what: what, reason: "working-set offset \(offset) is not one of the pack's memory chunks")
        }
    }

    func digest(of chunk: Chunk, what: String) throws -> Digest {
        guard let digest = try? Digest(parsing: chunk.digest) else {
            throw PackError.malformed(what: what, reason: "\(fileWhat) chunk at \(chunk.offset) has digest '\(chunk.digest)', not sha256:<64 hex>")
        }
        return digest
    }

    /// Reads and validates the plan of root filesystem `rootfs`, or nil when no server is to
    /// fetch it (it is whole in the store, or was never pulled lazily).
    public static func loadRootfs(_ rootfs: Digest, home: CladeHome) throws -> LazyFilePlan? {
        let file = LazyFilePaths(home: home, rootfs: rootfs).rootfsPlan
        guard try FileSystem.exists(file), let plan = try JSONFiles.read(LazyFilePlan.self, from: file) else { return nil }
        try plan.validate(what: file.path)
        guard plan.servesRootfs, plan.contentDigest == rootfs.description else {
            throw PackError.malformed(what: file.path, reason: "it is not the plan of root filesystem \(rootfs)")
        }
        return plan
    }

    /// Reads and validates the plan in a snapshot directory, or nil when the snapshot's memory is whole.
    public static func load(in snapshotDirectory: URL) throws -> LazyFilePlan? {
        let file = snapshotDirectory.appendingPathComponent(fileName, isDirectory: false)
        guard try FileSystem.exists(file) else { return nil }
        guard let plan = try JSONFiles.read(LazyFilePlan.self, from: file) else { return nil }
        try plan.validate(what: file.path)
        return plan
    }
}

/// Where a lazily pulled snapshot's FUSE server keeps its files: `<store>/lazy/<snapshot id>/`.
///
/// Every path says whether it is a directory: without that, Foundation stats the path to find
/// out, and a stat of the mount before the server's loop answers FUSE's INIT blocks forever.
public struct LazyFilePaths: Sendable {
    public let directory: URL

    /// `memory` or `rootfs`: the served file's name.
    public let fileName: String

    public init(home: CladeHome, snapshotID: String) {
        directory = home.root.appendingPathComponent("lazy", isDirectory: true).appendingPathComponent(snapshotID, isDirectory: true)
        fileName = "memory"
    }

    /// The server of root filesystem `rootfs`: `<store>/lazy/rootfs-<hex>/`, one for every
    /// snapshot of the image.
    public init(home: CladeHome, rootfs: Digest) {
        directory = home.root.appendingPathComponent("lazy", isDirectory: true).appendingPathComponent(Self.rootfsPrefix + rootfs.hex, isDirectory: true)
        fileName = "rootfs"
    }

    /// The paths of a server directory found on disk.
    public init(directory: URL) {
        self.directory = directory
        fileName = directory.lastPathComponent.hasPrefix(Self.rootfsPrefix) ? "rootfs" : "memory"
    }

    static let rootfsPrefix = "rootfs-"

    /// Whether this directory serves a root filesystem (its plan is ``rootfsPlan``).
    public var servesRootfs: Bool { fileName == "rootfs" }
    /// A rootfs server's plan; a memory server's plan lives in its snapshot.
    public var rootfsPlan: URL { directory.appendingPathComponent(LazyFilePlan.rootfsFileName, isDirectory: false) }
    /// The mount point; the served file is `mountPoint/<fileName>`.
    public var mountPoint: URL { directory.appendingPathComponent("mnt", isDirectory: true) }
    public var servedFile: URL { mountPoint.appendingPathComponent(fileName, isDirectory: false) }
    /// The file being assembled as chunks arrive (sparse; holes read as zeros).
    public var assembling: URL { directory.appendingPathComponent("\(fileName).assembling", isDirectory: false) }
    /// Verified compressed chunks between download and decompression.
    public var downloads: URL { directory.appendingPathComponent("downloads", isDirectory: true) }
    public var pidFile: URL { directory.appendingPathComponent("server.pid", isDirectory: false) }
    public var log: URL { directory.appendingPathComponent("server.log", isDirectory: false) }
    /// The last chunk failure, in words, for the sandboxes it stopped.
    public var failure: URL { directory.appendingPathComponent("failure", isDirectory: false) }
    public var statistics: URL { directory.appendingPathComponent("stats.json", isDirectory: false) }
}

/// The server's counters, written to `stats.json` as they change.
public struct LazyFileStatistics: Codable, Sendable {
    public var chunks: Int
    public var chunksPresent: Int
    /// Chunk downloads, each counted once per fetch (a sibling's fault never fetches again).
    public var fetches: Int
    public var bytesFetched: Int64
    /// Fetches a guest's fault waited for, as opposed to the background fill.
    public var demandFetches: Int
    public var complete: Bool
    public var failure: String?
    /// Working-set chunks to prefetch, how many reached the page cache, how long it took, and
    /// whether it is over (the engine starts children once it is); nil without a working set.
    /// Chunks taken from the store's blob directory instead of the registry.
    public var reusedChunks: Int?
    public var prefetchChunks: Int?
    public var prefetchedChunks: Int?
    public var prefetchSeconds: Double?
    public var prefetchDone: Bool?
}
