import CladeModel
import CladeQEMU
import CladeStore
import Foundation
import Testing

@testable import CladePack

/// One crafted bad pack: how to spoil a good layout, and words the refusal must contain.
struct HostileCase: Sendable, CustomTestStringConvertible {
    let name: String
    let expected: String
    /// Spoils the layout; returns the path to unpack (the layout, or a tar made from it).
    let spoil: @Sendable (LayoutEditor, URL) throws -> URL

    var testDescription: String { name }
}

/// Makes a tar of `layout` with Python's tarfile, adding one extra entry of the given kind.
func tarWithEntry(_ layout: URL, kind: String, name: String) throws -> URL {
    let tar = layout.deletingLastPathComponent().appendingPathComponent("\(layout.lastPathComponent)-\(kind).tar")
    let script = """
    import sys, tarfile, io
    layout, out, kind, name = sys.argv[1:5]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(layout, arcname=".")
        info = tarfile.TarInfo(name)
        if kind == "file":
            data = b"hostile"
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        elif kind == "symlink":
            info.type = tarfile.SYMTYPE; info.linkname = "/etc/passwd"; tar.addfile(info)
        elif kind == "hardlink":
            info.type = tarfile.LNKTYPE; info.linkname = "/etc/passwd"; tar.addfile(info)
        elif kind == "device":
            info.type = tarfile.CHRTYPE; info.devmajor = 1; info.devminor = 3; tar.addfile(info)
    """
    try ExternalCommand("python3", ["-c", script, layout.path, tar.path, kind, name]).check()
    return tar
}

let hostileCases: [HostileCase] = [
    HostileCase(name: "newer pack format", expected: "pack format 2.0") { editor, root in
        try editor.editManifest { $0["annotations"] = ($0["annotations"] as? [String: Any] ?? [:]).merging([AnnotationKey.packFormat: "2.0"]) { $1 } }
        return root
    },
    HostileCase(name: "newer snapshot format", expected: "upgrade clade") { editor, root in
        try editor.editConfig { $0["format_version"] = "9.0" }
        return root
    },
    HostileCase(name: "unknown required media type", expected: "does not know") { editor, root in
        try editor.editLayer(MediaType.deviceState) { $0["mediaType"] = "application/vnd.clade.future.v9" }
        return root
    },
    HostileCase(name: "index digest that is not a digest", expected: "not a digest") { editor, root in
        var index = try editor.index()
        var entries = index["manifests"] as? [[String: Any]] ?? []
        entries[0]["digest"] = "sha256:../../../etc/passwd"
        index["manifests"] = entries
        try editor.writeIndex(index)
        return root
    },
    HostileCase(name: "layer reference that is not a digest", expected: "not a digest") { editor, root in
        try editor.editLayer(MediaType.kernel) { $0["digest"] = "md5:0123" }
        return root
    },
    HostileCase(name: "layer bytes that do not match their digest", expected: "hash to") { editor, root in
        let manifest = try editor.manifest()
        let layer = (manifest["layers"] as? [[String: Any]] ?? []).first { $0["mediaType"] as? String == MediaType.deviceState }
        let url = editor.blob(layer?["digest"] as? String ?? "")
        var bytes = try Data(contentsOf: url)
        bytes[bytes.count / 2] ^= 0xff
        try? FileManager.default.removeItem(at: url)
        try bytes.write(to: url)
        return root
    },
    HostileCase(name: "manifest edited in place", expected: "hash to") { editor, root in
        let entries = try editor.index()["manifests"] as? [[String: Any]] ?? []
        let url = editor.blob(entries[0]["digest"] as? String ?? "")
        var text = try String(contentsOf: url, encoding: .utf8)
        text = text.replacingOccurrences(of: "\"schemaVersion\":2", with: "\"schemaVersion\":3")
        let data = Data(text.utf8)
        try? FileManager.default.removeItem(at: url)
        try data.write(to: url)
        return root
    },
    HostileCase(name: "a size that lies", expected: "declared as") { editor, root in
        try editor.editLayer(MediaType.initrd) { $0["size"] = (($0["size"] as? Int) ?? 0) - 10 }
        return root
    },
    HostileCase(name: "truncated zstd", expected: "middle of a frame") { editor, root in
        let full = try zstdCompress(PackFixture.randomData(10 << 10))
        try editor.editLayer(MediaType.deviceState) { layer in
            let stored = try editor.put(full.prefix(full.count - 20))
            layer["digest"] = stored.digest
            layer["size"] = stored.size
        }
        return root
    },
    HostileCase(name: "corrupt zstd", expected: "not valid zstd") { editor, root in
        try editor.replaceLayerContent(MediaType.deviceState, compressed: Data("this is not zstd at all".utf8))
        return root
    },
    HostileCase(name: "content that decompresses larger than declared", expected: "decompressed") { editor, root in
        try editor.editLayer(MediaType.rootfs) { $0["annotations"] = ($0["annotations"] as? [String: String] ?? [:]).merging([AnnotationKey.contentSize: "1000"]) { $1 } }
        return root
    },
    HostileCase(name: "a blob claimed 1 TiB", expected: "claims 1099511627776") { editor, root in
        try editor.editLayer(MediaType.kernel) { $0["size"] = 1 << 40 }
        return root
    },
    HostileCase(name: "content claimed 1 TiB", expected: "bytes free") { editor, root in
        try editor.editLayer(MediaType.rootfs) { $0["annotations"] = ($0["annotations"] as? [String: String] ?? [:]).merging([AnnotationKey.contentSize: "\(1 << 40)"]) { $1 } }
        return root
    },
    HostileCase(name: "config naming a host path", expected: "a path") { editor, root in
        try editor.editConfig { config in
            var memory = config["memory"] as? [String: Any] ?? [:]
            memory["file"] = "/var/lib/clade/snapshots/other/memory"
            config["memory"] = memory
        }
        return root
    },
    HostileCase(name: "config with a path-like id", expected: "not a valid name") { editor, root in
        try editor.editConfig { $0["id"] = "../../etc" }
        return root
    },
    HostileCase(name: "index with two manifests for one tag", expected: "more than one manifest") { editor, root in
        var index = try editor.index()
        var entries = index["manifests"] as? [[String: Any]] ?? []
        let other = try editor.put(Data("{}".utf8))
        var second = entries[0]
        second["digest"] = other.digest
        second["size"] = other.size
        entries.append(second)
        index["manifests"] = entries
        try editor.writeIndex(index)
        return root
    },
    HostileCase(name: "manifests that name each other as parents", expected: "cycle") { editor, root in
        // Digests are chosen, not computed: the cycle must be caught before any digest is trusted.
        let first = "sha256:" + String(repeating: "a", count: 64)
        let second = "sha256:" + String(repeating: "b", count: 64)
        var manifest = try editor.manifest()
        for (name, parent) in [(first, second), (second, first)] {
            manifest["annotations"] = (manifest["annotations"] as? [String: Any] ?? [:]).merging([AnnotationKey.parentManifest: parent]) { $1 }
            let data = try JSONSerialization.data(withJSONObject: manifest)
            try data.write(to: editor.blob(name))
        }
        let size = try Data(contentsOf: editor.blob(first)).count
        try editor.writeIndex([
            "schemaVersion": 2,
            "manifests": [["mediaType": MediaType.imageManifest, "digest": first, "size": size, "annotations": [AnnotationKey.refName: "x"]]],
        ])
        return root
    },
    HostileCase(name: "a missing blob", expected: "does not contain") { editor, root in
        let manifest = try editor.manifest()
        let layer = (manifest["layers"] as? [[String: Any]] ?? []).first { $0["mediaType"] as? String == MediaType.deviceState }
        try FileManager.default.removeItem(at: editor.blob(layer?["digest"] as? String ?? ""))
        return root
    },
    HostileCase(name: "a blob that is a symlink", expected: "symlink") { editor, root in
        let manifest = try editor.manifest()
        let layer = (manifest["layers"] as? [[String: Any]] ?? []).first { $0["mediaType"] as? String == MediaType.deviceState }
        let url = editor.blob(layer?["digest"] as? String ?? "")
        try FileManager.default.removeItem(at: url)
        try FileManager.default.createSymbolicLink(atPath: url.path, withDestinationPath: "/etc/passwd")
        return root
    },
    HostileCase(name: "a qcow2 overlay backed by a host file", expected: "a path") { editor, root in
        let scratch = root.deletingLastPathComponent().appendingPathComponent("\(root.lastPathComponent)-evil.qcow2")
        try ExternalCommand("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/passwd", "-u", scratch.path, "4M"]).check()
        let bytes = try Data(contentsOf: scratch)
        try editor.editLayer(MediaType.diskLayer) { layer in
            let stored = try editor.put(try zstdCompress(bytes))
            layer["digest"] = stored.digest
            layer["size"] = stored.size
            var annotations = layer["annotations"] as? [String: String] ?? [:]
            annotations[AnnotationKey.contentDigest] = Digest.of(bytes).description
            annotations[AnnotationKey.contentSize] = "\(bytes.count)"
            layer["annotations"] = annotations
        }
        return root
    },
    HostileCase(name: "a memory chunk off a chunk boundary", expected: "chunk boundary") { editor, root in
        try editor.editLayer(MediaType.memoryChunk) { $0["annotations"] = ($0["annotations"] as? [String: String] ?? [:]).merging([AnnotationKey.memoryOffset: "4097"]) { $1 } }
        return root
    },
    HostileCase(name: "a snapshot without device state", expected: "no device state layer") { editor, root in
        try editor.editManifest { manifest in
            manifest["layers"] = (manifest["layers"] as? [[String: Any]] ?? []).filter { $0["mediaType"] as? String != MediaType.deviceState }
        }
        return root
    },
    HostileCase(name: "tar entry with ..", expected: "climbs out") { _, root in try tarWithEntry(root, kind: "file", name: "blobs/../../escape") },
    HostileCase(name: "tar entry with an absolute path", expected: "absolute path") { _, root in try tarWithEntry(root, kind: "file", name: "/tmp/clade-escape") },
    HostileCase(name: "tar symlink", expected: "symbolic link") { _, root in try tarWithEntry(root, kind: "symlink", name: "blobs/sha256/link") },
    HostileCase(name: "tar hard link", expected: "hard link") { _, root in try tarWithEntry(root, kind: "hardlink", name: "blobs/sha256/hard") },
    HostileCase(name: "tar device", expected: "device") { _, root in try tarWithEntry(root, kind: "device", name: "blobs/sha256/null") },
    HostileCase(name: "tar with an unexpected file", expected: "holds only") { _, root in try tarWithEntry(root, kind: "file", name: "blobs/sha256/notadigest") },
]

@Suite struct HostilePackTests {
    @Test(arguments: hostileCases)
    func refusedWithASpecificMessageAndNothingLeftBehind(_ hostile: HostileCase) throws {
        let fixture = try PackFixture()
        let layout = PackFixture.temporaryDirectory("hostile")
        let target = CladeHome(root: PackFixture.temporaryDirectory("target"))
        defer {
            for url in [fixture.home.root, layout, target.root] { try? FileSystem.remove(url) }
            for suffix in ["-evil.qcow2", "-file.tar", "-symlink.tar", "-hardlink.tar", "-device.tar"] {
                try? FileSystem.remove(URL(fileURLWithPath: layout.path + suffix))
            }
        }
        _ = try Packer(home: fixture.home).pack(tag: fixture.tag, into: layout)
        try target.prepare()
        let before = PackFixture.listing(target)
        let path = try hostile.spoil(LayoutEditor(root: layout), layout)
        do {
            let report = try Unpacker(home: target, disks: QEMUImage()).unpack(from: path)
            Issue.record("\(hostile.name) was accepted as \(report.tag)")
        } catch let error as PackError {
            #expect(error.description.contains(hostile.expected), "\(hostile.name): \(error.description)")
        }
        #expect(PackFixture.listing(target) == before, "\(hostile.name) left something in the store")
        #expect(!FileManager.default.fileExists(atPath: "/tmp/clade-escape"))
    }

    @Test func takenTagIsRefusedUnlessForced() throws {
        let fixture = try PackFixture()
        let layout = PackFixture.temporaryDirectory("taken")
        defer {
            try? FileSystem.remove(fixture.home.root)
            try? FileSystem.remove(layout)
        }
        _ = try Packer(home: fixture.home).pack(tag: fixture.tag, into: layout)
        let before = PackFixture.listing(fixture.home)
        #expect { try Unpacker(home: fixture.home, disks: QEMUImage()).unpack(from: layout) } throws: { error in
            (error as? PackError)?.description.contains("already exists") == true
        }
        #expect(PackFixture.listing(fixture.home) == before)
        let forced = try Unpacker(home: fixture.home, disks: QEMUImage()).unpack(from: layout, options: UnpackOptions(force: true))
        #expect(forced.tag == fixture.tag)
    }

    @Test func optionalUnknownLayersAreIgnored() throws {
        let fixture = try PackFixture()
        let layout = PackFixture.temporaryDirectory("optional")
        let target = CladeHome(root: PackFixture.temporaryDirectory("target"))
        defer {
            for url in [fixture.home.root, layout, target.root] { try? FileSystem.remove(url) }
        }
        _ = try Packer(home: fixture.home).pack(tag: fixture.tag, into: layout)
        let editor = LayoutEditor(root: layout)
        let extra = try editor.put(Data("future".utf8))
        try editor.editManifest { manifest in
            var layers = manifest["layers"] as? [[String: Any]] ?? []
            layers.append(["mediaType": "application/vnd.clade.future.v9", "digest": extra.digest, "size": extra.size, "annotations": [AnnotationKey.optional: "true"]])
            manifest["layers"] = layers
        }
        #expect(try Unpacker(home: target, disks: QEMUImage()).unpack(from: layout).tag == fixture.tag)
    }
}
