import CladeModel
import CladeQEMU
import CladeStore
import Foundation
import Testing

@testable import CladePack

@Suite struct PackRoundTripTests {
    @Test func zstdRoundTripsAndRefusesTruncation() throws {
        let input = PackFixture.randomData(300_000) + Data(count: 700_000)
        let compressed = try zstdCompress(input)
        #expect(compressed.count < input.count / 2)
        var output = Data()
        let decoder = try ZstdDecompressor(limit: Int64(input.count), what: "test")
        try compressed.withUnsafeBytes { bytes in try decoder.feed(bytes) { output.append(contentsOf: $0) } }
        try decoder.finish()
        #expect(output == input)

        let truncated = try ZstdDecompressor(limit: Int64(input.count), what: "test")
        try compressed.prefix(compressed.count / 2).withUnsafeBytes { bytes in try truncated.feed(bytes) { _ in } }
        #expect(throws: PackError.self) { try truncated.finish() }

        let bounded = try ZstdDecompressor(limit: 1000, what: "bomb")
        #expect(throws: PackError.self) {
            try compressed.withUnsafeBytes { bytes in try bounded.feed(bytes) { _ in } }
        }
    }

    @Test func compressionIsDeterministicAcrossWorkerCounts() throws {
        let fixture = try PackFixture()
        defer { try? FileSystem.remove(fixture.home.root) }
        let one = PackFixture.temporaryDirectory("w1")
        let two = PackFixture.temporaryDirectory("w2")
        defer {
            try? FileSystem.remove(one)
            try? FileSystem.remove(two)
        }
        let first = try Packer(home: fixture.home, workers: 1).pack(tag: fixture.tag, into: one)
        let second = try Packer(home: fixture.home, workers: 2).pack(tag: fixture.tag, into: two)
        #expect(first.manifest == second.manifest)
    }

    @Test func unpackRestoresEveryByteIntoAnotherStore() throws {
        let fixture = try PackFixture()
        let layout = PackFixture.temporaryDirectory("layout")
        let target = CladeHome(root: PackFixture.temporaryDirectory("target"))
        defer {
            for url in [fixture.home.root, layout, target.root] { try? FileSystem.remove(url) }
        }
        let report = try Packer(home: fixture.home).pack(tag: fixture.tag, into: layout)
        #expect(report.snapshots == [fixture.tag])
        let memory = try #require(report.pieces.first { $0.kind == "memory" })
        #expect(memory.blobs == 2, "only the two chunks holding data are stored")

        let unpacked = try Unpacker(home: target, disks: QEMUImage()).unpack(from: layout)
        #expect(unpacked.tag == fixture.tag)
        let source = SnapshotCatalog(home: fixture.home).directory(fixture.tag)
        let restored = SnapshotCatalog(home: target).directory(fixture.tag)
        for file in ["memory", "devices.state", "layer-0.qcow2"] {
            #expect(try Data(contentsOf: source.appendingPathComponent(file)) == Data(contentsOf: restored.appendingPathComponent(file)), "\(file) differs")
        }
        for digest in [fixture.metadata.kernel, fixture.metadata.initrd, fixture.metadata.rootfs] {
            try BlobStore(home: target).verify(digest)
        }
        let metadata = try SnapshotCatalog(home: target).require(fixture.tag)
        #expect(metadata.id == fixture.metadata.id)
        let physical = try #require(try FileSystem.status(of: restored.appendingPathComponent("memory"))).allocatedBytes
        #expect(physical < 1 << 20, "restored memory stays sparse, \(physical) bytes allocated")
        let text = try String(contentsOf: restored.appendingPathComponent("snapshot.json"), encoding: .utf8)
        #expect(!text.contains(fixture.home.root.path), "no path of the source store in the restored metadata")

        // A second unpack into the same store under a new tag writes no boot blobs again.
        let again = try Unpacker(home: target, disks: QEMUImage()).unpack(from: layout, options: UnpackOptions(tag: "copy"))
        #expect(again.blobsWritten == 0)
        #expect(again.blobsSkipped == 3)
    }

    @Test func tarPacksRoundTripAndAreReproducible() throws {
        let fixture = try PackFixture()
        let directory = PackFixture.temporaryDirectory("tar")
        let target = CladeHome(root: PackFixture.temporaryDirectory("target"))
        defer {
            for url in [fixture.home.root, directory, target.root] { try? FileSystem.remove(url) }
        }
        let first = directory.appendingPathComponent("a.tar")
        let second = directory.appendingPathComponent("b.tar")
        _ = try Packer(home: fixture.home).pack(tag: fixture.tag, to: first)
        _ = try Packer(home: fixture.home).pack(tag: fixture.tag, to: second)
        #expect(try Data(contentsOf: first) == Data(contentsOf: second), "the same snapshot packs to the same tar bytes")
        #expect(throws: PackError.self) { try Packer(home: fixture.home).pack(tag: fixture.tag, to: first) }
        let report = try Unpacker(home: target, disks: QEMUImage()).unpack(from: first)
        #expect(report.tag == fixture.tag)
        #expect(try FileManager.default.contentsOfDirectory(atPath: target.temporary.path).isEmpty, "no staging left in tmp/")
    }

    @Test func twoSnapshotsOnOneBaseShareTheirBaseBlobs() throws {
        let fixture = try PackFixture(tag: "one")
        let second = try PackFixture(tag: "two", home: fixture.home)
        let layout = PackFixture.temporaryDirectory("shared")
        defer {
            try? FileSystem.remove(fixture.home.root)
            try? FileSystem.remove(layout)
        }
        _ = try Packer(home: fixture.home).pack(tag: "one", into: layout)
        let report = try Packer(home: fixture.home).pack(tag: "two", into: layout)
        // Same rootfs bytes (same seed) means the same blob; kernel and initrd differ in this fixture.
        let rootfs = try #require(report.pieces.first { $0.kind == "rootfs" })
        #expect(second.metadata.rootfs == fixture.metadata.rootfs)
        #expect(rootfs.newBytes == 0, "the second pack adds no rootfs bytes")
        let index = try LayoutWriter(root: layout).readIndex()
        #expect(index.manifests.count == 2)
    }
}
