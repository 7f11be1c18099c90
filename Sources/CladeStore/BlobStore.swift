#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging

/// Content-addressed, immutable files under `blobs/sha256/<hex>`.
///
/// Blobs enter only through ``ingest(_:)``: hashed, sealed read-only (0444), then renamed
/// into place, so a reader never sees a partial blob and a name always matches its bytes.
public struct BlobStore: Sendable {
    public let home: CladeHome
    private let logger: Logger

    public init(home: CladeHome, logger: Logger = Logger(label: "clade.store")) {
        self.home = home
        self.logger = logger
    }

    public func url(for digest: Digest) -> URL {
        home.blobs.appendingPathComponent(digest.hex)
    }

    public func contains(_ digest: Digest) throws -> Bool {
        try FileSystem.exists(url(for: digest))
    }

    /// The blob's path, or an actionable error when it is missing.
    public func require(_ digest: Digest) throws -> URL {
        let path = url(for: digest)
        guard try FileSystem.exists(path) else { throw StoreError.missingBlob(digest.description) }
        return path
    }

    /// Moves `file` (which must be on the store's filesystem, e.g. under `tmp/`) into the
    /// store under its digest. If the blob already exists the file is discarded.
    @discardableResult
    public func ingest(_ file: URL) throws -> (digest: Digest, size: Int64) {
        try home.prepare()
        let (digest, size) = try Digest.ofFile(at: file)
        let destination = url(for: digest)
        if try FileSystem.exists(destination) {
            try FileSystem.remove(file)
            logger.debug("blob already stored", metadata: ["digest": "\(digest)"])
            return (digest, size)
        }
        guard chmod(file.path, 0o444) == 0 else { throw StoreError.systemCall("chmod", path: file.path, errno: errno) }
        try FileSystem.sync(file)
        guard rename(file.path, destination.path) == 0 else {
            throw StoreError.systemCall("rename", path: destination.path, errno: errno)
        }
        try? FileSystem.sync(home.blobs)
        logger.debug("stored blob", metadata: ["digest": "\(digest)", "bytes": "\(size)"])
        return (digest, size)
    }

    /// Copies an outside file into a temporary file in the store, then ingests it.
    @discardableResult
    public func ingestCopy(of source: URL) throws -> (digest: Digest, size: Int64) {
        let staging = try home.makeTemporaryDirectory(prefix: "ingest")
        defer { try? FileSystem.remove(staging) }
        let copy = staging.appendingPathComponent("blob")
        try FileManager.default.copyItem(at: source, to: copy)
        return try ingest(copy)
    }

    /// Re-hashes a stored blob and throws if its bytes no longer match its name.
    public func verify(_ digest: Digest) throws {
        let path = try require(digest)
        let actual = try Digest.ofFile(at: path).digest
        guard actual == digest else {
            throw StoreError.digestMismatch(path: path.path, expected: digest.description, actual: actual.description)
        }
    }
}

extension BlobStore {
    /// Moves a file whose content the caller has just verified to be `digest` into the store
    /// without hashing it again. The file must be on the store's filesystem.
    public func adoptVerified(_ file: URL, as digest: Digest) throws {
        try home.prepare()
        let destination = url(for: digest)
        if try FileSystem.exists(destination) {
            try FileSystem.remove(file)
            return
        }
        guard chmod(file.path, 0o444) == 0 else { throw StoreError.systemCall("chmod", path: file.path, errno: errno) }
        guard rename(file.path, destination.path) == 0 else { throw StoreError.systemCall("rename", path: destination.path, errno: errno) }
        try? FileSystem.sync(home.blobs)
    }
}
