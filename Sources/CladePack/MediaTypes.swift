/// The media types and annotation keys of a clade pack. See README "Moving snapshots between hosts".
public enum MediaType {
    /// OCI's own types.
    public static let imageManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let imageIndex = "application/vnd.oci.image.index.v1+json"

    /// A manifest's `artifactType`: this manifest is one clade snapshot.
    public static let snapshotArtifact = "application/vnd.clade.snapshot.v1"
    /// The config blob: `snapshot.json` (no host paths in it).
    public static let snapshotConfig = "application/vnd.clade.snapshot.config.v1+json"
    /// QEMU device state, zstd-compressed.
    public static let deviceState = "application/vnd.clade.device-state.v1+zstd"
    /// One fixed-size chunk of guest memory, zstd-compressed; absent chunks are all zero.
    public static let memoryChunk = "application/vnd.clade.memory.chunk.v1+zstd"
    /// The raw base disk (deterministic ext4), zstd-compressed, addressed by its content digest.
    /// Since format 1.1 it is a run of independent frames, one per ``PackFormat/rootfsChunkSize``
    /// of content: still one zstd stream to a reader that decompresses it whole.
    public static let rootfs = "application/vnd.clade.disk.rootfs.v1.raw+zstd"
    /// ``RootfsIndex`` as JSON: where each chunk's frame sits in the rootfs blob (format 1.1,
    /// optional), for lazy forks that fetch the rootfs by range.
    public static let rootfsIndex = "application/vnd.clade.disk.rootfs.index.v1+json"
    /// One qcow2 overlay of the disk chain, zstd-compressed.
    public static let diskLayer = "application/vnd.clade.disk.layer.v1.qcow2+zstd"
    /// The guest kernel, zstd-compressed.
    public static let kernel = "application/vnd.clade.kernel.v1+zstd"
    /// The initrd, zstd-compressed.
    public static let initrd = "application/vnd.clade.initrd.v1+zstd"

    static let cladeLayers: Set<String> = [deviceState, memoryChunk, rootfs, diskLayer, kernel, initrd]
}

/// Annotation keys clade writes and reads.
public enum AnnotationKey {
    public static let refName = "org.opencontainers.image.ref.name"
    public static let created = "org.opencontainers.image.created"
    /// `major.minor` of the pack format; readers refuse a newer major.
    public static let packFormat = "org.clade.pack.format"
    public static let snapshotTag = "org.clade.snapshot.tag"
    public static let snapshotID = "org.clade.snapshot.id"
    /// The digest of the parent snapshot's manifest.
    public static let parentManifest = "org.clade.snapshot.parent"
    /// SHA-256 of a layer's bytes after decompression.
    public static let contentDigest = "org.clade.content.digest"
    /// Size of a layer's bytes after decompression.
    public static let contentSize = "org.clade.content.size"
    /// Byte offset of a memory chunk in guest memory.
    public static let memoryOffset = "org.clade.memory.offset"
    /// Chunk size of a snapshot's memory layers.
    public static let memoryChunkSize = "org.clade.memory.chunk-size"
    /// The chunks a fresh fork touches first (``WorkingSet``), as ranges of chunk numbers.
    public static let memoryWorkingSet = "org.clade.memory.working-set"
    /// Index of a disk layer in the chain (0 sits on the rootfs).
    public static let diskIndex = "org.clade.disk.index"
    /// `"true"` on a layer a reader may ignore when it does not know its media type.
    public static let optional = "org.clade.optional"
}

/// Version of the pack format this build writes and the newest major it reads.
public enum PackFormat {
    public static let major = 1
    /// 1.1: the rootfs blob is framed per chunk, with an optional ``RootfsIndex`` layer.
    public static let minor = 1
    public static var current: String { "\(major).\(minor)" }
    /// Memory chunk size: small enough that a branch which dirties a few pages shares most chunks
    /// with its parent, large enough that zstd sees long zero runs and a pack holds tens, not
    /// thousands, of blobs (each a registry round trip).
    public static let memoryChunkSize = 512 << 10
    /// Rootfs chunk size: the largest read FUSE hands a server in one request (256 pages), so a
    /// disk read a guest waits on costs one range request.
    public static let rootfsChunkSize = 1 << 20
}
