#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation

/// Rebuilds a guest memory file from its chunks: a sparse file of the guest's size with each
/// chunk's non-zero pages written at their offsets, so zero memory stays a hole on disk.
enum MemoryAssembler {
    static let pageSize = 4096

    static func assemble(_ plan: SnapshotPlan, from reader: LayoutReader, into target: URL, counter: ProgressCounter) throws {
        let fd = try FileSystem.open(target, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode: 0o644)
        defer { close(fd) }
        guard ftruncate(fd, off_t(plan.metadata.memory.logicalSize)) == 0 else {
            throw StoreError.systemCall("ftruncate", path: target.path, errno: errno)
        }
        let largest = plan.memoryChunks.map(\.piece.contentSize).max() ?? 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Int(max(largest, 1)), alignment: pageSize)
        defer { buffer.deallocate() }
        for (offset, piece) in plan.memoryChunks {
            var filled = 0
            try reader.decompressBlob(piece.descriptor, what: piece.what, contentSize: piece.contentSize, onRead: { counter.add($0) }) { chunk in
                // The decompressor never produces more than contentSize bytes, the buffer's size or less.
                UnsafeMutableRawBufferPointer(rebasing: buffer[filled..<(filled + chunk.count)]).copyMemory(from: chunk)
                filled += chunk.count
            }
            try writeNonZeroPages(fd: fd, UnsafeRawBufferPointer(rebasing: buffer[0..<filled]), at: offset, path: target.path)
        }
        guard fsync(fd) == 0 else { throw StoreError.systemCall("fsync", path: target.path, errno: errno) }
        guard fchmod(fd, 0o444) == 0 else { throw StoreError.systemCall("fchmod", path: target.path, errno: errno) }
    }

    /// Writes runs of non-zero pages, leaving zero pages as holes.
    static func writeNonZeroPages(fd: Int32, _ data: UnsafeRawBufferPointer, at offset: Int64, path: String) throws {
        var page = 0
        while page < data.count {
            let end = min(page + pageSize, data.count)
            if MemoryChunker.isZero(UnsafeRawBufferPointer(rebasing: data[page..<end])) {
                page = end
                continue
            }
            var runEnd = end
            while runEnd < data.count {
                let next = min(runEnd + pageSize, data.count)
                if MemoryChunker.isZero(UnsafeRawBufferPointer(rebasing: data[runEnd..<next])) { break }
                runEnd = next
            }
            var written = page
            while written < runEnd {
                let count = pwrite(fd, data.baseAddress.map { $0 + written }, runEnd - written, off_t(offset) + off_t(written))
                if count < 0 {
                    if errno == EINTR { continue }
                    throw StoreError.systemCall("pwrite", path: path, errno: errno)
                }
                written += count
            }
            page = runEnd
        }
    }
}
