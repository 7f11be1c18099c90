#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CladeGuestProtocol

/// The v2 file actions: stat, list_dir, mkdir, move, remove, chunked reads and writes.
enum FileOperations {
    /// The largest chunk `read_file` with `length` returns or `write_chunk` takes.
    static let maxChunkBytes = 8 * 1024 * 1024
    static let maxListedEntries = 100_000

    static func path(_ request: AgentRequest) throws -> String {
        guard let path = request.path, path.hasPrefix("/") else {
            throw CommandError(description: "\(request.action) needs an absolute 'path'")
        }
        return path
    }

    static func failure(_ what: String, _ path: String) -> CommandError {
        let code = errno
        let kind: String? = switch code {
        case ENOENT, ENOTDIR: "not_found"
        case EEXIST, ENOTEMPTY: "exists"
        case EACCES, EPERM, EROFS: "permission_denied"
        default: nil
        }
        return CommandError(description: "cannot \(what) \(path): \(String(cString: strerror(code)))", kind: kind)
    }

    /// Metadata of `path` itself (a symlink is described, not followed).
    static func entry(at path: String) throws -> FileEntry {
        var info = stat()
        guard lstat(path, &info) == 0 else { throw failure("stat", path) }
        let kind: FileEntry.Kind
        var target: String?
        switch info.st_mode & S_IFMT {
        case S_IFREG: kind = .file
        case S_IFDIR: kind = .directory
        case S_IFLNK:
            kind = .symlink
            var buffer = [CChar](repeating: 0, count: 4097)
            let count = readlink(path, &buffer, 4096)
            if count >= 0 { target = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        default: kind = .other
        }
        let name = path == "/" ? "/" : String(path.split(separator: "/").last ?? "")
        var entry = FileEntry(
            name: name, path: path, type: kind, size: Int64(info.st_size), mode: Int(info.st_mode & 0o7777), uid: info.st_uid,
            gid: info.st_gid, modifiedAt: Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1e9, symlinkTarget: target)
        if kind == .file || kind == .directory { entry.metadata = FileMetadata.read(path) }
        return entry
    }

    static func join(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    static func childNames(of directory: String) throws -> [String] {
        guard let handle = opendir(directory) else { throw failure("list", directory) }
        defer { closedir(handle) }
        var names: [String] = []
        while let item = readdir(handle) {
            let name = withUnsafeBytes(of: item.pointee.d_name) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Entries under `directory`, `depth` levels down (symlinked directories are not entered).
    static func list(_ directory: String, depth: Int) throws -> [FileEntry] {
        guard depth >= 1 else { throw CommandError(description: "depth must be at least 1") }
        let top = try entry(at: directory)
        guard top.type == .directory else { throw CommandError(description: "\(directory) is not a directory") }
        var result: [FileEntry] = []
        var queue: [(String, Int)] = [(directory, 1)]
        while !queue.isEmpty {
            let (current, level) = queue.removeFirst()
            for name in try childNames(of: current) {
                let child = try entry(at: join(current, name))
                result.append(child)
                guard result.count <= maxListedEntries else {
                    throw CommandError(description: "\(directory) holds more than \(maxListedEntries) entries to depth \(depth); list with a smaller depth")
                }
                if child.type == .directory && level < depth { queue.append((child.path, level + 1)) }
            }
        }
        return result
    }

    static func makeDirectory(_ path: String, parents: Bool, mode: Int?) throws -> FileEntry {
        let bits = mode_t(mode ?? 0o755)
        if parents {
            var prefix = ""
            for component in path.split(separator: "/") {
                prefix += "/" + component
                if mkdir(prefix, bits) != 0 && errno != EEXIST { throw failure("make directory", prefix) }
            }
            let made = try entry(at: path)
            guard made.type == .directory else { throw CommandError(description: "\(path) exists and is not a directory") }
            return made
        }
        guard mkdir(path, bits) == 0 else { throw failure("make directory", path) }
        return try entry(at: path)
    }

    /// The umask trims what mkdir grants; a mode the caller named (e.g. 1777 for a shared
    /// directory) is applied as given.
    static func makeDirectory(_ path: String, parents: Bool, exactMode mode: Int?) throws -> FileEntry {
        let made = try makeDirectory(path, parents: parents, mode: mode)
        guard let mode, made.mode != mode else { return made }
        guard chmod(path, mode_t(mode)) == 0 else { throw failure("set the mode of", path) }
        return try entry(at: path)
    }

    static func move(_ path: String, to destination: String) throws -> FileEntry {
        guard destination.hasPrefix("/") else { throw CommandError(description: "move needs an absolute 'destination'") }
        guard rename(path, destination) == 0 else { throw failure("move \(path) to", destination) }
        return try entry(at: destination)
    }

    /// Removes a file, or a directory and everything below it (symlinks are removed, not followed).
    static func remove(_ path: String) throws {
        guard path != "/" else { throw CommandError(description: "refusing to remove /") }
        var info = stat()
        guard lstat(path, &info) == 0 else { throw failure("remove", path) }
        if info.st_mode & S_IFMT == S_IFDIR {
            for name in try childNames(of: path) { try remove(join(path, name)) }
            guard rmdir(path) == 0 else { throw failure("remove", path) }
        } else {
            guard unlink(path) == 0 else { throw failure("remove", path) }
        }
    }

    /// `length` bytes of `path` from `offset`, and whether they reach its end.
    static func readChunk(_ path: String, offset: Int64, length: Int) throws -> AgentResponse {
        guard length > 0, length <= maxChunkBytes, offset >= 0 else {
            throw CommandError(description: "a chunked read takes 1 to \(maxChunkBytes) bytes from a non-negative offset")
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure("open", path) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw failure("stat", path) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw CommandError(description: "\(path) is not a regular file") }
        var bytes = [UInt8](repeating: 0, count: length)
        var filled = 0
        while filled < length {
            let count = bytes[filled...].withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset) + off_t(filled)) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { throw failure("read", path) }
            if count == 0 { break }
            filled += count
        }
        var response = AgentResponse()
        response.content = Data(bytes[0..<filled]).base64EncodedString()
        response.size = filled
        response.mode = Int(info.st_mode & 0o7777)
        response.eof = offset + Int64(filled) >= Int64(info.st_size)
        return response
    }

    /// Writes one chunk of an upload into a staging file beside `path`; `commit` syncs it and
    /// renames it over `path`, so readers never see a half-written file. An upload belongs to
    /// the connection that began it: when that closes before the commit, the staging file goes.
    static func writeChunk(_ request: AgentRequest, on connection: Connection) throws -> AgentResponse {
        let path = try path(request)
        guard let upload = request.upload, !upload.isEmpty, upload.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" }) else {
            throw CommandError(description: "write_chunk needs an 'upload' name of letters, digits and dashes")
        }
        guard let data = Data(base64Encoded: request.data ?? "") else { throw CommandError(description: "data is not valid base64") }
        guard data.count <= maxChunkBytes else { throw CommandError(description: "a chunk is at most \(maxChunkBytes) bytes") }
        let offset = request.offset ?? 0
        let staging = "\(path)\(StagedUploads.marker)\(upload)"
        let mode = mode_t(request.mode ?? 0o644)
        let flags = O_WRONLY | O_CREAT | O_CLOEXEC | (offset == 0 ? O_TRUNC : 0)
        if offset == 0 { StagedUploads.began(staging: staging, targetExisted: access(path, F_OK) == 0) }
        let fd = open(staging, flags, mode)
        guard fd >= 0 else { throw failure("create", staging) }
        if offset == 0 && request.commit != true {
            // After a commit the name is gone and this unlink finds nothing.
            connection.whenClosed { _ = unlink(staging) }
        }
        var failed: CommandError?
        let bytes = [UInt8](data)
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset) + off_t(written)) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { failed = failure("write", path); break }
            written += count
        }
        var size = Int64(0)
        if failed == nil, request.commit == true {
            var info = stat()
            if fchmod(fd, mode) != 0 || fsync(fd) != 0 || fstat(fd, &info) != 0 { failed = failure("sync", staging) }
            size = Int64(info.st_size)
        }
        close(fd)
        if failed == nil, request.commit == true, rename(staging, path) != 0 { failed = failure("move the upload into place at", path) }
        if let failed {
            unlink(staging)
            throw failed
        }
        var response = AgentResponse()
        response.size = request.commit == true ? Int(size) : written
        if request.commit == true { response.entry = try? entry(at: path) }
        return response
    }
}
