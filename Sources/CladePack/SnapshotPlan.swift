import CZstd
import CladeModel
import CladeStore
import Foundation

/// One blob of a snapshot and what it must decompress to.
struct PlannedPiece {
    var descriptor: Descriptor
    var contentSize: Int64
    var contentDigest: Digest?
    var what: String
}

/// A manifest and its config, checked against each other and against every rule a pack must
/// follow, before any byte of its layers is read.
struct SnapshotPlan {
    var manifestDigest: Digest
    var metadata: SnapshotMetadata
    var parentManifest: Digest?
    var kernel: PlannedPiece
    var initrd: PlannedPiece
    var rootfs: PlannedPiece
    var diskLayers: [PlannedPiece]
    var deviceState: PlannedPiece
    /// Chunks present in the pack, by offset; the rest of memory is zero.
    var memoryChunks: [(offset: Int64, piece: PlannedPiece)]
    /// The manifest's memory chunk size (every chunk but the last has exactly this many bytes).
    var memoryChunkSize = PackFormat.memoryChunkSize
    /// The recorded working set, when the pack carries one.
    var workingSet: WorkingSet?
    /// The rootfs's frame index (format 1.1), which a lazy pull needs; an eager one does not.
    var rootfsIndex: Descriptor?

    static let maxMemoryBytes: Int64 = 1 << 40
    static let maxDiskBytes: Int64 = 1 << 40
    static let maxBootFileBytes: Int64 = 1 << 30
    static let maxDeviceStateBytes: Int64 = 1 << 30

    var pieces: [PlannedPiece] { [kernel, initrd, rootfs] + diskLayers + [deviceState] + memoryChunks.map(\.piece) }

    /// The snapshot's format annotation, checked before anything else in the manifest.
    static func checkFormat(_ manifest: Manifest, what: String) throws {
        guard let format = manifest.annotations?[AnnotationKey.packFormat] else {
            throw PackError.noSnapshot("\(what) has no \(AnnotationKey.packFormat) annotation, so it is not a clade snapshot")
        }
        guard let major = format.split(separator: ".").first.flatMap({ Int($0) }), major >= 1 else {
            throw PackError.malformed(what: what, reason: "pack format '\(format)' is not a version")
        }
        guard major <= PackFormat.major else { throw PackError.newerFormat(what: what, found: format, supported: PackFormat.major) }
    }

    init(manifestDigest: Digest, manifest: Manifest, config: Data) throws {
        let what = "manifest \(manifestDigest.short)"
        guard manifest.schemaVersion == 2 else { throw PackError.malformed(what: what, reason: "schemaVersion is \(manifest.schemaVersion), expected 2") }
        if let mediaType = manifest.mediaType, mediaType != MediaType.imageManifest {
            throw PackError.unknownMediaType(blob: what, mediaType: mediaType)
        }
        guard manifest.artifactType == MediaType.snapshotArtifact || manifest.config.mediaType == MediaType.snapshotConfig else {
            throw PackError.noSnapshot("\(what) has artifact type '\(manifest.artifactType ?? "none")', not \(MediaType.snapshotArtifact)")
        }
        try Self.checkFormat(manifest, what: what)
        guard manifest.config.mediaType == MediaType.snapshotConfig else {
            throw PackError.unknownMediaType(blob: "config of \(what)", mediaType: manifest.config.mediaType)
        }
        self.manifestDigest = manifestDigest
        let metadata: SnapshotMetadata
        do {
            metadata = try CanonicalJSON.decode(SnapshotMetadata.self, from: config, what: "config of \(what)")
        } catch ModelError.newerFormat {
            throw PackError.newerFormat(what: "config of \(what)", found: Self.formatVersion(in: config), supported: SnapshotMetadata.formatMajor)
        } catch let error as ModelError {
            throw PackError.malformed(what: "config of \(what)", reason: error.description)
        }
        try Self.validate(metadata, what: "config of \(what)")
        self.metadata = metadata
        parentManifest = try manifest.annotations?[AnnotationKey.parentManifest].map { text in
            do { return try Digest(parsing: text) } catch {
                throw PackError.malformed(what: what, reason: "\(AnnotationKey.parentManifest) '\(text)' is not a digest")
            }
        }

        // The boot files differ only in which digest the config names and how large they may be.
        let bootFiles: [String: (kind: String, digest: Digest, limit: Int64)] = [
            MediaType.kernel: ("kernel", metadata.kernel, Self.maxBootFileBytes),
            MediaType.initrd: ("initrd", metadata.initrd, Self.maxBootFileBytes),
            MediaType.rootfs: ("rootfs", metadata.rootfs, Self.maxDiskBytes),
        ]
        var boot: [String: PlannedPiece] = [:]
        var deviceState: PlannedPiece?
        var disks: [Int: PlannedPiece] = [:]
        var chunks: [Int64: PlannedPiece] = [:]
        var indexLayer: Descriptor?
        let chunkSize = try Self.chunkSize(of: manifest, what: what)
        memoryChunkSize = chunkSize
        for (position, layer) in manifest.layers.enumerated() {
            let layerWhat = "layer \(position) (\(layer.digest.short)) of \(what)"
            if layer.mediaType == MediaType.rootfsIndex {
                guard indexLayer == nil else { throw PackError.malformed(what: what, reason: "it has more than one rootfs index layer") }
                try Self.limit(layer.size, RootfsIndex.maxBytes, what: layerWhat)
                indexLayer = layer
                continue
            }
            guard MediaType.cladeLayers.contains(layer.mediaType) else {
                if layer.annotation(AnnotationKey.optional) == "true" { continue }
                throw PackError.unknownMediaType(blob: layerWhat, mediaType: layer.mediaType)
            }
            let contentSize = try Self.integer(layer, AnnotationKey.contentSize, what: layerWhat)
            let contentDigest = try layer.annotation(AnnotationKey.contentDigest).map { text in
                do { return try Digest(parsing: text) } catch {
                    throw PackError.malformed(what: layerWhat, reason: "\(AnnotationKey.contentDigest) '\(text)' is not a digest")
                }
            }
            let bound = Int64(ZSTD_compressBound(Int(min(contentSize, Int64(Int.max / 2))))) + 4096
            guard layer.size >= 0, layer.size <= bound else {
                throw PackError.tooLarge(what: layerWhat, declared: layer.size, limit: bound, reason: "zstd cannot expand \(contentSize) content bytes beyond that")
            }
            var piece = PlannedPiece(descriptor: layer, contentSize: contentSize, contentDigest: contentDigest, what: layerWhat)
            func requireDigest(_ expected: Digest, kind: String) throws {
                guard let contentDigest else { throw PackError.malformed(what: layerWhat, reason: "the \(kind) layer has no \(AnnotationKey.contentDigest)") }
                guard contentDigest == expected else {
                    throw PackError.malformed(what: layerWhat, reason: "the \(kind) layer holds \(contentDigest) but the config names \(expected)")
                }
            }
            func once(_ existing: PlannedPiece?, kind: String) throws {
                if existing != nil { throw PackError.malformed(what: what, reason: "it has more than one \(kind) layer") }
            }
            if let file = bootFiles[layer.mediaType] {
                try once(boot[layer.mediaType], kind: file.kind)
                try requireDigest(file.digest, kind: file.kind)
                try Self.limit(contentSize, file.limit, what: layerWhat)
                piece.what = "\(file.kind) \(file.digest.short)"
                boot[layer.mediaType] = piece
                continue
            }
            switch layer.mediaType {
            case MediaType.deviceState:
                try once(deviceState, kind: "device-state")
                try requireDigest(metadata.deviceState.sha256, kind: "device-state")
                guard contentSize == metadata.deviceState.size else {
                    throw PackError.malformed(what: layerWhat, reason: "device state is \(contentSize) bytes but the config says \(metadata.deviceState.size)")
                }
                piece.what = "device state of \(metadata.tag)"
                deviceState = piece
            case MediaType.diskLayer:
                let index = Int(try Self.integer(layer, AnnotationKey.diskIndex, what: layerWhat))
                guard index >= 0, index < metadata.diskLayers.count else {
                    throw PackError.malformed(what: layerWhat, reason: "disk index \(index) is outside the config's \(metadata.diskLayers.count) layers")
                }
                guard disks[index] == nil else { throw PackError.malformed(what: what, reason: "disk layer \(index) appears twice") }
                guard contentDigest != nil else { throw PackError.malformed(what: layerWhat, reason: "the disk layer has no \(AnnotationKey.contentDigest)") }
                try Self.limit(contentSize, Self.maxDiskBytes, what: layerWhat)
                piece.what = "disk layer \(index) of \(metadata.tag)"
                disks[index] = piece
            default:  // memory chunk
                let offset = try Self.integer(layer, AnnotationKey.memoryOffset, what: layerWhat)
                let logical = metadata.memory.logicalSize
                guard offset % Int64(chunkSize) == 0, offset < logical else {
                    throw PackError.malformed(what: layerWhat, reason: "memory offset \(offset) is not a chunk boundary inside \(logical) bytes")
                }
                guard chunks[offset] == nil else { throw PackError.malformed(what: what, reason: "two memory chunks claim offset \(offset)") }
                let expected = min(Int64(chunkSize), logical - offset)
                guard contentSize == expected else {
                    throw PackError.malformed(what: layerWhat, reason: "memory chunk at \(offset) claims \(contentSize) bytes; it must be \(expected)")
                }
                piece.what = "memory chunk at \(offset) of \(metadata.tag)"
                chunks[offset] = piece
            }
        }
        let kernel = boot[MediaType.kernel], initrd = boot[MediaType.initrd], rootfs = boot[MediaType.rootfs]
        guard let kernel, let initrd, let rootfs, let deviceState else {
            let missing = [kernel == nil ? "kernel" : nil, initrd == nil ? "initrd" : nil, rootfs == nil ? "rootfs" : nil, deviceState == nil ? "device state" : nil]
            throw PackError.malformed(what: what, reason: "it has no \(missing.compactMap { $0 }.joined(separator: ", ")) layer; a pack must be self-contained")
        }
        guard disks.count == metadata.diskLayers.count else {
            throw PackError.malformed(what: what, reason: "it carries \(disks.count) disk layers but the config names \(metadata.diskLayers.count)")
        }
        self.kernel = kernel
        self.initrd = initrd
        self.rootfs = rootfs
        self.deviceState = deviceState
        rootfsIndex = indexLayer
        diskLayers = (0..<disks.count).compactMap { disks[$0] }
        memoryChunks = chunks.keys.sorted().compactMap { offset in chunks[offset].map { (offset, $0) } }
        workingSet = try manifest.annotations?[AnnotationKey.memoryWorkingSet].map { text in
            let chunkLimit = (metadata.memory.logicalSize + Int64(chunkSize) - 1) / Int64(chunkSize)
            return try WorkingSet(encoded: text, chunkSize: Int64(chunkSize), chunkLimit: chunkLimit, what: "\(AnnotationKey.memoryWorkingSet) of \(what)")
        }
    }

    private static func formatVersion(in config: Data) -> String {
        (try? JSONSerialization.jsonObject(with: config) as? [String: Any])?["format_version"] as? String ?? "unknown"
    }

    private static func chunkSize(of manifest: Manifest, what: String) throws -> Int {
        guard let text = manifest.annotations?[AnnotationKey.memoryChunkSize] else { return PackFormat.memoryChunkSize }
        guard let size = Int(text), size >= 4096, size <= 1 << 30, size & (size - 1) == 0 else {
            throw PackError.malformed(what: what, reason: "memory chunk size '\(text)' is not a power of two between 4 KiB and 1 GiB")
        }
        return size
    }

    private static func integer(_ layer: Descriptor, _ key: String, what: String) throws -> Int64 {
        guard let text = layer.annotation(key) else { throw PackError.malformed(what: what, reason: "annotation \(key) is missing") }
        guard let value = Int64(text), value >= 0 else { throw PackError.malformed(what: what, reason: "annotation \(key) '\(text)' is not a non-negative integer") }
        return value
    }

    private static func limit(_ size: Int64, _ maximum: Int64, what: String) throws {
        guard size <= maximum else { throw PackError.tooLarge(what: what, declared: size, limit: maximum, reason: "no snapshot piece of this kind is that large") }
    }

    /// Rejects a config that could make this host read or write outside the snapshot's directory.
    static func validate(_ metadata: SnapshotMetadata, what: String) throws {
        func name(_ value: String, expected: String, field: String) throws {
            guard value == expected else {
                if value.contains("/") { throw PackError.hostPath(what: "\(what) field \(field)", value: value) }
                throw PackError.malformed(what: what, reason: "\(field) is '\(value)'; clade names that file '\(expected)'")
            }
        }
        do {
            try Names.validate(metadata.tag, kind: "tag")
            try Names.validate(metadata.id, kind: "snapshot id")
            if let image = metadata.image { try Names.validate(image, kind: "image") }
            if let source = metadata.branchedFrom { try Names.validateSandboxID(source) }
            if let parent = metadata.parent {
                try Names.validate(parent.tag, kind: "tag")
                try Names.validate(parent.id, kind: "snapshot id")
            }
        } catch let error as StoreError {
            throw PackError.malformed(what: what, reason: error.description)
        }
        try name(metadata.memory.file, expected: "memory", field: "memory.file")
        try name(metadata.deviceState.file, expected: "devices.state", field: "device_state.file")
        guard (1...SnapshotMetadata.maxChainDepth).contains(metadata.diskLayers.count) else {
            throw PackError.malformed(what: what, reason: "it names \(metadata.diskLayers.count) disk layers; 1 to \(SnapshotMetadata.maxChainDepth) are allowed")
        }
        for (index, layer) in metadata.diskLayers.enumerated() {
            try name(layer.file, expected: "layer-\(index).qcow2", field: "disk_layers[\(index)].file")
            guard layer.format == "qcow2" else { throw PackError.malformed(what: what, reason: "disk layer \(index) has format '\(layer.format)', expected qcow2") }
            guard layer.backing == (index == 0 ? metadata.rootfs : nil) else {
                throw PackError.malformed(what: what, reason: "disk layer \(index) names backing \(layer.backing?.description ?? "none"), which does not match its place in the chain")
            }
        }
        let machine = metadata.machine
        guard (1...256).contains(machine.vcpus) else { throw PackError.malformed(what: what, reason: "machine.vcpus \(machine.vcpus) is out of range 1...256") }
        guard machine.memoryMiB > 0, Int64(machine.memoryMiB) << 20 <= maxMemoryBytes else {
            throw PackError.tooLarge(what: "\(what) machine.memory_mib", declared: Int64(machine.memoryMiB) << 20, limit: maxMemoryBytes, reason: "guest memory limit")
        }
        guard metadata.memory.logicalSize == Int64(machine.memoryMiB) << 20 else {
            throw PackError.malformed(what: what, reason: "memory.logical_size \(metadata.memory.logicalSize) does not match machine.memory_mib \(machine.memoryMiB)")
        }
        guard metadata.deviceState.size >= 0, metadata.deviceState.size <= maxDeviceStateBytes else {
            throw PackError.tooLarge(what: "\(what) device_state.size", declared: metadata.deviceState.size, limit: maxDeviceStateBytes, reason: "device state is small")
        }
        guard [SnapshotMetadata.DeviceState.migrationFormat, SnapshotMetadata.DeviceState.devicesFormat].contains(metadata.deviceState.format) else {
            throw PackError.malformed(what: what, reason: "device_state.format '\(metadata.deviceState.format)' is unknown")
        }
    }
}
