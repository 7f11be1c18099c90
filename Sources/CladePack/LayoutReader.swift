#if canImport(Glibc)
import Glibc
#endif
import CladeModel
import CladeStore
import Foundation

/// Reads an OCI image layout written by anyone, trusting nothing: no symlinks are followed,
/// every blob is a regular file named by its digest, and every byte read is checked against
/// the size and digest that named it.
struct LayoutReader {
    let root: URL
    let index: ImageIndex

    static let maxJSONBytes: Int64 = 4 << 20

    init(root: URL) throws {
        self.root = root
        try Self.requireDirectory(root, what: "the pack directory")
        try Self.requireDirectory(root.appendingPathComponent("blobs"), what: "blobs/")
        try Self.requireDirectory(root.appendingPathComponent("blobs/sha256"), what: "blobs/sha256/")
        let marker = try Self.readSmallFile(root.appendingPathComponent("oci-layout"), what: "oci-layout", root: root)
        let layout = try CanonicalJSON.decode(LayoutMarker.self, from: marker, what: "oci-layout")
        guard layout.imageLayoutVersion.hasPrefix("1.") else {
            throw PackError.notALayout(path: root.path, reason: "oci-layout names version \(layout.imageLayoutVersion); only 1.x is understood")
        }
        let indexData = try Self.readSmallFile(root.appendingPathComponent("index.json"), what: "index.json", root: root)
        index = try CanonicalJSON.decode(ImageIndex.self, from: indexData, what: "index.json")
        guard index.schemaVersion == 2 else { throw PackError.malformed(what: "index.json", reason: "schemaVersion is \(index.schemaVersion), expected 2") }
    }

    static func requireDirectory(_ url: URL, what: String) throws {
        var status = stat()
        guard lstat(url.path, &status) == 0 else {
            if errno == ENOENT { throw PackError.notALayout(path: url.path, reason: "\(what) does not exist") }
            throw StoreError.systemCall("lstat", path: url.path, errno: errno)
        }
        guard status.st_mode & S_IFMT == S_IFDIR else {
            throw PackError.notALayout(path: url.path, reason: "\(what) is not a plain directory (symlinks are not followed)")
        }
    }

    static func readSmallFile(_ url: URL, what: String, root: URL) throws -> Data {
        let fd = open(url.path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw PackError.notALayout(path: root.path, reason: "\(what) is missing") }
            if errno == ELOOP { throw PackError.notALayout(path: root.path, reason: "\(what) is a symlink") }
            throw StoreError.systemCall("open", path: url.path, errno: errno)
        }
        defer { close(fd) }
        var status = stat()
        guard fstat(fd, &status) == 0 else { throw StoreError.systemCall("fstat", path: url.path, errno: errno) }
        guard status.st_mode & S_IFMT == S_IFREG else { throw PackError.notALayout(path: root.path, reason: "\(what) is not a regular file") }
        guard Int64(status.st_size) <= maxJSONBytes else {
            throw PackError.tooLarge(what: what, declared: Int64(status.st_size), limit: maxJSONBytes, reason: "metadata files are small")
        }
        var data = Data(count: Int(status.st_size))
        let count = data.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count == Int(status.st_size) else { throw StoreError.systemCall("read", path: url.path, errno: errno) }
        return data
    }

    func blobURL(_ digest: Digest) -> URL { root.appendingPathComponent("blobs/sha256/\(digest.hex)") }

    func hasBlob(_ digest: Digest) -> Bool {
        var status = stat()
        return lstat(blobURL(digest).path, &status) == 0
    }

    /// Opens a blob and checks it is a regular file of the declared size.
    func openBlob(_ descriptor: Descriptor, what: String) throws -> Int32 {
        let url = blobURL(descriptor.digest)
        let fd = open(url.path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw PackError.missingBlob(descriptor.digest, what: what) }
            if errno == ELOOP { throw PackError.unsafeArchiveEntry(name: "blobs/sha256/\(descriptor.digest.hex)", reason: "it is a symlink") }
            throw StoreError.systemCall("open", path: url.path, errno: errno)
        }
        var status = stat()
        guard fstat(fd, &status) == 0 else {
            close(fd)
            throw StoreError.systemCall("fstat", path: url.path, errno: errno)
        }
        guard status.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw PackError.unsafeArchiveEntry(name: "blobs/sha256/\(descriptor.digest.hex)", reason: "it is not a regular file")
        }
        guard Int64(status.st_size) == descriptor.size else {
            close(fd)
            throw PackError.sizeMismatch(what: "\(what) (blob \(descriptor.digest.short))", declared: descriptor.size, actual: Int64(status.st_size))
        }
        return fd
    }

    /// A small JSON blob (manifest, config), read whole. `verify` false reads without hashing,
    /// for the structural checks that run before any digest is trusted.
    func readJSONBlob(_ descriptor: Descriptor, what: String, verify: Bool = true) throws -> Data {
        guard descriptor.size >= 0, descriptor.size <= Self.maxJSONBytes else {
            throw PackError.tooLarge(what: what, declared: descriptor.size, limit: Self.maxJSONBytes, reason: "manifests and configs are small")
        }
        let fd = try openBlob(descriptor, what: what)
        defer { close(fd) }
        var data = Data(count: Int(descriptor.size))
        let count = data.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count == Int(descriptor.size) else { throw PackError.sizeMismatch(what: what, declared: descriptor.size, actual: Int64(max(count, 0))) }
        if verify {
            let actual = Digest.of(data)
            guard actual == descriptor.digest else { throw PackError.digestMismatch(what: what, expected: descriptor.digest, actual: actual) }
        }
        return data
    }

    /// Streams a blob through SHA-256 and size checks and zstd, handing decompressed bytes to `output`.
    /// Throws, after `output` may have seen some bytes, when anything does not match; callers
    /// write only into staging that is discarded on failure.
    func decompressBlob(
        _ descriptor: Descriptor, what: String, contentSize: Int64, onRead: (Int64) -> Void = { _ in },
        output: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let fd = try openBlob(descriptor, what: what)
        defer { close(fd) }
        try Self.decompress(
            fd: fd, descriptor: descriptor, what: what, contentSize: contentSize, onRead: onRead, output: output)
    }

    static func decompress(
        fd: Int32, descriptor: Descriptor, what: String, contentSize: Int64, onRead: (Int64) -> Void,
        output: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        var hasher = DigestHasher()
        var total: Int64 = 0
        var decodeFailure: Error?
        let decoder = try ZstdDecompressor(limit: contentSize, what: what)
        let capacity = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: capacity, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let count = read(fd, buffer.baseAddress, capacity)
            if count < 0 {
                if errno == EINTR { continue }
                throw StoreError.systemCall("read", path: what, errno: errno)
            }
            if count == 0 { break }
            total += Int64(count)
            guard total <= descriptor.size else { throw PackError.sizeMismatch(what: what, declared: descriptor.size, actual: total) }
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
            hasher.update(chunk)
            onRead(Int64(count))
            guard decodeFailure == nil else { continue }
            do {
                try decoder.feed(chunk, output: output)
            } catch {
                // Keep hashing: bytes that do not match their digest are the real fault to report.
                decodeFailure = error
            }
        }
        guard total == descriptor.size else { throw PackError.sizeMismatch(what: what, declared: descriptor.size, actual: total) }
        let actual = hasher.finalize()
        guard actual == descriptor.digest else { throw PackError.digestMismatch(what: what, expected: descriptor.digest, actual: actual) }
        if let decodeFailure { throw decodeFailure }
        try decoder.finish()
        guard decoder.produced == contentSize else {
            throw PackError.sizeMismatch(what: "\(what) (decompressed)", declared: contentSize, actual: decoder.produced)
        }
    }
}
