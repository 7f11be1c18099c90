import CladeStore
import Foundation
import Testing

@testable import CladeGuest

@Suite struct Ext4DeterminismTests {
    /// A small tree with the things that make ext4 builds differ: many entries per directory
    /// (readdir order), symlinks, a hard link, modes and recent timestamps.
    func makeTree() throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("clade-tree-\(UUID().uuidString)")
        let fileManager = FileManager.default
        try fileManager.createDirectory(at: root.appendingPathComponent("etc/deep/er"), withIntermediateDirectories: true)
        for index in 0..<200 {
            try Data("file \(index)\n".utf8).write(to: root.appendingPathComponent("etc/f\(index)"))
        }
        try Data(repeating: 0xAB, count: 300_000).write(to: root.appendingPathComponent("etc/deep/er/big"))
        try fileManager.createSymbolicLink(atPath: root.appendingPathComponent("link").path, withDestinationPath: "etc/f1")
        try fileManager.linkItem(at: root.appendingPathComponent("etc/f2"), to: root.appendingPathComponent("hard"))
        chmod(root.appendingPathComponent("etc/f3").path, 0o755)
        return root
    }

    func temporaryHome() -> CladeHome {
        CladeHome(root: FileManager.default.temporaryDirectory.appendingPathComponent("clade-home-\(UUID().uuidString)"))
    }

    @Test func sameDirectoryGivesSameDigestInDifferentStores() throws {
        let tree = try makeTree()
        defer { try? FileManager.default.removeItem(at: tree) }
        let homeA = temporaryHome(), homeB = temporaryHome()
        defer {
            try? FileSystem.remove(homeA.root)
            try? FileSystem.remove(homeB.root)
        }
        let first = try Ext4Builder(home: homeA).build(from: tree, freeMiB: 8)
        // Touch everything so source times differ between the builds; they must not leak into the image.
        _ = try ExternalCommand("touch", ["-d", "@1700000000", tree.appendingPathComponent("etc/f5").path]).check()
        Thread.sleep(forTimeInterval: 1.1)
        let second = try Ext4Builder(home: homeB).build(from: tree, freeMiB: 8)
        #expect(first.digest == second.digest)
        #expect(first.size == second.size)
        // The blob is sealed read-only in the store.
        let status = try FileSystem.status(of: BlobStore(home: homeA).url(for: first.digest))
        #expect(status.map { $0.mode & 0o777 } == 0o444)
    }

    @Test func differentContentGivesDifferentDigest() throws {
        let tree = try makeTree()
        defer { try? FileManager.default.removeItem(at: tree) }
        let home = temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        let first = try Ext4Builder(home: home).build(from: tree, freeMiB: 8)
        try Data("changed".utf8).write(to: tree.appendingPathComponent("etc/f7"))
        let second = try Ext4Builder(home: home).build(from: tree, freeMiB: 8)
        #expect(first.digest != second.digest)
    }

    @Test func missingSourceDirectoryIsAnActionableError() throws {
        let home = temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        #expect {
            try Ext4Builder(home: home).build(from: URL(fileURLWithPath: "/nonexistent/clade-src"))
        } throws: { error in
            "\(error)".contains("does not exist") && "\(error)".contains("--from-dir")
        }
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: home.temporary.path)) ?? []
        #expect(leftovers.isEmpty)
    }
}
