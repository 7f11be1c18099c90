import CladeStore
import Foundation

/// `snapshot.json`: everything needed to restore a snapshot, and nothing host-specific.
///
/// Files are named relative to the snapshot directory; blobs by digest. Versioning: a
/// reader accepts any minor version of its major version (new fields are optional with
/// defaults) and refuses a newer major version with a clear message.
public struct SnapshotMetadata: Codable, Sendable, Equatable {
    public static let formatMajor = 1
    public static let formatMinor = 0
    public static let fileName = "snapshot.json"

    public struct Hypervisor: Codable, Sendable, Equatable {
        public var name: String
        public var version: String
        public init(name: String, version: String) {
            self.name = name
            self.version = version
        }
    }

    public struct Machine: Codable, Sendable, Equatable {
        public var type: String
        public var vcpus: Int
        public var memoryMiB: Int
        /// The `-device` values in order; a restore must recreate exactly these.
        public var devices: [String]
        public var kernelCommandLine: String
        public var accelerator: String

        enum CodingKeys: String, CodingKey {
            case type, vcpus, devices, accelerator
            case memoryMiB = "memory_mib"
            case kernelCommandLine = "kernel_command_line"
        }

        public init(type: String, vcpus: Int, memoryMiB: Int, devices: [String], kernelCommandLine: String, accelerator: String) {
            self.type = type
            self.vcpus = vcpus
            self.memoryMiB = memoryMiB
            self.devices = devices
            self.kernelCommandLine = kernelCommandLine
            self.accelerator = accelerator
        }
    }

    /// Deepest disk chain (and so branch chain) clade accepts; `clade compact` flattens deeper ones.
    public static let maxChainDepth = 16

    public struct DiskLayer: Codable, Sendable, Equatable {
        /// File in the snapshot directory: `layer-<i>.qcow2`, backing onto layer i-1 (layer 0 onto the rootfs blob).
        public var file: String
        public var format: String
        /// The blob this layer's unchanged clusters resolve to.
        public var backing: Digest?
        public init(file: String, format: String, backing: Digest?) {
            self.file = file
            self.format = format
            self.backing = backing
        }
    }

    public struct MemoryFile: Codable, Sendable, Equatable {
        public var file: String
        public var logicalSize: Int64
        public var physicalSize: Int64
        enum CodingKeys: String, CodingKey {
            case file
            case logicalSize = "logical_size"
            case physicalSize = "physical_size"
        }
        public init(file: String, logicalSize: Int64, physicalSize: Int64) {
            self.file = file
            self.logicalSize = logicalSize
            self.physicalSize = physicalSize
        }
    }

    public struct DeviceState: Codable, Sendable, Equatable {
        /// A full migration stream without RAM (`migration`), or QEMU's device-only save (`devices`,
        /// from `xen-save-devices-state`), which restores with `migration.send-configuration=off`.
        public static let migrationFormat = "migration"
        public static let devicesFormat = "devices"

        public var file: String
        public var size: Int64
        public var sha256: Digest
        public var format: String

        public init(file: String, size: Int64, sha256: Digest, format: String = DeviceState.migrationFormat) {
            self.file = file
            self.size = size
            self.sha256 = sha256
            self.format = format
        }

        enum CodingKeys: String, CodingKey { case file, size, sha256, format }

        public init(from decoder: Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            file = try container.decode(String.self, forKey: .file)
            size = try container.decode(Int64.self, forKey: .size)
            sha256 = try container.decode(Digest.self, forKey: .sha256)
            format = try container.decodeIfPresent(String.self, forKey: .format) ?? Self.migrationFormat
        }
    }

    public struct Parent: Codable, Sendable, Equatable {
        public var tag: String
        public var id: String
        public init(tag: String, id: String) {
            self.tag = tag
            self.id = id
        }
    }

    public var formatVersion: String
    public var tag: String
    public var id: String
    public var createdAt: Date
    public var hypervisor: Hypervisor
    public var machine: Machine
    public var image: String?
    public var kernel: Digest
    public var initrd: Digest
    public var rootfs: Digest
    public var diskLayers: [DiskLayer]
    public var memory: MemoryFile
    public var deviceState: DeviceState
    public var parent: Parent?
    public var agentProtocolVersion: Int
    /// The sandbox a branch was taken from; nil for snapshots baked or taken from a cold boot.
    public var branchedFrom: String?
    /// How processes run in it (the image's user, environment, working directory), carried to
    /// every fork and in packs; nil for snapshots of images without a config.
    public var imageConfig: ImageConfig?
    /// The network policy forks get unless they ask for another; nil: ``NetworkPolicy/standard``.
    public var network: NetworkPolicy?

    enum CodingKeys: String, CodingKey {
        case tag, id, hypervisor, machine, image, kernel, initrd, rootfs, memory, parent
        case formatVersion = "format_version"
        case createdAt = "created_at"
        case diskLayers = "disk_layers"
        case deviceState = "device_state"
        case agentProtocolVersion = "agent_protocol_version"
        case branchedFrom = "branched_from"
        case imageConfig = "image_config"
        case network
    }

    public init(
        tag: String, id: String, createdAt: Date = Date(), hypervisor: Hypervisor, machine: Machine, image: String?,
        kernel: Digest, initrd: Digest, rootfs: Digest, diskLayers: [DiskLayer], memory: MemoryFile,
        deviceState: DeviceState, parent: Parent?, agentProtocolVersion: Int, branchedFrom: String? = nil
    ) {
        self.formatVersion = "\(Self.formatMajor).\(Self.formatMinor)"
        self.tag = tag
        self.id = id
        self.createdAt = createdAt
        self.hypervisor = hypervisor
        self.machine = machine
        self.image = image
        self.kernel = kernel
        self.initrd = initrd
        self.rootfs = rootfs
        self.diskLayers = diskLayers
        self.memory = memory
        self.deviceState = deviceState
        self.parent = parent
        self.agentProtocolVersion = agentProtocolVersion
        self.branchedFrom = branchedFrom
    }

    public init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        formatVersion = try container.decodeIfPresent(String.self, forKey: .formatVersion) ?? "1.0"
        let major = Int(formatVersion.split(separator: ".").first ?? "") ?? 0
        guard major <= Self.formatMajor else {
            throw ModelError.newerFormat(kind: "snapshot (format \(formatVersion))", found: major, supported: Self.formatMajor)
        }
        guard major >= 1 else { throw ModelError.corrupt(path: Self.fileName, reason: "format_version '\(formatVersion)' is not valid") }
        tag = try container.decode(String.self, forKey: .tag)
        id = try container.decode(String.self, forKey: .id)
        createdAt = try container.decodeIfPresent(Date.self, forKey: .createdAt) ?? Date(timeIntervalSince1970: 0)
        hypervisor = try container.decodeIfPresent(Hypervisor.self, forKey: .hypervisor) ?? Hypervisor(name: "qemu", version: "unknown")
        machine = try container.decode(Machine.self, forKey: .machine)
        image = try container.decodeIfPresent(String.self, forKey: .image)
        kernel = try container.decode(Digest.self, forKey: .kernel)
        initrd = try container.decode(Digest.self, forKey: .initrd)
        rootfs = try container.decode(Digest.self, forKey: .rootfs)
        diskLayers = try container.decodeIfPresent([DiskLayer].self, forKey: .diskLayers) ?? []
        memory = try container.decode(MemoryFile.self, forKey: .memory)
        deviceState = try container.decode(DeviceState.self, forKey: .deviceState)
        parent = try container.decodeIfPresent(Parent.self, forKey: .parent)
        agentProtocolVersion = try container.decodeIfPresent(Int.self, forKey: .agentProtocolVersion) ?? 1
        branchedFrom = try container.decodeIfPresent(String.self, forKey: .branchedFrom)
        imageConfig = try container.decodeIfPresent(ImageConfig.self, forKey: .imageConfig)
        network = try container.decodeIfPresent(NetworkPolicy.self, forKey: .network)
    }
}

/// Snapshots by tag, one directory each under `snapshots/`.
public struct SnapshotCatalog: Sendable {
    public let home: CladeHome

    public init(home: CladeHome) { self.home = home }

    public func directory(_ tag: String) -> URL { home.snapshots.appendingPathComponent(tag) }

    public func get(_ tag: String) throws -> SnapshotMetadata? {
        try Names.validate(tag, kind: "tag")
        return try JSONFiles.read(SnapshotMetadata.self, from: directory(tag).appendingPathComponent(SnapshotMetadata.fileName))
    }

    public func require(_ tag: String) throws -> SnapshotMetadata {
        guard let metadata = try get(tag) else {
            throw ModelError.notFound(kind: "snapshot", name: tag, hint: "list snapshots with `clade snapshots`, or make one with `clade bake --tag \(tag)`")
        }
        return metadata
    }

    /// Every snapshot, from the catalog.
    public func list() throws -> [SnapshotMetadata] {
        try CatalogDatabase.shared(home).read { try CatalogRows.snapshots(in: $0) }
    }

    /// Records a snapshot whose directory was just made visible (or replaced) in the catalog.
    public func recordPublished(_ tag: String) throws {
        let metadata = try require(tag)
        let bytes = storedBytes(tag)
        try CatalogDatabase.shared(home).write { try CatalogRows.putSnapshot(metadata, storedBytes: bytes, in: $0) }
    }

    /// Drops a removed snapshot from the catalog.
    public func recordRemoved(_ tag: String) throws {
        try CatalogDatabase.shared(home).write { try CatalogRows.removeSnapshot(tag, in: $0) }
    }

    /// Snapshots whose parent is `tag`, directly or through others, nearest first.
    public func descendants(of tag: String) throws -> [String] {
        try CatalogDatabase.shared(home).read { try CatalogRows.descendants(of: tag, in: $0) }
    }

    /// `tag`'s parent, its parent, … to the root.
    public func ancestors(of tag: String) throws -> [String] {
        try CatalogDatabase.shared(home).read { try CatalogRows.ancestors(of: tag, in: $0) }
    }

    /// Bytes the files in `tag`'s directory occupy on disk.
    public func storedBytes(_ tag: String) -> Int64 {
        let directory = directory(tag)
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory.path) else { return 0 }
        return names.reduce(0) { total, name in
            total + ((try? FileSystem.status(of: directory.appendingPathComponent(name)))?.allocatedBytes ?? 0)
        }
    }
}
