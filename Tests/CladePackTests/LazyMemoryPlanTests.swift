import Foundation
import Testing

@testable import CladePack

/// A lazy pull's chunk table is untrusted input (it comes from a registry's manifest): every
/// bound is checked before the FUSE server serves a byte by it.
struct LazyMemoryPlanTests {
    static let digest = "sha256:" + String(repeating: "ab", count: 32)
    static let chunk = Int64(512 << 10)

    func plan(_ chunks: [LazyMemoryPlan.Chunk], logical: Int64 = 4 * chunk) -> LazyMemoryPlan {
        LazyMemoryPlan(reference: "127.0.0.1:5000/r:t", insecure: true, snapshotID: "s", logicalSize: logical, chunkSize: Self.chunk, chunks: chunks)
    }

    func chunk(_ offset: Int64, size: Int64 = 1000, content: Int64 = chunk, digest: String = digest) -> LazyMemoryPlan.Chunk {
        LazyMemoryPlan.Chunk(offset: offset, digest: digest, size: size, contentSize: content)
    }

    @Test func aWellFormedTableWithHolesAndAShortLastChunkPasses() throws {
        try plan([chunk(0), chunk(2 * Self.chunk), chunk(3 * Self.chunk, content: 100)], logical: 3 * Self.chunk + 100).validate(what: "t")
    }

    @Test(arguments: [
        ("an offset off a chunk boundary", [LazyMemoryPlan.Chunk(offset: 4096, digest: digest, size: 10, contentSize: chunk)], "chunk boundary"),
        ("an offset past the file", [LazyMemoryPlan.Chunk(offset: 4 * chunk, digest: digest, size: 10, contentSize: chunk)], "chunk boundary"),
        ("a negative offset", [LazyMemoryPlan.Chunk(offset: -chunk, digest: digest, size: 10, contentSize: chunk)], "chunk boundary"),
        ("two chunks at one offset", [LazyMemoryPlan.Chunk(offset: 0, digest: digest, size: 10, contentSize: chunk), LazyMemoryPlan.Chunk(offset: 0, digest: digest, size: 10, contentSize: chunk)], "distinct"),
        ("a content size that is not the chunk's", [LazyMemoryPlan.Chunk(offset: 0, digest: digest, size: 10, contentSize: chunk + 1)], "claims"),
        ("a compressed size no chunk needs", [LazyMemoryPlan.Chunk(offset: 0, digest: digest, size: 64 << 20, contentSize: chunk)], "more than a chunk"),
        ("an empty blob", [LazyMemoryPlan.Chunk(offset: 0, digest: digest, size: 0, contentSize: chunk)], "more than a chunk"),
        ("a digest that is a path", [LazyMemoryPlan.Chunk(offset: 0, digest: "../../etc/passwd", size: 10, contentSize: chunk)], "not sha256"),
    ])
    func aHostileTableIsRefused(_ name: String, _ chunks: [LazyMemoryPlan.Chunk], _ words: String) {
        #expect {
            try plan(chunks).validate(what: "t")
        } throws: { error in
            "\(error)".contains(words)
        }
    }

    @Test func memoryBeyondTheChunkLimitIsRefused() {
        #expect(throws: PackError.self) {
            try plan([], logical: Int64(LazyMemoryPlan.maxChunks + 1) * Self.chunk).validate(what: "t")
        }
    }
}
