import CladeModel
import CladeStore
import Foundation

@testable import CladePack

/// A store holding one synthetic snapshot (no VM): random kernel, initrd and device state, a
/// mostly-empty rootfs, a qcow2 overlay on it with the canonical backing name, and a sparse
/// memory file with data in a few chunks. Enough to pack and unpack for real.
struct PackFixture {
    let home: CladeHome
    let tag: String
    let metadata: SnapshotMetadata

    static let memoryMiB = 16

    static func temporaryDirectory(_ name: String) -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("clade-pack-\(name)-\(UUID().uuidString.prefix(8))")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static func randomData(_ count: Int) -> Data {
        var generator = SystemRandomNumberGenerator()
        return Data((0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    init(tag: String = "fixture", home: CladeHome? = nil, rootfsSeed: UInt8 = 7) throws {
        let home = home ?? CladeHome(root: Self.temporaryDirectory("store"))
        self.home = home
        self.tag = tag
        try home.prepare()
        let blobs = BlobStore(home: home)
        func ingest(_ data: Data) throws -> Digest {
            let staging = try home.makeTemporaryDirectory(prefix: "fixture")
            defer { try? FileSystem.remove(staging) }
            let file = staging.appendingPathComponent("blob")
            try data.write(to: file)
            return try blobs.ingest(file).digest
        }
        let kernel = try ingest(Self.randomData(64 << 10))
        let initrd = try ingest(Self.randomData(32 << 10))
        var rootfsBytes = Data(count: 4 << 20)
        rootfsBytes.replaceSubrange(0..<4096, with: Data(repeating: rootfsSeed, count: 4096))
        let rootfs = try ingest(rootfsBytes)

        let directory = SnapshotCatalog(home: home).directory(tag)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try ExternalCommand("qemu-img", [
            "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "../../blobs/sha256/\(rootfs.hex)", "-u", "layer-0.qcow2", "4M",
        ], currentDirectory: directory).check()
        let state = Self.randomData(10 << 10)
        try state.write(to: directory.appendingPathComponent("devices.state"))
        let memory = directory.appendingPathComponent("memory")
        let fd = open(memory.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        ftruncate(fd, off_t(Self.memoryMiB << 20))
        // Data in chunks 0 and 2; chunk 1 and 3 stay holes.
        for offset in [0, 4096 * 3, (8 << 20) + 12288] {
            let page = Self.randomData(4096)
            _ = page.withUnsafeBytes { pwrite(fd, $0.baseAddress, 4096, off_t(offset)) }
        }
        close(fd)
        let metadata = SnapshotMetadata(
            tag: tag, id: UUID().uuidString.lowercased(), hypervisor: .init(name: "qemu", version: "test"),
            machine: .init(type: "microvm", vcpus: 1, memoryMiB: Self.memoryMiB, devices: ["virtio-blk-device"], kernelCommandLine: "console=ttyS0", accelerator: "tcg"),
            image: "default", kernel: kernel, initrd: initrd, rootfs: rootfs,
            diskLayers: [.init(file: "layer-0.qcow2", format: "qcow2", backing: rootfs)],
            memory: .init(file: "memory", logicalSize: Int64(Self.memoryMiB << 20), physicalSize: 12288),
            deviceState: .init(file: "devices.state", size: Int64(state.count), sha256: Digest.of(state), format: "devices"),
            parent: nil, agentProtocolVersion: 1)
        try JSONFiles.write(metadata, to: directory.appendingPathComponent(SnapshotMetadata.fileName))
        try SnapshotCatalog(home: home).recordPublished(tag)
        self.metadata = metadata
    }

    /// Every path under the store with its size, and the catalog's snapshots, sandboxes and open
    /// journal entries, for before/after comparisons. The catalog's own files are left out: a
    /// refused operation still writes (and removes) its journal entry.
    static func listing(_ home: CladeHome) -> [String] {
        guard let enumerator = FileManager.default.enumerator(at: home.root, includingPropertiesForKeys: [.fileSizeKey]) else { return [] }
        var entries: [String] = []
        for case let url as URL in enumerator where !url.lastPathComponent.hasPrefix("catalog.sqlite") {
            let size = (try? url.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? -1
            entries.append("\(url.path.dropFirst(home.root.path.count)) \(size)")
        }
        let snapshots = (try? SnapshotCatalog(home: home).list().map { "\($0.tag) \($0.id)" }) ?? ["unreadable"]
        let sandboxes = (try? SandboxCatalog(home: home).indexed().map(\.id)) ?? ["unreadable"]
        let journal = (try? OperationJournal(home: home).entries().map { "\($0.kind) \($0.subject)" }) ?? ["unreadable"]
        entries.append("catalog snapshots: \(snapshots)")
        entries.append("catalog sandboxes: \(sandboxes)")
        entries.append("catalog journal: \(journal)")
        return entries.sorted()
    }
}

/// Edits an OCI layout the way an attacker (or a broken tool) would.
struct LayoutEditor {
    let root: URL

    var blobs: URL { root.appendingPathComponent("blobs/sha256") }

    func readJSON(_ url: URL) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any] ?? [:]
    }

    func index() throws -> [String: Any] { try readJSON(root.appendingPathComponent("index.json")) }

    func writeIndex(_ index: [String: Any]) throws {
        try JSONSerialization.data(withJSONObject: index).write(to: root.appendingPathComponent("index.json"))
    }

    /// Adds bytes as a blob under their true digest.
    @discardableResult
    func put(_ data: Data) throws -> (digest: String, size: Int) {
        let digest = Digest.of(data)
        let url = blobs.appendingPathComponent(digest.hex)
        try? FileManager.default.removeItem(at: url)
        try data.write(to: url)
        return (digest.description, data.count)
    }

    func blob(_ digest: String) -> URL { blobs.appendingPathComponent(String(digest.dropFirst("sha256:".count))) }

    /// The first manifest of the index, parsed.
    func manifest(at position: Int = 0) throws -> [String: Any] {
        let entries = try index()["manifests"] as? [[String: Any]] ?? []
        return try readJSON(blob(entries[position]["digest"] as? String ?? ""))
    }

    /// Stores `manifest` as a new blob and points index entry `position` at it.
    func replaceManifest(_ manifest: [String: Any], at position: Int = 0) throws {
        let stored = try put(try JSONSerialization.data(withJSONObject: manifest, options: [.sortedKeys]))
        var index = try index()
        var entries = index["manifests"] as? [[String: Any]] ?? []
        entries[position]["digest"] = stored.digest
        entries[position]["size"] = stored.size
        index["manifests"] = entries
        try writeIndex(index)
    }

    /// Rewrites the config through `edit` and re-points the manifest at it.
    func editConfig(_ edit: (inout [String: Any]) -> Void) throws {
        var manifest = try manifest()
        var config = manifest["config"] as? [String: Any] ?? [:]
        var body = try readJSON(blob(config["digest"] as? String ?? ""))
        edit(&body)
        let stored = try put(try JSONSerialization.data(withJSONObject: body, options: [.sortedKeys]))
        config["digest"] = stored.digest
        config["size"] = stored.size
        manifest["config"] = config
        try replaceManifest(manifest)
    }

    /// Edits the layer whose media type is `mediaType` (the first one).
    func editLayer(_ mediaType: String, _ edit: (inout [String: Any]) throws -> Void) throws {
        var manifest = try manifest()
        var layers = manifest["layers"] as? [[String: Any]] ?? []
        guard let position = layers.firstIndex(where: { $0["mediaType"] as? String == mediaType }) else { return }
        try edit(&layers[position])
        manifest["layers"] = layers
        try replaceManifest(manifest)
    }

    func editManifest(_ edit: (inout [String: Any]) -> Void) throws {
        var manifest = try manifest()
        edit(&manifest)
        try replaceManifest(manifest)
    }

    /// Replaces a layer's blob with `data` compressed, under its true digest and size.
    func replaceLayerContent(_ mediaType: String, compressed data: Data) throws {
        try editLayer(mediaType) { layer in
            let stored = try put(data)
            layer["digest"] = stored.digest
            layer["size"] = stored.size
        }
    }
}

func zstdCompress(_ data: Data) throws -> Data {
    let compressor = try ZstdCompressor(level: 3, workers: 1)
    return Data(try data.withUnsafeBytes { try compressor.compress($0) })
}
