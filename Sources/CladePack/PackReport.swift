import Foundation

/// What one piece of a snapshot became in a pack.
public struct PackedPiece: Codable, Sendable, Equatable {
    /// `device-state`, `memory`, `disk-layer`, `rootfs`, `kernel`, `initrd` or `config`.
    public var kind: String
    public var snapshot: String
    /// Bytes before compression (for memory: the guest's whole address space, holes included).
    public var contentBytes: Int64
    /// Compressed bytes in the pack for this piece.
    public var packedBytes: Int64
    /// Compressed bytes this piece added to the pack (0 when every blob was already there).
    public var newBytes: Int64
    public var blobs: Int

    public var ratio: Double { packedBytes > 0 ? Double(contentBytes) / Double(packedBytes) : 0 }

    enum CodingKeys: String, CodingKey {
        case kind, snapshot, blobs, ratio
        case contentBytes = "content_bytes"
        case packedBytes = "packed_bytes"
        case newBytes = "new_bytes"
    }

    public init(kind: String, snapshot: String, contentBytes: Int64, packedBytes: Int64, newBytes: Int64, blobs: Int) {
        self.kind = kind
        self.snapshot = snapshot
        self.contentBytes = contentBytes
        self.packedBytes = packedBytes
        self.newBytes = newBytes
        self.blobs = blobs
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        kind = try container.decode(String.self, forKey: .kind)
        snapshot = try container.decode(String.self, forKey: .snapshot)
        contentBytes = try container.decode(Int64.self, forKey: .contentBytes)
        packedBytes = try container.decode(Int64.self, forKey: .packedBytes)
        newBytes = try container.decode(Int64.self, forKey: .newBytes)
        blobs = try container.decode(Int.self, forKey: .blobs)
    }

    public func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(kind, forKey: .kind)
        try container.encode(snapshot, forKey: .snapshot)
        try container.encode(contentBytes, forKey: .contentBytes)
        try container.encode(packedBytes, forKey: .packedBytes)
        try container.encode(newBytes, forKey: .newBytes)
        try container.encode(blobs, forKey: .blobs)
        try container.encode((ratio * 10).rounded() / 10, forKey: .ratio)
    }
}

/// The result of `clade pack`.
public struct PackReport: Codable, Sendable {
    public var path: String
    /// Tags packed, root ancestor first, the requested snapshot last.
    public var snapshots: [String]
    /// Manifest digest of the requested snapshot.
    public var manifest: String
    public var pieces: [PackedPiece]
    public var seconds: Double

    public var contentBytes: Int64 { pieces.reduce(0) { $0 + $1.contentBytes } }
    public var packedBytes: Int64 { pieces.reduce(0) { $0 + $1.packedBytes } }
    public var newBytes: Int64 { pieces.reduce(0) { $0 + $1.newBytes } }
    /// Bytes read per second (logical content, so memory holes count as read).
    public var throughput: Double { seconds > 0 ? Double(contentBytes) / seconds : 0 }

    public init(path: String, snapshots: [String], manifest: String, pieces: [PackedPiece], seconds: Double) {
        self.path = path
        self.snapshots = snapshots
        self.manifest = manifest
        self.pieces = pieces
        self.seconds = seconds
    }
}

/// The result of `clade unpack` and `clade pull`.
public struct UnpackReport: Codable, Sendable {
    /// The tag the requested snapshot now has.
    public var tag: String
    /// Every snapshot registered, ancestors first.
    public var registered: [String]
    /// Ancestors already in the store (same snapshot id), left as they were.
    public var alreadyPresent: [String]
    /// Blobs written to the store.
    public var blobsWritten: Int
    /// Blobs skipped because the store already held their content.
    public var blobsSkipped: Int
    /// Bytes written (decompressed).
    public var bytesWritten: Int64
    /// Bytes downloaded (pull only).
    public var bytesDownloaded: Int64
    /// Bytes downloaded by piece kind (pull only).
    public var downloaded: [String: Int64] = [:]
    public var seconds: Double
    /// The tag already held this very snapshot; nothing was downloaded or written.
    public var upToDate: Bool = false
    /// The tag held this snapshot with its memory still arriving lazily; the pull waited for the
    /// rest of it (fetched by the snapshot's FUSE server) instead of downloading anything itself.
    public var completedLazyMemory: Bool = false

    enum CodingKeys: String, CodingKey {
        case tag, registered, seconds
        case completedLazyMemory = "completed_lazy_memory"
        case alreadyPresent = "already_present"
        case upToDate = "up_to_date"
        case blobsWritten = "blobs_written"
        case blobsSkipped = "blobs_skipped"
        case bytesWritten = "bytes_written"
        case bytesDownloaded = "bytes_downloaded"
        case downloaded
    }

    public init(tag: String, registered: [String], alreadyPresent: [String], blobsWritten: Int, blobsSkipped: Int, bytesWritten: Int64, bytesDownloaded: Int64, seconds: Double) {
        self.tag = tag
        self.registered = registered
        self.alreadyPresent = alreadyPresent
        self.blobsWritten = blobsWritten
        self.blobsSkipped = blobsSkipped
        self.bytesWritten = bytesWritten
        self.bytesDownloaded = bytesDownloaded
        self.seconds = seconds
    }
}

/// Progress of long pack work: bytes done out of a total, with the current step.
public typealias PackProgress = @Sendable (_ step: String, _ done: Int64, _ total: Int64) -> Void

/// The result of `clade push`.
public struct PushReport: Codable, Sendable {
    public var reference: String
    public var manifest: String
    /// Bytes uploaded by piece kind.
    public var uploaded: [String: Int64]
    /// Bytes the registry already had, by piece kind.
    public var skipped: [String: Int64]
    public var blobsUploaded: Int
    public var blobsSkipped: Int
    public var seconds: Double

    enum CodingKeys: String, CodingKey {
        case reference, manifest, uploaded, skipped, seconds
        case blobsUploaded = "blobs_uploaded"
        case blobsSkipped = "blobs_skipped"
    }
}

extension MediaType {
    /// The piece kind a layer media type carries, for reports.
    public static func kind(of mediaType: String) -> String {
        switch mediaType {
        case deviceState: return "device-state"
        case memoryChunk: return "memory"
        case rootfs: return "rootfs"
        case rootfsIndex: return "rootfs-index"
        case diskLayer: return "disk-layer"
        case kernel: return "kernel"
        case initrd: return "initrd"
        case snapshotConfig: return "config"
        case imageManifest: return "manifest"
        default: return "other"
        }
    }
}
