#if canImport(Glibc)
import Glibc
#endif
import CArchive
import CladeArchive
import CladeStore
import Foundation

/// How layer entries are named and typed, apart from how they are applied.
extension LayerApplier {
    /// The root-relative components of an entry name, or a refusal for names that could leave the root.
    public static func components(of raw: String, layer: String) throws -> [String] {
        guard !raw.hasPrefix("/") else { throw LayerError.hostileEntry(layer: layer, entry: raw, reason: "is an absolute path") }
        guard !raw.isEmpty else { throw LayerError.hostileEntry(layer: layer, entry: raw, reason: "has an empty name") }
        let parts = raw.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard !parts.contains("..") else { throw LayerError.hostileEntry(layer: layer, entry: raw, reason: "climbs out of the root with '..'") }
        guard !raw.utf8.contains(0) else { throw LayerError.hostileEntry(layer: layer, entry: raw, reason: "contains a NUL byte") }
        return parts.filter { $0 != "." }
    }

    func attributes(of entry: OpaquePointer, type: UInt32) -> RootMetadata.Attributes {
        var xattrs: [String: [UInt8]] = [:]
        archive_entry_xattr_reset(entry)
        var name: UnsafePointer<CChar>?
        var value: UnsafeRawPointer?
        var size = 0
        while archive_entry_xattr_next(entry, &name, &value, &size) == ARCHIVE_OK {
            guard let name else { continue }
            let key = String(cString: name)
            // POSIX ACLs (system.*) have no portable meaning in a guest's image; the rest are kept.
            guard key.hasPrefix("user.") || key.hasPrefix("security.") || key.hasPrefix("trusted.") else {
                logger.debug("dropping an extended attribute", metadata: ["name": "\(key)"])
                continue
            }
            xattrs[key] = value.map { Array(UnsafeRawBufferPointer(start: $0, count: size)) } ?? []
        }
        let permissions = UInt32(archive_entry_perm(entry)) & 0o7777
        return .init(mode: type | permissions, uid: UInt32(clamping: archive_entry_uid(entry)), gid: UInt32(clamping: archive_entry_gid(entry)), xattrs: xattrs)
    }

    func writeFile(_ path: String, from archive: OpaquePointer, declared: Int64, entry raw: String) throws {
        guard declared >= 0, bytesWritten + declared <= limits.maxBytes else { throw LayerError.tooLarge(layer: layerName, limit: limits.maxBytes) }
        let fd = open(absolute(path), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw LayerError.hostFailure(layer: layerName, entry: raw, operation: "create", errno: errno) }
        defer { close(fd) }
        var buffer: UnsafeRawPointer?
        var size = 0
        var offset: la_int64_t = 0
        var written: Int64 = 0
        while true {
            let status = archive_read_data_block(archive, &buffer, &size, &offset)
            if status == ARCHIVE_EOF { break }
            guard status == ARCHIVE_OK || status == ARCHIVE_WARN else {
                throw LayerError.unreadable(layer: layerName, reason: "reading '\(raw)': \(TarReader.message(archive))")
            }
            written = max(written, Int64(offset) + Int64(size))
            guard written <= declared, bytesWritten + written <= limits.maxBytes else {
                throw LayerError.tooLarge(layer: layerName, limit: limits.maxBytes)
            }
            guard let buffer, size > 0 else { continue }
            var done = 0
            while done < size {
                let count = pwrite(fd, buffer + done, size - done, off_t(offset) + off_t(done))
                if count < 0 {
                    if errno == EINTR { continue }
                    throw LayerError.hostFailure(layer: layerName, entry: raw, operation: "write", errno: errno)
                }
                done += count
            }
        }
        // Sparse entries end in a hole: give the file its declared length.
        guard ftruncate(fd, off_t(declared)) == 0 else { throw LayerError.hostFailure(layer: layerName, entry: raw, operation: "truncate", errno: errno) }
        bytesWritten += declared
    }

    func makeHardLink(_ path: String, to linkName: String, entry raw: String) throws {
        let targetComponents: [String]
        do { targetComponents = try Self.components(of: linkName, layer: layerName) } catch {
            throw LayerError.hostileEntry(layer: layerName, entry: raw, reason: "is a hard link to '\(linkName)', outside the root")
        }
        guard let last = targetComponents.last,
            let targetParent = try resolveDirectory(Array(targetComponents.dropLast()), create: false, entry: raw)
        else { throw LayerError.hostileEntry(layer: layerName, entry: raw, reason: "is a hard link to '\(linkName)', which does not exist in the image") }
        let target = join(targetParent, last)
        var status = stat()
        guard lstat(absolute(target), &status) == 0 || metadata.devices[target] != nil else {
            throw LayerError.hostileEntry(layer: layerName, entry: raw, reason: "is a hard link to '\(linkName)', which does not exist in the image")
        }
        guard target != path else { return }
        if let device = metadata.devices[target] {
            // Device nodes exist only in the image; a second name is a second node with the same numbers.
            try removeTree(path, entry: raw)
            metadata.devices[path] = device
            metadata.attributes[path] = metadata.attributes[target]
            return
        }
        guard UInt32(status.st_mode) & FileType.fmt != FileType.dir else {
            throw LayerError.hostileEntry(layer: layerName, entry: raw, reason: "is a hard link to the directory '\(linkName)'")
        }
        try removeTree(path, entry: raw)
        try call("link", raw) { link(absolute(target), absolute(path)) }
        metadata.attributes[path] = metadata.attributes[target]
    }

    // MARK: - Paths inside the root
}

/// `st_mode` file types (Glibc's and Foundation's constants are ambiguous in Swift).
enum FileType {
    static let fmt: UInt32 = 0o170000
    static let dir: UInt32 = 0o040000
    static let reg: UInt32 = 0o100000
    static let lnk: UInt32 = 0o120000
    static let ifo: UInt32 = 0o010000
    static let chr: UInt32 = 0o020000
    static let blk: UInt32 = 0o060000
}
