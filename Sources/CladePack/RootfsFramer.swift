#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation

/// Packs a root filesystem as one blob of independent zstd frames, one per chunk, and writes the
/// ``RootfsIndex`` that finds each frame. Chunks are compressed in parallel, a batch at a time,
/// each single-threaded, so every host writes the same bytes for the same rootfs.
struct RootfsFramer {
    let level: Int32
    let workers: Int
    /// Content bytes compressed per batch: bounds the memory held while frames wait their turn.
    static let batchChunks = 64

    struct Result {
        var rootfs: Descriptor
        var index: Descriptor
        var new: Bool
    }

    func pack(_ file: URL, expected: Digest, tag: String, into layout: LayoutWriter, counter: ProgressCounter) throws -> Result {
        let input = try FileSystem.open(file, flags: O_RDONLY | O_CLOEXEC)
        defer { close(input) }
        var status = stat()
        guard fstat(input, &status) == 0 else { throw StoreError.systemCall("fstat", path: file.path, errno: errno) }
        let size = Int64(status.st_size)
        let chunkSize = Int64(PackFormat.rootfsChunkSize)
        let count = Int((size + chunkSize - 1) / chunkSize)
        var contentHasher = DigestHasher()
        var frames: [RootfsIndex.Frame] = []
        frames.reserveCapacity(count)
        let blob = try layout.putStreamed { append in
            var blobSize: Int64 = 0
            var first = 0
            while first < count {
                let batch = try compressBatch(input, path: file.path, first: first, count: min(Self.batchChunks, count - first), size: size)
                for piece in batch {
                    piece.content.withUnsafeBytes { contentHasher.update($0) }
                    try piece.frame.withUnsafeBytes { try append($0) }
                    frames.append(RootfsIndex.Frame(offset: blobSize, size: Int64(piece.frame.count), digest: piece.zero ? nil : Digest.of(piece.content).description))
                    blobSize += Int64(piece.frame.count)
                    counter.add(Int64(piece.content.count))
                }
                first += batch.count
            }
            // Checked before the blob is published: a file that changed under the pack is refused.
            guard contentHasher.finalize() == expected else {
                throw PackError.snapshotIncomplete(tag: tag, reason: "\(file.path) no longer matches its digest \(expected); the store is corrupt")
            }
        }
        let (digest, blobSize, new) = (blob.digest, blob.size, blob.new)
        let rootfs = Descriptor(
            mediaType: MediaType.rootfs, digest: digest, size: blobSize,
            annotations: [AnnotationKey.contentDigest: expected.description, AnnotationKey.contentSize: "\(size)"])
        let index = RootfsIndex(
            blob: digest.description, blobSize: blobSize, contentDigest: expected.description, contentSize: size, chunkSize: chunkSize, frames: frames)
        let stored = try layout.put(try CanonicalJSON.encode(index))
        // Optional: a reader that does not know it still unpacks the rootfs layer whole.
        let indexDescriptor = Descriptor(
            mediaType: MediaType.rootfsIndex, digest: stored.digest, size: stored.size,
            annotations: [AnnotationKey.optional: "true", AnnotationKey.contentDigest: expected.description])
        return Result(rootfs: rootfs, index: indexDescriptor, new: new)
    }

    private struct Piece {
        var content: [UInt8]
        var frame: [UInt8]
        var zero: Bool
    }

    private func compressBatch(_ fd: Int32, path: String, first: Int, count: Int, size: Int64) throws -> [Piece] {
        let chunkSize = Int64(PackFormat.rootfsChunkSize)
        let results = Locked([Piece?](repeating: nil, count: count))
        let failure = Locked<Error?>(nil)
        let cursor = ChunkCursor()
        let level = level
        DispatchQueue.concurrentPerform(iterations: max(1, min(workers, count))) { _ in
            guard let compressor = try? ZstdCompressor(level: level, workers: 0) else {
                failure.withLock { $0 = $0 ?? PackError.compression("cannot allocate a compression context") }
                return
            }
            while let position = cursor.next(below: count), failure.withLock({ $0 == nil }) {
                do {
                    let offset = Int64(first + position) * chunkSize
                    var content = [UInt8](repeating: 0, count: Int(min(chunkSize, size - offset)))
                    if try MemoryChunker.mayHoldData(fd: fd, offset: offset, length: content.count, path: path) {
                        try content.withUnsafeMutableBytes { try MemoryChunker.readFully(fd: fd, into: $0, offset: offset, path: path) }
                    }
                    let zero = content.withUnsafeBytes { MemoryChunker.isZero($0) }
                    let frame = try content.withUnsafeBytes { try compressor.compress($0) }
                    results.withLock { $0[position] = Piece(content: content, frame: frame, zero: zero) }
                } catch {
                    failure.withLock { $0 = $0 ?? error }
                }
            }
        }
        if let error = failure.withLock({ $0 }) { throw error }
        return try results.withLock { pieces in
            try pieces.map { piece in
                guard let piece else { throw PackError.compression("a rootfs chunk was not compressed") }
                return piece
            }
        }
    }
}
