import CladeStore
import Foundation

/// The media types of container images (OCI and Docker schema 2) that clade reads.
public enum ImageMediaType {
    public static let ociManifest = MediaType.imageManifest
    public static let ociIndex = MediaType.imageIndex
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"

    /// Every manifest type a pull asks a registry for.
    public static let manifests = [ociManifest, ociIndex, dockerManifest, dockerManifestList]

    /// Layer types: tar, gzip- or zstd-compressed (the applier tells them apart by their bytes).
    public static let layers: Set<String> = [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ]
    /// A plain tar layer, for images that were never compressed (docker save, rootfs tarballs).
    public static let tarLayer = "application/vnd.oci.image.layer.v1.tar"
}

/// An operating system and CPU an image is built for: `linux/amd64`, `linux/arm64/v8`.
public struct ImagePlatform: Codable, Sendable, Equatable, CustomStringConvertible {
    public var os: String
    public var architecture: String
    public var variant: String?

    enum CodingKeys: String, CodingKey { case os, architecture, variant }

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// The platform clade's guests run: the host's architecture, Linux.
    public static let host: ImagePlatform = {
        #if arch(arm64)
        return ImagePlatform(os: "linux", architecture: "arm64")
        #else
        return ImagePlatform(os: "linux", architecture: "amd64")
        #endif
    }()

    public init(parsing text: String) throws {
        let parts = text.split(separator: "/").map(String.init)
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty }) else {
            throw PackError.invalidReference(text, reason: "a platform is OS/ARCH or OS/ARCH/VARIANT, e.g. linux/amd64")
        }
        self.init(os: parts[0], architecture: parts[1], variant: parts.count == 3 ? parts[2] : nil)
    }

    public var description: String { "\(os)/\(architecture)\(variant.map { "/\($0)" } ?? "")" }

    /// Whether an index entry for `other` serves this platform (a missing variant matches any).
    func accepts(_ other: ImagePlatform) -> Bool {
        guard os == other.os, architecture == other.architecture else { return false }
        guard let variant, let theirs = other.variant else { return true }
        return variant == theirs
    }
}

/// A manifest or an index, as a registry or layout returns it (OCI or Docker schema 2).
enum ImageDocument {
    case manifest(ImageManifestDocument)
    case index(ImageIndexDocument)

    static func decode(_ data: Data, what: String) throws -> ImageDocument {
        struct Probe: Decodable {
            var schemaVersion: Int?
            var mediaType: String?
            var manifests: [IgnoredValue]?
            var layers: [IgnoredValue]?
        }
        let probe = try CanonicalJSON.decode(Probe.self, from: data, what: what)
        if probe.schemaVersion == 1 {
            throw PackError.malformed(what: what, reason: "Docker schema 1 manifests are obsolete and not supported; push the image again with a current tool")
        }
        if probe.manifests != nil || probe.mediaType == ImageMediaType.ociIndex || probe.mediaType == ImageMediaType.dockerManifestList {
            return .index(try CanonicalJSON.decode(ImageIndexDocument.self, from: data, what: what))
        }
        guard probe.layers != nil else { throw PackError.malformed(what: what, reason: "it is neither an image manifest nor an index") }
        return .manifest(try CanonicalJSON.decode(ImageManifestDocument.self, from: data, what: what))
    }
}

struct IgnoredValue: Decodable {
    init(from decoder: Decoder) throws {}
}

/// An image manifest: one config blob and the layers, lowest first.
struct ImageManifestDocument: Decodable {
    var mediaType: String?
    var config: Descriptor
    var layers: [Descriptor]
}

/// An image index or Docker manifest list: one manifest per platform.
struct ImageIndexDocument: Decodable {
    struct Entry: Decodable {
        var mediaType: String
        var digest: Digest
        var size: Int64
        var platform: ImagePlatform?
        var annotations: [String: String]?
    }
    var mediaType: String?
    var manifests: [Entry]

    /// The entry for `platform`, or an error listing what the index has.
    func entry(for platform: ImagePlatform, what: String) throws -> Entry {
        let candidates = manifests.filter { entry in
            // Attestations and other non-image entries carry an `unknown` platform.
            guard let theirs = entry.platform else { return false }
            return platform.accepts(theirs)
        }
        if let match = candidates.first(where: { $0.platform?.variant == platform.variant }) ?? candidates.first { return match }
        let offered = manifests.compactMap { $0.platform?.description }.filter { !$0.hasPrefix("unknown") }
        throw PackError.malformed(
            what: what, reason: "it has no image for \(platform) (it has: \(offered.isEmpty ? "none" : offered.joined(separator: ", "))); pass --platform to choose")
    }
}
