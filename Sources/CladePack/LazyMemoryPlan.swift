import CladeModel
import CladeStore
import Foundation

/// What a lazily pulled snapshot needs to fetch its memory later: where the pack came from and
/// the leaf manifest's chunk table. Written as `lazy-memory.json` in the snapshot's directory in
/// place of the memory file, whose name is then a link to the FUSE server's file; removed once
/// the memory is whole.
public struct LazyMemoryPlan: Codable, Sendable, Equatable {
    public static let fileName = "lazy-memory.json"
    /// Chunks a plan may list: 16 GiB of guest memory at the pack's 512 KiB chunks.
    static let maxChunks = 32_768

    public struct Chunk: Codable, Sendable, Equatable {
        public var offset: Int64
        /// The compressed blob's digest and size, as the registry serves it.
        public var digest: String
        public var size: Int64
        /// Decompressed bytes (the chunk size, less at the file's end).
        public var contentSize: Int64
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

    /// Checks every bound a hostile plan (or pack) could break before the server trusts it:
    /// chunks on chunk boundaries inside the file, no two at one offset, sizes as the pack format
    /// requires, digests well formed.
    public func validate(what: String) throws {
        guard chunkSize > 0, chunkSize <= 64 << 20, logicalSize > 0, logicalSize <= Int64(Self.maxChunks) * chunkSize else {
            throw PackError.malformed(what: what, reason: "memory of \(logicalSize) bytes in chunks of \(chunkSize) is out of bounds")
        }
        guard chunks.count <= Self.maxChunks else {
            throw PackError.malformed(what: what, reason: "\(chunks.count) memory chunks is more than \(Self.maxChunks)")
        }
        var seen = Set<Int64>()
        for chunk in chunks {
            guard chunk.offset >= 0, chunk.offset % chunkSize == 0, chunk.offset < logicalSize, seen.insert(chunk.offset).inserted else {
                throw PackError.malformed(what: what, reason: "memory chunk offset \(chunk.offset) is not a distinct chunk boundary inside \(logicalSize) bytes")
            }
            guard chunk.contentSize == min(chunkSize, logicalSize - chunk.offset) else {
                throw PackError.malformed(what: what, reason: "memory chunk at \(chunk.offset) claims \(chunk.contentSize) bytes")
            }
            guard chunk.size > 0, chunk.size <= chunkSize + (1 << 20) else {
                throw PackError.malformed(what: what, reason: "memory chunk at \(chunk.offset) is \(chunk.size) bytes compressed, more than a chunk can need")
            }
            _ = try digest(of: chunk, what: what)
        }
        for offset in workingSet ?? [] where !seen.contains(offset) {
            throw PackError.malformed(what: what, reason: "working-set offset \(offset) is not one of the pack's memory chunks")
        }
    }

    func digest(of chunk: Chunk, what: String) throws -> Digest {
        guard let digest = try? Digest(parsing: chunk.digest) else {
            throw PackError.malformed(what: what, reason: "memory chunk at \(chunk.offset) has digest '\(chunk.digest)', not sha256:<64 hex>")
        }
        return digest
    }

    /// Reads and validates the plan in a snapshot directory, or nil when the snapshot's memory is whole.
    public static func load(in snapshotDirectory: URL) throws -> LazyMemoryPlan? {
        let file = snapshotDirectory.appendingPathComponent(fileName, isDirectory: false)
        guard try FileSystem.exists(file) else { return nil }
        guard let plan = try JSONFiles.read(LazyMemoryPlan.self, from: file) else { return nil }
        try plan.validate(what: file.path)
        return plan
    }
}

/// Where a lazily pulled snapshot's FUSE server keeps its files: `<store>/lazy/<snapshot id>/`.
///
/// Every path says whether it is a directory: without that, Foundation stats the path to find
/// out, and a stat of the mount before the server's loop answers FUSE's INIT blocks forever.
public struct LazyMemoryPaths: Sendable {
    public let directory: URL

    public init(home: CladeHome, snapshotID: String) {
        directory = home.root.appendingPathComponent("lazy", isDirectory: true).appendingPathComponent(snapshotID, isDirectory: true)
    }

    /// The paths of a server directory found on disk.
    public init(directory: URL) {
        self.directory = directory
    }

    /// The mount point; the served file is `mountPoint/memory`.
    public var mountPoint: URL { directory.appendingPathComponent("mnt", isDirectory: true) }
    public var servedFile: URL { mountPoint.appendingPathComponent("memory", isDirectory: false) }
    /// The memory file being assembled as chunks arrive (sparse; holes read as zeros).
    public var assembling: URL { directory.appendingPathComponent("memory.assembling", isDirectory: false) }
    /// Verified compressed chunks between download and decompression.
    public var downloads: URL { directory.appendingPathComponent("downloads", isDirectory: true) }
    public var pidFile: URL { directory.appendingPathComponent("server.pid", isDirectory: false) }
    public var log: URL { directory.appendingPathComponent("server.log", isDirectory: false) }
    /// The last chunk failure, in words, for the sandboxes it stopped.
    public var failure: URL { directory.appendingPathComponent("failure", isDirectory: false) }
    public var statistics: URL { directory.appendingPathComponent("stats.json", isDirectory: false) }
}

/// The server's counters, written to `stats.json` as they change.
public struct LazyMemoryStatistics: Codable, Sendable {
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
