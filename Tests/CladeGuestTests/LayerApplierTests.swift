import CladeGuest
import CladeStore
import Foundation
import Testing

/// The layer applier on real tar streams, no VM: OCI whiteout semantics and the corpus of
/// hostile layers in Tests/Fixtures/hostile-layers.py.
@Suite struct LayerApplierTests {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")

    func scratch(_ name: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("clade-layers-\(name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A tar of the given files (`path` → content; a trailing `/` makes a directory), via tar(1).
    func makeLayer(_ files: [(String, String)], in directory: URL, name: String) throws -> URL {
        let source = directory.appendingPathComponent("src-\(name)")
        try FileManager.default.createDirectory(at: source, withIntermediateDirectories: true)
        for (path, content) in files {
            let url = source.appendingPathComponent(path)
            if path.hasSuffix("/") {
                try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
            } else {
                try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try Data(content.utf8).write(to: url)
            }
        }
        let tar = directory.appendingPathComponent("\(name).tar")
        try ExternalCommand("tar", ["-C", source.path, "-cf", tar.path, "--sort=name", "."]).check()
        return tar
    }

    @Test func whiteoutsAndOpaqueDirectoriesHideOnlyLowerLayers() throws {
        let work = try scratch("whiteouts")
        defer { try? FileManager.default.removeItem(at: work) }
        let lower = try makeLayer([("etc/gone", "x"), ("etc/kept", "k"), ("data/old", "o"), ("data/sub/deep", "d")], in: work, name: "lower")
        let upper = try makeLayer(
            [("etc/.wh.gone", ""), ("data/.wh..wh..opq", ""), ("data/new", "n"), ("data/sub/fresh", "f"), ("etc/.wh.never-existed", "")],
            in: work, name: "upper")
        let root = work.appendingPathComponent("root")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let applier = LayerApplier(root: root)
        try applier.apply(layer: lower, name: "lower")
        try applier.apply(layer: upper, name: "upper")
        let metadata = try applier.finish()
        func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: root.appendingPathComponent(path).path) }
        #expect(!exists("etc/gone"))
        #expect(exists("etc/kept"))
        #expect(!exists("data/old"))
        #expect(!exists("data/sub/deep"))
        #expect(exists("data/new"))
        #expect(exists("data/sub/fresh"))
        #expect(!exists("etc/.wh.gone"))
        #expect(!exists("data/.wh..wh..opq"))
        #expect(metadata.attributes["etc/gone"] == nil)
        #expect(metadata.attributes["data/new"] != nil)
    }

    @Test func everyHostileLayerIsRefusedAndNothingEscapes() throws {
        let work = try scratch("hostile")
        defer { try? FileManager.default.removeItem(at: work) }
        let corpus = work.appendingPathComponent("corpus")
        try ExternalCommand("python3", [Self.fixtures.appendingPathComponent("hostile-layers.py").path, corpus.path]).check()
        let cases = try String(contentsOf: corpus.appendingPathComponent("expected.tsv"), encoding: .utf8)
            .split(separator: "\n").map { $0.split(separator: "\t").map(String.init) }
        #expect(cases.count >= 12)
        let outside = work.appendingPathComponent("clade-pwned")
        for entry in cases {
            let (file, mustContain) = (entry[0], entry[1])
            // The root sits deep enough that a '..' escape would land in `work`, where we look.
            let root = work.appendingPathComponent("a/b/c/d/e/f/root-\(file)")
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
            let applier = LayerApplier(root: root, limits: .init(maxBytes: 16 << 20))
            do {
                try applier.apply(layer: corpus.appendingPathComponent(file), name: file)
                Issue.record("\(file) was applied, but it is hostile")
            } catch let error as LayerError {
                #expect("\(error)".contains(mustContain), "\(file): \(error)")
            }
            #expect(!FileManager.default.fileExists(atPath: outside.path), "\(file) wrote outside the root")
        }
    }

    @Test func namesAreCheckedBeforeAnythingIsWritten() throws {
        #expect(throws: LayerError.self) { try LayerApplier.components(of: "/abs", layer: "t") }
        #expect(throws: LayerError.self) { try LayerApplier.components(of: "a/../../b", layer: "t") }
        #expect(try LayerApplier.components(of: "./usr/bin/", layer: "t") == ["usr", "bin"])
        #expect(try LayerApplier.components(of: "./", layer: "t") == [])
    }

    @Test func userNamesResolveThroughTheImagesOwnFiles() throws {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/bash\n"
        let group = "root:x:0:\nuser:x:1000:\nstaff:x:50:user\n"
        #expect(try ImageUser.resolve("user", passwd: passwd, group: group) == .init(uid: 1000, gid: 1000))
        #expect(try ImageUser.resolve("user:staff", passwd: passwd, group: group) == .init(uid: 1000, gid: 50))
        #expect(try ImageUser.resolve("1000", passwd: passwd, group: group) == .init(uid: 1000, gid: 1000))
        #expect(try ImageUser.resolve("4242:7", passwd: passwd, group: group) == .init(uid: 4242, gid: 7))
        #expect(throws: GuestError.self) { try ImageUser.resolve("nobody-here", passwd: passwd, group: group) }
        #expect(throws: GuestError.self) { try ImageUser.resolve("user:nogroup", passwd: passwd, group: group) }
    }
}
