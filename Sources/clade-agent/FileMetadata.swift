#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxShims
import CladeGuestProtocol

/// User metadata on files, kept by the filesystem as extended attributes in the `user.`
/// namespace under envd's prefix (`user.e2b.`), so metadata set by other tools in the guest shows too,
/// and a copy or backup that keeps xattrs keeps it.
enum FileMetadata {
    static let prefix = "user.e2b."
    /// What one file may carry: more would not fit ext4's single xattr block anyway.
    static let maxTotalBytes = 3_072

    /// Sets `metadata` (keys lowercased) on the file at `path`.
    static func set(_ metadata: [String: String], on path: String) throws {
        let total = metadata.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        guard total <= maxTotalBytes else {
            throw CommandError(description: "metadata of \(total) bytes is over the \(maxTotalBytes) bytes a file may carry", kind: "bad_input")
        }
        for (key, value) in metadata {
            let name = prefix + key.lowercased()
            let bytes = Array(value.utf8)
            let result = bytes.withUnsafeBytes { setxattr(path, name, $0.baseAddress, $0.count, 0) }
            guard result == 0 else { throw FileOperations.failure("set metadata '\(key)' on", path) }
        }
    }

    /// The metadata on `path` (a symlink's own, which is never set), nil when it has none.
    static func read(_ path: String) -> [String: String]? {
        let size = llistxattr(path, nil, 0)
        guard size > 0 else { return nil }
        var names = [CChar](repeating: 0, count: size)
        let filled = llistxattr(path, &names, size)
        guard filled > 0 else { return nil }
        var metadata: [String: String] = [:]
        for raw in names[0..<filled].split(separator: 0) {
            let name = String(decoding: raw.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard name.hasPrefix(prefix) else { continue }
            let length = lgetxattr(path, name, nil, 0)
            guard length >= 0 else { continue }
            var value = [UInt8](repeating: 0, count: length)
            let read = length == 0 ? 0 : lgetxattr(path, name, &value, length)
            guard read >= 0 else { continue }
            metadata[String(name.dropFirst(prefix.count))] = String(decoding: value[0..<read], as: UTF8.self)
        }
        return metadata.isEmpty ? nil : metadata
    }
}
