#if canImport(Glibc)
import Glibc
#endif
import CArchive
import CladeArchive
import CladeStore
import Foundation

/// A pack as one tar file (libarchive): written from a layout directory, and extracted back
/// into one with every entry checked, since a tar can name any path, link or device.
public enum TarArchive {
    /// Writes the layout at `layout` as a tar file at `destination` (through a temporary file
    /// beside it, renamed when complete). Entries are sorted with fixed owners and times, so the
    /// same layout always gives the same bytes.
    public static func write(layout: URL, to destination: URL) throws {
        let temporary = destination.deletingLastPathComponent().appendingPathComponent(".\(destination.lastPathComponent).partial-\(getpid())")
        guard let archive = archive_write_new() else { throw PackError.archive("cannot allocate a tar writer") }
        defer { archive_write_free(archive) }
        try check(archive_write_set_format_pax_restricted(archive), archive)
        try check(archive_write_open_filename(archive, temporary.path), archive)
        var closed = false
        defer {
            if !closed { archive_write_close(archive) }
            try? FileSystem.remove(temporary)
        }
        let blobNames = try FileManager.default.contentsOfDirectory(atPath: layout.appendingPathComponent("blobs/sha256").path)
            .filter { !$0.hasPrefix(".") }.sorted()
        let entries: [(String, Bool)] = [("oci-layout", false), ("index.json", false), ("blobs", true), ("blobs/sha256", true)]
            + blobNames.map { ("blobs/sha256/\($0)", false) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        for (name, isDirectory) in entries {
            guard let entry = archive_entry_new() else { throw PackError.archive("cannot allocate a tar entry") }
            defer { archive_entry_free(entry) }
            archive_entry_set_pathname(entry, name)
            archive_entry_set_mtime(entry, 0, 0)
            archive_entry_set_uid(entry, 0)
            archive_entry_set_gid(entry, 0)
            if isDirectory {
                archive_entry_set_filetype(entry, S_IFDIR)
                archive_entry_set_perm(entry, 0o755)
                try check(archive_write_header(archive, entry), archive)
                continue
            }
            let source = layout.appendingPathComponent(name)
            let fd = try FileSystem.open(source, flags: O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            defer { close(fd) }
            var status = stat()
            guard fstat(fd, &status) == 0 else { throw StoreError.systemCall("fstat", path: source.path, errno: errno) }
            archive_entry_set_filetype(entry, S_IFREG)
            archive_entry_set_perm(entry, 0o444)
            archive_entry_set_size(entry, la_int64_t(status.st_size))
            try check(archive_write_header(archive, entry), archive)
            while true {
                let count = read(fd, buffer.baseAddress, buffer.count)
                if count < 0 {
                    if errno == EINTR { continue }
                    throw StoreError.systemCall("read", path: source.path, errno: errno)
                }
                if count == 0 { break }
                guard archive_write_data(archive, buffer.baseAddress, count) == count else {
                    throw PackError.archive(errorString(archive))
                }
            }
        }
        try check(archive_write_close(archive), archive)
        closed = true
        let fd = try FileSystem.open(temporary, flags: O_RDONLY | O_CLOEXEC)
        fsync(fd)
        close(fd)
        guard rename(temporary.path, destination.path) == 0 else { throw StoreError.systemCall("rename", path: destination.path, errno: errno) }
    }

    /// Extracts the tar at `source` into the empty directory `destination`, refusing anything but
    /// the files of an OCI layout: no absolute names, no `..`, no links, devices or FIFOs, no
    /// entry twice, and no more bytes than `byteLimit`.
    public static func extract(_ source: URL, into destination: URL, byteLimit: Int64) throws {
        let reader: TarReader
        do { reader = try TarReader(path: source.path) } catch {
            throw PackError.notALayout(path: source.path, reason: "it is not a readable tar file: \(error.message)")
        }
        let archive = reader.handle
        try FileManager.default.createDirectory(at: destination.appendingPathComponent("blobs/sha256"), withIntermediateDirectories: true)
        var seen = Set<String>()
        var total: Int64 = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let next: OpaquePointer?
            do { next = try reader.next() } catch {
                throw PackError.archive("reading \(source.path) failed: \(error.message); the file is truncated or corrupt")
            }
            guard let entry = next else { break }
            let rawName = archive_entry_pathname(entry).map { String(cString: $0) } ?? ""
            let type = archive_entry_filetype(entry)
            // The layout's own root, as `tar -C dir .` writes it.
            if type == S_IFDIR, rawName == "." || rawName == "./" { continue }
            if archive_entry_hardlink(entry) != nil { throw PackError.unsafeArchiveEntry(name: rawName, reason: "it is a hard link") }
            if archive_entry_symlink(entry) != nil || type == S_IFLNK { throw PackError.unsafeArchiveEntry(name: rawName, reason: "it is a symbolic link") }
            guard type == S_IFREG || type == S_IFDIR else {
                throw PackError.unsafeArchiveEntry(name: rawName, reason: "it is a device, FIFO or socket, not a regular file")
            }
            let name = try safeName(rawName)
            guard seen.insert(name).inserted else { throw PackError.unsafeArchiveEntry(name: rawName, reason: "it appears twice") }
            if type == S_IFDIR {
                guard name == "blobs" || name == "blobs/sha256" else { throw PackError.unsafeArchiveEntry(name: rawName, reason: "an OCI layout has no such directory") }
                continue
            }
            let size = Int64(archive_entry_size(entry))
            total += max(size, 0)
            guard total <= byteLimit else {
                throw PackError.tooLarge(what: "tar entry '\(rawName)'", declared: total, limit: byteLimit, reason: "the store has no room for more")
            }
            let target = destination.appendingPathComponent(name)
            let fd = try FileSystem.open(target, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode: 0o644)
            defer { close(fd) }
            var written: Int64 = 0
            while true {
                let count = archive_read_data(archive, buffer.baseAddress, buffer.count)
                if count < 0 { throw PackError.archive("reading '\(rawName)' failed: \(errorString(archive)); the tar is truncated or corrupt") }
                if count == 0 { break }
                try writeAll(fd, UnsafeRawBufferPointer(rebasing: buffer[0..<count]), path: target.path)
                written += Int64(count)
            }
            guard written == size else { throw PackError.sizeMismatch(what: "tar entry '\(rawName)'", declared: size, actual: written) }
        }
    }

    /// The layout-relative name of an entry, or a refusal.
    static func safeName(_ raw: String) throws -> String {
        var name = raw
        while name.hasPrefix("./") { name.removeFirst(2) }
        while name.hasSuffix("/") { name.removeLast() }
        guard !raw.hasPrefix("/") else { throw PackError.unsafeArchiveEntry(name: raw, reason: "it is an absolute path") }
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        guard !parts.contains("..") else { throw PackError.unsafeArchiveEntry(name: raw, reason: "it climbs out of the pack with '..'") }
        guard !name.isEmpty, !parts.contains(""), !parts.contains(".") else { throw PackError.unsafeArchiveEntry(name: raw, reason: "it is not a plain relative path") }
        let allowed = name == "oci-layout" || name == "index.json" || name == "blobs" || name == "blobs/sha256"
            || (parts.count == 3 && parts[0] == "blobs" && parts[1] == "sha256" && (try? Digest(hex: String(parts[2]))) != nil)
        guard allowed else { throw PackError.unsafeArchiveEntry(name: raw, reason: "an OCI layout holds only oci-layout, index.json and blobs/sha256/<digest>") }
        return name
    }

    private static func check(_ status: Int32, _ archive: OpaquePointer) throws {
        guard status == ARCHIVE_OK || status == ARCHIVE_WARN else { throw PackError.archive(errorString(archive)) }
    }

    private static func errorString(_ archive: OpaquePointer) -> String {
        archive_error_string(archive).map { String(cString: $0) } ?? "unknown error"
    }
}
