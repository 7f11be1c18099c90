import CladeStore
import Foundation
import Testing

@testable import CladePack

/// The framed rootfs (pack format 1.1): one zstd stream to a reader that takes it whole, and an
/// index whose frames each decompress to the chunk its digest names; a hostile index is refused.
struct RootfsFramingTests {
    /// A sparse "disk": 3.5 chunks, with data in the first and third chunk only.
    func makeDisk(in directory: URL) throws -> (URL, Digest, Int64) {
        let chunk = PackFormat.rootfsChunkSize
        var bytes = [UInt8](repeating: 0, count: chunk * 3 + chunk / 2)
        for index in 0..<4096 { bytes[index * 7 % chunk] = UInt8(truncatingIfNeeded: index | 1) }
        for index in 0..<100 { bytes[2 * chunk + index * 13] = 0xA5 }
        let file = directory.appendingPathComponent("disk.raw")
        try Data(bytes).write(to: file)
        return (file, Digest.of(bytes), Int64(bytes.count))
    }

    func frame(_ directory: URL) throws -> (layout: LayoutWriter, result: RootfsFramer.Result, content: Digest, size: Int64, disk: Data) {
        let (file, content, size) = try makeDisk(in: directory)
        let layout = try LayoutWriter(root: directory.appendingPathComponent("layout"))
        let result = try RootfsFramer(level: 3, workers: 2).pack(
            file, expected: content, tag: "t", into: layout, counter: ProgressCounter(total: size, progress: nil))
        return (layout, result, content, size, try Data(contentsOf: file))
    }

    func index(_ layout: LayoutWriter, _ result: RootfsFramer.Result) throws -> RootfsIndex {
        try CanonicalJSON.decode(RootfsIndex.self, from: try Data(contentsOf: layout.blobs.appendingPathComponent(result.index.digest.hex)), what: "index")
    }

    @Test func theWholeBlobDecompressesAsOneStreamAndEachFrameToItsChunk() throws {
        let directory = try makeScratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (layout, result, content, size, disk) = try frame(directory)
        let blob = try Data(contentsOf: layout.blobs.appendingPathComponent(result.rootfs.digest.hex))
        // Whole, as a reader of format 1.0 takes it.
        let whole = try ZstdDecompressor(limit: size, what: "blob")
        var decoded = Data()
        try blob.withUnsafeBytes { try whole.feed($0) { decoded.append(contentsOf: $0) } }
        try whole.finish()
        #expect(Digest.of(decoded) == content)
        // Frame by frame, as a lazy fork fetches it by range.
        let index = try index(layout, result)
        try index.validate(rootfs: result.rootfs, contentDigest: content, contentSize: size, what: "index")
        #expect(index.frames.count == 4)
        #expect(index.frames[1].digest == nil && index.frames[3].digest == nil)  // zeros, never fetched
        for (number, frame) in index.frames.enumerated() {
            let decoder = try ZstdDecompressor(limit: index.chunkSize, what: "frame")
            var chunk = Data()
            try blob[Int(frame.offset)..<Int(frame.offset + frame.size)].withUnsafeBytes { try decoder.feed($0) { chunk.append(contentsOf: $0) } }
            try decoder.finish()
            let start = number * PackFormat.rootfsChunkSize
            #expect(chunk == disk[start..<min(disk.count, start + PackFormat.rootfsChunkSize)])
            if let digest = frame.digest { #expect(digest == Digest.of(chunk).description) }
        }
        // The same disk packs to the same bytes (deterministic, whatever the worker count).
        let again = try RootfsFramer(level: 3, workers: 1).pack(
            directory.appendingPathComponent("disk.raw"), expected: content, tag: "t", into: layout, counter: ProgressCounter(total: size, progress: nil))
        #expect(again.rootfs.digest == result.rootfs.digest && again.index.digest == result.index.digest)
    }

    @Test func aDiskThatNoLongerMatchesItsDigestIsNotPacked() throws {
        let directory = try makeScratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (file, _, size) = try makeDisk(in: directory)
        let layout = try LayoutWriter(root: directory.appendingPathComponent("layout"))
        #expect(throws: PackError.self) {
            try RootfsFramer(level: 3, workers: 2).pack(
                file, expected: Digest.of(Data("other".utf8)), tag: "t", into: layout, counter: ProgressCounter(total: size, progress: nil))
        }
    }

    @Test func aHostileIndexIsRefused() throws {
        let directory = try makeScratch()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (layout, result, content, size, _) = try frame(directory)
        let good = try index(layout, result)
        var cases: [(String, RootfsIndex)] = []
        var gap = good
        gap.frames[1].offset += 1
        cases.append(("a gap between frames", gap))
        var short = good
        short.frames.removeLast()
        cases.append(("a missing frame", short))
        var huge = good
        huge.frames[0].size = 64 << 20
        cases.append(("an oversized frame", huge))
        var otherBlob = good
        otherBlob.blob = Digest.of(Data("x".utf8)).description
        cases.append(("another blob", otherBlob))
        var badDigest = good
        badDigest.frames[0].digest = "../../etc/passwd"
        cases.append(("a digest that is a path", badDigest))
        var chunkSize = good
        chunkSize.chunkSize = 3000
        cases.append(("a chunk size that is not a power of two", chunkSize))
        for (name, index) in cases {
            #expect(throws: PackError.self, "\(name)") { try index.validate(rootfs: result.rootfs, contentDigest: content, contentSize: size, what: "index") }
        }
    }

    @Test func aRootfsPlanNeedsItsBlobAndFramesInsideIt() throws {
        let digest = Digest.of(Data("c".utf8)).description
        let chunk = LazyFilePlan.Chunk(offset: 0, digest: digest, size: 100, contentSize: 1 << 20, blobOffset: 0)
        var plan = LazyFilePlan(
            reference: "r/x:y", insecure: true, snapshotID: "rootfs-x", logicalSize: 1 << 20, chunkSize: 1 << 20, chunks: [chunk], kind: .rootfs,
            blob: digest, blobSize: 100, contentDigest: digest)
        try plan.validate(what: "plan")
        plan.chunks[0].blobOffset = 1
        #expect(throws: PackError.self) { try plan.validate(what: "plan") }
        plan.chunks[0].blobOffset = nil
        #expect(throws: PackError.self) { try plan.validate(what: "plan") }
        plan.chunks[0].blobOffset = 0
        plan.blob = nil
        #expect(throws: PackError.self) { try plan.validate(what: "plan") }
    }

    func makeScratch() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rootfs-framing-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }
}
