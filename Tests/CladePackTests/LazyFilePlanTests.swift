import Foundation
import Testing

@testable import CladePack

/// A lazy pull's chunk table is untrusted input (it comes from a registry's manifest): every
/// bound is checked before the FUSE server serves a byte by it.
private let goodDigest = "sha256:" + String(repeating: "ab", count: 32)
private let chunkBytes = Int64(512 << 10)

struct LazyFilePlanTests {

    func plan(_ chunks: [LazyFilePlan.Chunk], logical: Int64 = 4 * chunkBytes) -> LazyFilePlan {
        LazyFilePlan(reference: "127.0.0.1:5000/r:t", insecure: true, snapshotID: "s", logicalSize: logical, chunkSize: chunkBytes, chunks: chunks)
    }

    func chunk(_ offset: Int64, size: Int64 = 1000, content: Int64 = chunkBytes, digest: String = goodDigest) -> LazyFilePlan.Chunk {
        LazyFilePlan.Chunk(offset: offset, digest: digest, size: size, contentSize: content)
    }

    @Test func aWellFormedTableWithHolesAndAShortLastChunkPasses() throws {
        try plan([chunk(0), chunk(2 * chunkBytes), chunk(3 * chunkBytes, content: 100)], logical: 3 * chunkBytes + 100).validate(what: "t")
    }

    @Test(arguments: [
        ("an offset off a chunk boundary", [LazyFilePlan.Chunk(offset: 4096, digest: goodDigest, size: 10, contentSize: chunkBytes)], "chunk boundary"),
        ("an offset past the file", [LazyFilePlan.Chunk(offset: 4 * chunkBytes, digest: goodDigest, size: 10, contentSize: chunkBytes)], "chunk boundary"),
        ("a negative offset", [LazyFilePlan.Chunk(offset: -chunkBytes, digest: goodDigest, size: 10, contentSize: chunkBytes)], "chunk boundary"),
        ("two chunks at one offset", [LazyFilePlan.Chunk(offset: 0, digest: goodDigest, size: 10, contentSize: chunkBytes), LazyFilePlan.Chunk(offset: 0, digest: goodDigest, size: 10, contentSize: chunkBytes)], "distinct"),
        ("a content size that is not the chunk's", [LazyFilePlan.Chunk(offset: 0, digest: goodDigest, size: 10, contentSize: chunkBytes + 1)], "claims"),
        ("a compressed size no chunk needs", [LazyFilePlan.Chunk(offset: 0, digest: goodDigest, size: 64 << 20, contentSize: chunkBytes)], "more than a chunk"),
        ("an empty blob", [LazyFilePlan.Chunk(offset: 0, digest: goodDigest, size: 0, contentSize: chunkBytes)], "more than a chunk"),
        ("a digest that is a path", [LazyFilePlan.Chunk(offset: 0, digest: "../../etc/passwd", size: 10, contentSize: chunkBytes)], "not sha256"),
    ])
    func aHostileTableIsRefused(_ name: String, _ chunks: [LazyFilePlan.Chunk], _ words: String) {
        #expect {
            try plan(chunks).validate(what: "t")
        } throws: { error in
            "\(error)".contains(words)
        }
    }

    @Test func memoryBeyondTheChunkLimitIsRefused() {
        #expect(throws: PackError.self) {
            try plan([], logical: Int64(LazyFilePlan.maxChunks + 1) * chunkBytes).validate(what: "t")
        }
    }
}
