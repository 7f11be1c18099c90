#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation

/// Splits a guest memory file into fixed-size chunks and stores each non-zero chunk as its own
/// zstd blob. Holes and all-zero chunks are left out (a reader fills them with zeros), so an idle
/// guest's mostly-empty memory costs little, and a branch shares every unchanged chunk's blob
/// with its parent.
struct MemoryChunker {
    let level: Int32
    let workers: Int

    struct Result {
        var layers: [Descriptor]
        var packedBytes: Int64
        var newBytes: Int64
    }

    func pack(_ file: URL, into layout: LayoutWriter, counter: ProgressCounter) throws -> Result {
        let fd = try FileSystem.open(file, flags: O_RDONLY | O_CLOEXEC)
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw StoreError.systemCall("fstat", path: file.path, errno: errno) }
        let size = Int64(status.st_size)
        let chunkSize = Int64(PackFormat.memoryChunkSize)
        let count = Int((size + chunkSize - 1) / chunkSize)
        let results = ChunkResults(count: count)
        let nextChunk = ChunkCursor()
        let level = level
        // Memory chunks are compressed in parallel with each other, each single-threaded, so
        // every host produces the same bytes for the same chunk.
        DispatchQueue.concurrentPerform(iterations: max(1, workers)) { _ in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(chunkSize), alignment: 4096)
            defer { buffer.deallocate() }
            guard let compressor = try? ZstdCompressor(level: level, workers: 0) else {
                results.fail(PackError.compression("cannot allocate a compression context"))
                return
            }
            while let index = nextChunk.next(below: count), !results.failed {
                do {
                    let offset = Int64(index) * chunkSize
                    let length = Int(min(chunkSize, size - offset))
                    defer { counter.add(Int64(length)) }
                    guard try Self.mayHoldData(fd: fd, offset: offset, length: length, path: file.path) else { continue }
                    let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length])
                    try Self.readFully(fd: fd, into: chunk, offset: offset, path: file.path)
                    if Self.isZero(UnsafeRawBufferPointer(chunk)) { continue }
                    let compressed = try compressor.compress(UnsafeRawBufferPointer(chunk))
                    let stored = try layout.put(compressed)
                    let descriptor = Descriptor(
                        mediaType: MediaType.memoryChunk, digest: stored.digest, size: stored.size,
                        annotations: [AnnotationKey.memoryOffset: "\(offset)", AnnotationKey.contentSize: "\(length)"])
                    results.set(index, descriptor, new: stored.new)
                } catch {
                    results.fail(error)
                }
            }
        }
        if let error = results.error { throw error }
        return results.collect()
    }

    /// False when the file has no data (only a hole) in the range, so it need not be read.
    static func mayHoldData(fd: Int32, offset: Int64, length: Int, path: String) throws -> Bool {
        let data = lseek(fd, off_t(offset), FileSystem.seekData)
        if data < 0 {
            if errno == ENXIO { return false }
            if errno == EINVAL { return true }  // no SEEK_DATA on this filesystem: read it
            throw StoreError.systemCall("lseek", path: path, errno: errno)
        }
        return Int64(data) < offset + Int64(length)
    }

    static func readFully(fd: Int32, into buffer: UnsafeMutableRawBufferPointer, offset: Int64, path: String) throws {
        var done = 0
        while done < buffer.count {
            let count = pread(fd, buffer.baseAddress.map { $0 + done }, buffer.count - done, off_t(offset) + off_t(done))
            if count < 0 {
                if errno == EINTR { continue }
                throw StoreError.systemCall("pread", path: path, errno: errno)
            }
            if count == 0 { throw StoreError.sizeMismatch(path: path, expected: offset + Int64(buffer.count), actual: offset + Int64(done)) }
            done += count
        }
    }

    static func isZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
        let words = buffer.count / 8
        let wordBuffer = buffer.bindMemory(to: UInt64.self)
        var accumulated: UInt64 = 0
        var index = 0
        while index < words {
            accumulated |= wordBuffer[index]
            // Checking every 512 words keeps the loop vectorisable yet stops early on data.
            if index & 511 == 511, accumulated != 0 { return false }
            index += 1
        }
        if accumulated != 0 { return false }
        for byte in buffer[(words * 8)...] where byte != 0 { return false }
        return true
    }
}

/// Hands out chunk indices to worker threads.
struct ChunkCursor: Sendable {
    private let nextIndex = Locked(0)

    func next(below count: Int) -> Int? {
        nextIndex.withLock { next in
            guard next < count else { return nil }
            defer { next += 1 }
            return next
        }
    }
}

/// Chunk descriptors gathered from worker threads, in offset order.
private struct ChunkResults: Sendable {
    private struct Slots {
        var descriptors: [Descriptor?]
        var newFlags: [Bool]
        var error: Error?
    }
    private let slots: Locked<Slots>

    init(count: Int) {
        slots = Locked(Slots(descriptors: Array(repeating: nil, count: count), newFlags: Array(repeating: false, count: count)))
    }

    var failed: Bool { slots.withLock { $0.error != nil } }
    var error: Error? { slots.withLock { $0.error } }

    func set(_ index: Int, _ descriptor: Descriptor, new: Bool) {
        slots.withLock {
            $0.descriptors[index] = descriptor
            $0.newFlags[index] = new
        }
    }

    func fail(_ failure: Error) {
        slots.withLock { if $0.error == nil { $0.error = failure } }
    }

    func collect() -> MemoryChunker.Result {
        slots.withLock { slots in
            var result = MemoryChunker.Result(layers: [], packedBytes: 0, newBytes: 0)
            var seen = Set<Digest>()
            for (index, descriptor) in slots.descriptors.enumerated() {
                guard let descriptor else { continue }
                result.layers.append(descriptor)
                result.packedBytes += descriptor.size
                // A chunk repeated within one pack is stored once.
                if slots.newFlags[index], seen.insert(descriptor.digest).inserted { result.newBytes += descriptor.size }
            }
            return result
        }
    }
}
