#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation

/// A root filesystem served lazily: its chunks are frames of one blob, fetched by range and
/// checked against the digests of the pack's ``RootfsIndex``; once whole, the file must match the
/// rootfs digest itself before it replaces the link in the blob store.
extension LazyFileServer {
    /// Downloads frame `index` by range, decompresses it, checks the chunk's digest, and only then
    /// writes its non-zero pages into the assembled file.
    func fetchFrame(_ index: Int) throws -> Int64 {
        let chunk = plan.chunks[index]
        let what = "root filesystem chunk at \(chunk.offset) of \(subject)"
        guard let blobText = plan.blob, let blob = try? Digest(parsing: blobText), let blobOffset = chunk.blobOffset else {
            throw PackError.malformed(what: what, reason: "the plan names no blob range for it")
        }
        let expected = try plan.digest(of: chunk, what: what)
        let client = client
        let size = chunk.size
        let frame = try Self.waitFor { try await client.downloadRange(blob, offset: blobOffset, length: size) }
        let decoder = try ZstdDecompressor(limit: chunk.contentSize, what: what)
        var content = [UInt8]()
        content.reserveCapacity(Int(chunk.contentSize))
        try frame.withUnsafeBytes { bytes in try decoder.feed(bytes) { content.append(contentsOf: $0) } }
        try decoder.finish()
        guard content.count == Int(chunk.contentSize) else { throw PackError.sizeMismatch(what: what, declared: chunk.contentSize, actual: Int64(content.count)) }
        let actual = Digest.of(content)
        guard actual == expected else { throw PackError.digestMismatch(what: what, expected: expected, actual: actual) }
        try content.withUnsafeBytes { bytes in
            try MemoryAssembler.writeNonZeroPages(fd: dataDescriptor, bytes, at: chunk.offset, path: paths.assembling.path)
        }
        return size
    }

    /// Replaces the blob store's link to the served file with the assembled file, once the whole
    /// of it matches the rootfs digest: later forks and boots read the local file directly. A
    /// blob already whole (another server finished first) is left alone.
    func finalizeRootfs() throws {
        guard let text = plan.contentDigest, let rootfs = try? Digest(parsing: text) else {
            throw PackError.malformed(what: subject, reason: "its plan names no content digest")
        }
        guard fsync(dataDescriptor) == 0, fchmod(dataDescriptor, 0o444) == 0 else {
            throw StoreError.systemCall("fsync", path: paths.assembling.path, errno: errno)
        }
        let actual = try Self.digest(ofDescriptor: dataDescriptor, path: paths.assembling.path)
        guard actual == rootfs else {
            throw PackError.digestMismatch(what: "the assembled \(subject)", expected: rootfs, actual: actual)
        }
        let blobs = BlobStore(home: home)
        let target = blobs.url(for: rootfs)
        if let existing = try? FileManager.default.destinationOfSymbolicLink(atPath: target.path), existing == paths.servedFile.path {
            let staged = target.deletingLastPathComponent().appendingPathComponent(".\(rootfs.hex).lazy-\(getpid())", isDirectory: false)
            unlink(staged.path)
            guard link(paths.assembling.path, staged.path) == 0 else { throw StoreError.systemCall("link", path: staged.path, errno: errno) }
            guard rename(staged.path, target.path) == 0 else {
                unlink(staged.path)
                throw StoreError.systemCall("rename", path: target.path, errno: errno)
            }
            try? FileSystem.sync(target.deletingLastPathComponent())
        } else {
            logger.info("the rootfs blob no longer links to this server; leaving it alone", metadata: ["serving": "\(subject)"])
        }
        unlink(paths.rootfsPlan.path)
        condition.withLock { finalized = true }
        writeStatistics()
        logger.info("root filesystem complete", metadata: ["serving": "\(subject)", "bytes_fetched": "\(currentStatistics.bytesFetched)"])
    }

    static func digest(ofDescriptor fd: Int32, path: String) throws -> Digest {
        var hasher = DigestHasher()
        let capacity = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buffer.deallocate() }
        var offset: off_t = 0
        while true {
            let count = pread(fd, buffer.baseAddress, capacity, offset)
            if count < 0 {
                if errno == EINTR { continue }
                throw StoreError.systemCall("pread", path: path, errno: errno)
            }
            if count == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            offset += off_t(count)
        }
        return hasher.finalize()
    }
}
