import CladeStore
import Foundation

/// A bootable image: kernel, initrd and an ext4 root filesystem, each a blob by digest.
public struct ImageRecord: Codable, Sendable, Equatable {
    public static let currentFormat = 1

    public var format: Int
    public var name: String
    /// The deterministic ext4 root filesystem.
    public var rootfs: Digest
    public var rootfsSize: Int64
    public var initrd: Digest
    public var kernel: Digest
    /// Kernel release the initrd's modules were taken from, e.g. `6.1.0-56-cloud-amd64`.
    public var kernelRelease: String
    public var agentVersion: String
    /// The agent binary the initrd carries; a different one on the host means the initrd is rebuilt
    /// at the next boot, so an upgraded clade never boots an image with its old agent.
    public var agentDigest: Digest?
    public var createdAt: Date
    /// Where the root filesystem came from: a registry reference, an import path, a Debian
    /// suite, or a directory. Nil for records written before clade recorded it.
    public var source: String?
    /// The OCI manifest the image was made from, when it came from one.
    public var manifestDigest: Digest?
    /// How processes run in it; nil means clade's defaults (root, `/`, no extra environment).
    public var config: ImageConfig?
    /// The layer blobs the root filesystem was assembled from (kept for `gc` and re-builds).
    public var layers: [Digest]
    /// The image config blob, when the image came from an OCI manifest.
    public var configBlob: Digest?

    public init(
        name: String, rootfs: Digest, rootfsSize: Int64, initrd: Digest, kernel: Digest,
        kernelRelease: String, agentVersion: String, createdAt: Date = Date()
    ) {
        self.format = Self.currentFormat
        self.name = name
        self.rootfs = rootfs
        self.rootfsSize = rootfsSize
        self.initrd = initrd
        self.kernel = kernel
        self.kernelRelease = kernelRelease
        self.agentVersion = agentVersion
        self.createdAt = createdAt
        self.layers = []
    }

    enum CodingKeys: String, CodingKey {
        case format, name, rootfs, initrd, kernel
        case rootfsSize = "rootfs_size"
        case kernelRelease = "kernel_release"
        case agentVersion = "agent_version"
        case createdAt = "created_at"
        case source, config, layers
        case manifestDigest = "manifest_digest"
        case configBlob = "config_blob"
        case agentDigest = "agent_digest"
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        format = try container.decodeIfPresent(Int.self, forKey: .format) ?? 1
        guard format <= Self.currentFormat else { throw ModelError.newerFormat(kind: "image record", found: format, supported: Self.currentFormat) }
        name = try container.decode(String.self, forKey: .name)
        rootfs = try container.decode(Digest.self, forKey: .rootfs)
        rootfsSize = try container.decodeIfPresent(Int64.self, forKey: .rootfsSize) ?? 0
        initrd = try container.decode(Digest.self, forKey: .initrd)
        kernel = try container.decode(Digest.self, forKey: .kernel)
        kernelRelease = try container.decodeIfPresent(String.self, forKey: .kernelRelease) ?? ""
        agentVersion = try container.decodeIfPresent(String.self, forKey: .agentVersion) ?? ""
        createdAt = try container.decodeIfPresent(Date.self, forKey: .createdAt) ?? Date(timeIntervalSince1970: 0)
        source = try container.decodeIfPresent(String.self, forKey: .source)
        manifestDigest = try container.decodeIfPresent(Digest.self, forKey: .manifestDigest)
        config = try container.decodeIfPresent(ImageConfig.self, forKey: .config)
        layers = try container.decodeIfPresent([Digest].self, forKey: .layers) ?? []
        configBlob = try container.decodeIfPresent(Digest.self, forKey: .configBlob)
        agentDigest = try container.decodeIfPresent(Digest.self, forKey: .agentDigest)
    }
}

public enum ModelError: Error, CustomStringConvertible, Sendable {
    case newerFormat(kind: String, found: Int, supported: Int)
    case notFound(kind: String, name: String, hint: String)
    case alreadyExists(kind: String, name: String, hint: String)
    case corrupt(path: String, reason: String)
    /// The SQLite catalog could not be opened, read or written.
    case catalog(path: String, reason: String)
    /// A network policy (`--network`, the API's `network`) that does not parse.
    case invalidNetworkPolicy(String, reason: String)
    /// A resource limit out of range.
    case invalidLimit(String)

    public var description: String {
        switch self {
        case .newerFormat(let kind, let found, let supported):
            return "this \(kind) has format version \(found) but this clade reads up to \(supported); upgrade clade to use it"
        case .notFound(let kind, let name, let hint):
            return "no \(kind) named '\(name)'; \(hint)"
        case .alreadyExists(let kind, let name, let hint):
            return "\(kind) '\(name)' already exists; \(hint)"
        case .corrupt(let path, let reason):
            return "\(path) cannot be read: \(reason)"
        case .catalog(let path, let reason):
            return "the catalog \(path) failed: \(reason); if the disk is full free space and retry, if the file is damaged move it aside (clade rebuilds it from the store's directories on the next start)"
        case .invalidNetworkPolicy(let text, let reason):
            return "'\(text)' is not a network policy: \(reason)"
        case .invalidLimit(let message):
            return message
        }
    }
}

extension ModelError: CategorizedError {
    public var category: ErrorCategory {
        switch self {
        case .notFound: return .notFound
        case .alreadyExists: return .conflict
        case .corrupt, .catalog: return .damaged
        case .newerFormat: return .unsupported
        case .invalidNetworkPolicy, .invalidLimit: return .badInput
        }
    }
}
