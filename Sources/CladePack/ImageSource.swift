import CladeStore
import Foundation

/// An image resolved to one platform: the manifest's digest, its config blob and its layers,
/// lowest first. Plain rootfs tarballs have neither manifest nor config.
public struct ResolvedImage: Sendable {
    /// Where it came from, as users name it (`docker.io/library/python:3.12-slim`, a path).
    public var source: String
    public var manifestDigest: Digest?
    public var config: Descriptor?
    public var layers: [Descriptor]

    public init(source: String, manifestDigest: Digest?, config: Descriptor?, layers: [Descriptor]) {
        self.source = source
        self.manifestDigest = manifestDigest
        self.config = config
        self.layers = layers
    }

    /// Refuses manifests that no image could need: unknown layer types, absurd counts or sizes.
    func validated(what: String) throws -> ResolvedImage {
        guard !layers.isEmpty else { throw PackError.malformed(what: what, reason: "it has no layers") }
        guard layers.count <= Self.maxLayers else {
            throw PackError.malformed(what: what, reason: "it has \(layers.count) layers; clade reads at most \(Self.maxLayers)")
        }
        for layer in layers {
            guard ImageMediaType.layers.contains(layer.mediaType) else { throw PackError.unknownMediaType(blob: layer.digest.short, mediaType: layer.mediaType) }
            guard layer.size >= 0 else { throw PackError.malformed(what: what, reason: "layer \(layer.digest.short) declares a negative size") }
        }
        if let config, !(0...Self.maxConfigBytes).contains(config.size) {
            throw PackError.tooLarge(what: "image config \(config.digest.short)", declared: config.size, limit: Self.maxConfigBytes, reason: "image configs are small")
        }
        return self
    }

    public static let maxLayers = 256
    public static let maxConfigBytes: Int64 = 4 << 20
}

/// Somewhere images come from: a registry, an OCI layout, a `docker save` archive, a rootfs
/// tarball. Every source resolves to a `ResolvedImage` and puts blobs into the store,
/// verified against their digests; one path (the engine's) turns them into an image.
public protocol ImageSource: Sendable {
    /// Picks the manifest for `platform`.
    func resolve(platform: ImagePlatform) async throws -> ResolvedImage
    /// Makes `descriptor`'s blob present and verified in `blobs` (a no-op when it already is);
    /// `progress` gets bytes as they are fetched. Returns its path.
    func fetch(_ descriptor: Descriptor, into blobs: BlobStore, progress: @Sendable (Int64) -> Void) async throws -> URL
    /// Releases connections and temporary files.
    func close() async
}

extension ImageSource {
    public func close() async {}
}

/// Follows a document (manifest or index) to the manifest for `platform`.
func resolveDocument(
    _ data: Data, digest: Digest, source: String, platform: ImagePlatform,
    loadManifest: (ImageIndexDocument.Entry) async throws -> (Data, Digest)
) async throws -> ResolvedImage {
    var current = (data: data, digest: digest)
    for _ in 0..<4 {
        let what = "manifest \(current.digest.short) of \(source)"
        switch try ImageDocument.decode(current.data, what: what) {
        case .manifest(let manifest):
            return try ResolvedImage(source: source, manifestDigest: current.digest, config: manifest.config, layers: manifest.layers).validated(what: what)
        case .index(let index):
            let entry = try index.entry(for: platform, what: "\(source)")
            current = try await loadManifest(entry)
            guard current.digest == entry.digest else {
                throw PackError.digestMismatch(what: "manifest for \(platform) of \(source)", expected: entry.digest, actual: current.digest)
            }
        }
    }
    throw PackError.malformed(what: source, reason: "its indexes nest deeper than clade follows")
}

extension BlobStore {
    /// Copies `file` into the store as `descriptor`'s blob, checking its size before copying and
    /// its digest while copying; a file that does not match leaves nothing in the store.
    func ingestVerified(_ file: URL, as descriptor: Descriptor, what: String) throws -> URL {
        if try contains(descriptor.digest) { return url(for: descriptor.digest) }
        guard let status = try FileSystem.status(of: file), status.isRegularFile else {
            throw PackError.missingBlob(descriptor.digest, what: what)
        }
        guard status.size == descriptor.size else { throw PackError.sizeMismatch(what: what, declared: descriptor.size, actual: status.size) }
        let staging = try home.makeTemporaryDirectory(prefix: "ingest")
        defer { try? FileSystem.remove(staging) }
        let copy = staging.appendingPathComponent("blob")
        try FileManager.default.copyItem(at: file, to: copy)
        let (actual, _) = try Digest.ofFile(at: copy)
        guard actual == descriptor.digest else { throw PackError.digestMismatch(what: what, expected: descriptor.digest, actual: actual) }
        try adoptVerified(copy, as: descriptor.digest)
        return url(for: descriptor.digest)
    }
}
