#if canImport(Glibc)
import Glibc
#endif
import CladeStore
import Foundation

/// Writes blobs into an OCI image layout directory: each through a temporary file that is
/// renamed to its digest only when complete, so an interrupted pack never leaves a blob whose
/// name does not match its bytes.
struct LayoutWriter {
    let root: URL
    var blobs: URL { root.appendingPathComponent("blobs/sha256") }

    /// Opens `root` for writing: creates it, or adds to it when it already is a layout.
    init(root: URL) throws {
        self.root = root
        if let status = try FileSystem.status(of: root) {
            guard status.isDirectory else { throw PackError.notALayout(path: root.path, reason: "it exists and is not a directory") }
            let entries = try FileManager.default.contentsOfDirectory(atPath: root.path)
            if !entries.isEmpty, !entries.contains("oci-layout") {
                throw PackError.notALayout(path: root.path, reason: "the directory is not empty and has no oci-layout file; choose an empty or new directory")
            }
        }
        try FileManager.default.createDirectory(at: blobs, withIntermediateDirectories: true)
        try FileSystem.writeAtomically(try CanonicalJSON.encode(LayoutMarker(imageLayoutVersion: "1.0.0")), to: root.appendingPathComponent("oci-layout"))
    }

    func contains(_ digest: Digest) throws -> Bool {
        try FileSystem.exists(blobs.appendingPathComponent(digest.hex))
    }

    /// Stores `bytes`; returns the digest and whether the blob was new to the layout.
    @discardableResult
    func put(_ bytes: some DataProtocol) throws -> (digest: Digest, size: Int64, new: Bool) {
        let digest = Digest.of(bytes)
        if try contains(digest) { return (digest, Int64(bytes.count), false) }
        try FileSystem.writeAtomically(Data(bytes), to: blobs.appendingPathComponent(digest.hex), mode: 0o444)
        return (digest, Int64(bytes.count), true)
    }

    /// Streams `file` through zstd into a new blob. Returns the compressed blob's digest and size,
    /// the content's digest and size, and whether the blob was new to the layout.
    func putCompressed(file: URL, compressor: ZstdCompressor, progress: (Int64) -> Void) throws
        -> (digest: Digest, size: Int64, contentDigest: Digest, contentSize: Int64, new: Bool)
    {
        let input = try FileSystem.open(file, flags: O_RDONLY | O_CLOEXEC)
        defer { close(input) }
        var status = stat()
        guard fstat(input, &status) == 0 else { throw StoreError.systemCall("fstat", path: file.path, errno: errno) }
        var contentHasher = DigestHasher()
        var contentSize: Int64 = 0
        let blob = try putStreamed { append in
            try compressor.compressStream(
                totalSize: Int64(status.st_size),
                read: { buffer in
                    let count = Glibc.read(input, buffer.baseAddress, buffer.count)
                    guard count >= 0 else { throw StoreError.systemCall("read", path: file.path, errno: errno) }
                    contentHasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                    contentSize += Int64(count)
                    progress(Int64(count))
                    return count
                },
                write: append)
        }
        return (blob.digest, blob.size, contentHasher.finalize(), contentSize, blob.new)
    }

    /// Writes a blob whose bytes `produce` hands to the closure it is given, in order: through a
    /// temporary file, hashed as it goes, synced, and renamed to its digest only when complete.
    /// Returns the digest, the size and whether the blob was new to the layout.
    func putStreamed(_ produce: (_ append: (UnsafeRawBufferPointer) throws -> Void) throws -> Void) throws -> (digest: Digest, size: Int64, new: Bool) {
        let temporary = blobs.appendingPathComponent(".partial-\(getpid())-\(UUID().uuidString.prefix(8))")
        let output = try FileSystem.open(temporary, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o444)
        var closed = false
        defer {
            if !closed { close(output) }
            try? FileSystem.remove(temporary)
        }
        var hasher = DigestHasher()
        var size: Int64 = 0
        try produce { bytes in
            try writeAll(output, bytes, path: temporary.path)
            hasher.update(bytes)
            size += Int64(bytes.count)
        }
        guard fsync(output) == 0 else { throw StoreError.systemCall("fsync", path: temporary.path, errno: errno) }
        close(output)
        closed = true
        let digest = hasher.finalize()
        let destination = blobs.appendingPathComponent(digest.hex)
        if try FileSystem.exists(destination) { return (digest, size, false) }
        guard rename(temporary.path, destination.path) == 0 else { throw StoreError.systemCall("rename", path: destination.path, errno: errno) }
        return (digest, size, true)
    }

    /// Replaces `index.json`.
    func writeIndex(_ index: ImageIndex) throws {
        try FileSystem.writeAtomically(try CanonicalJSON.encode(index), to: root.appendingPathComponent("index.json"))
    }

    /// The layout's current index, or an empty one.
    func readIndex() throws -> ImageIndex {
        let url = root.appendingPathComponent("index.json")
        guard try FileSystem.exists(url) else { return ImageIndex(manifests: []) }
        return try CanonicalJSON.decode(ImageIndex.self, from: try Data(contentsOf: url), what: "index.json of \(root.path)")
    }
}

/// Writes every byte of `buffer` to `fd`.
func writeAll(_ fd: Int32, _ buffer: UnsafeRawBufferPointer, path: String) throws {
    var offset = 0
    while offset < buffer.count {
        let written = write(fd, buffer.baseAddress.map { $0 + offset }, buffer.count - offset)
        if written < 0 {
            if errno == EINTR { continue }
            throw StoreError.systemCall("write", path: path, errno: errno)
        }
        offset += written
    }
}
