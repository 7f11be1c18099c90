#if canImport(Glibc)
import Glibc
#endif
import CArchive
import CladeArchive
import CladeStore
import Foundation
import Logging

/// Unpacks OCI image layers, lowest first, into an empty directory the way the OCI image
/// spec says: whiteouts (`.wh.NAME`) delete from lower layers, an opaque marker
/// (`.wh..wh..opq`) hides a directory's lower contents, later entries replace earlier ones.
///
/// A layer is untrusted input. Names that are absolute or contain `..`, paths that pass
/// through a symbolic link leading out of the root, and hard links to anything outside are
/// refused with the entry named. Symbolic links inside the root are resolved against the
/// root (an absolute target means the image's `/`), never the host's. Owners, modes beyond
/// the builder's reach, extended attributes and device nodes go into `RootMetadata` rather
/// than onto the host, so unpacking needs no privilege and the image does not depend on who
/// built it. gzip, zstd and uncompressed layers are told apart by their bytes.
public final class LayerApplier {
    /// Limits that make a tar bomb fail early instead of filling the disk.
    public struct Limits: Sendable {
        /// Bytes of file content all layers together may unpack to.
        public var maxBytes: Int64
        public var maxEntries: Int
        public init(maxBytes: Int64 = 32 << 30, maxEntries: Int = 2_000_000) {
            self.maxBytes = maxBytes
            self.maxEntries = maxEntries
        }
    }

    public let root: URL
    public let limits: Limits
    let logger: Logger
    var metadata = RootMetadata()
    var bytesWritten: Int64 = 0
    var entriesSeen = 0
    /// Paths written by the layer being applied (and their ancestors): whiteouts and opaque
    /// markers only ever hide what lower layers left.
    var touched = Set<String>()
    var layerName = ""
    static let maxSymlinkHops = 40
    static let whiteoutPrefix = ".wh."
    static let opaqueMarker = ".wh..wh..opq"

    /// `root` must be an empty directory that only this applier writes to.
    public init(root: URL, limits: Limits = Limits(), logger: Logger = Logger(label: "clade.layers")) {
        self.root = root
        self.limits = limits
        self.logger = logger
        metadata.attributes[""] = .init(mode: FileType.dir | 0o755)
    }

    /// Applies one layer file on top of what is already unpacked.
    public func apply(layer file: URL, name: String) throws {
        layerName = name
        touched = []
        do {
            let reader = try TarReader(path: file.path, compressed: true, allowEmpty: true)
            while let entry = try reader.next() {
                entriesSeen += 1
                guard entriesSeen <= limits.maxEntries else { throw LayerError.tooManyEntries(layer: name, limit: limits.maxEntries) }
                try applyEntry(entry, archive: reader.handle)
            }
        } catch let failure as TarReader.Failure {
            throw LayerError.unreadable(layer: name, reason: failure.message)
        }
    }

    /// The attributes of every path left in the root, and its device nodes. Paths that the
    /// layers did not describe (directories made implicitly) belong to root, mode 0755.
    public func finish() throws -> RootMetadata {
        var result = RootMetadata()
        result.attributes[""] = metadata.attributes[""]
        try walk("") { relative, status in
            result.attributes[relative] = metadata.attributes[relative] ?? .init(mode: UInt32(status.st_mode))
        }
        for (path, device) in metadata.devices {
            result.devices[path] = device
            result.attributes[path] = metadata.attributes[path]
        }
        return result
    }

    /// Calls `body` for every path under `directory`, without following symbolic links.
    func walk(_ directory: String, _ body: (String, stat) throws -> Void) throws {
        let children = try FileManager.default.contentsOfDirectory(atPath: absolute(directory))
        for child in children {
            let path = join(directory, child)
            var status = stat()
            guard lstat(absolute(path), &status) == 0 else { continue }
            try body(path, status)
            if UInt32(status.st_mode) & FileType.fmt == FileType.dir { try walk(path, body) }
        }
    }

    /// The contents of a regular file in the unpacked root, read without leaving it (for
    /// `/etc/passwd` and `/etc/group`); nil when there is no such file.
    public func readFile(_ path: String, limit: Int = 4 << 20) throws -> Data? {
        let components = path.split(separator: "/").map(String.init)
        guard let last = components.last,
            let parent = try? resolveDirectory(Array(components.dropLast()), create: false, entry: path)
        else { return nil }
        let relative = join(parent, last)
        var status = stat()
        guard lstat(absolute(relative), &status) == 0, UInt32(status.st_mode) & FileType.fmt == FileType.reg, status.st_size <= limit else { return nil }
        return FileManager.default.contents(atPath: absolute(relative))
    }

    // MARK: - Entries

    func applyEntry(_ entry: OpaquePointer, archive: OpaquePointer) throws {
        let raw = archive_entry_pathname(entry).map { String(cString: $0) } ?? ""
        let components = try Self.components(of: raw, layer: layerName)
        guard let base = components.last else {
            // The layer's own root directory ("./"): its owner and mode apply to "/".
            metadata.attributes[""] = attributes(of: entry, type: FileType.dir)
            return
        }
        guard !base.contains("\n"), !base.contains("\""), !base.contains("\\") else {
            throw LayerError.unsupportedEntry(layer: layerName, entry: raw, reason: "names with a newline, '\"' or '\\' are not supported by the image builder")
        }
        let parentComponents = Array(components.dropLast())
        if base.hasPrefix(Self.whiteoutPrefix) {
            guard let parent = try resolveDirectory(parentComponents, create: false, entry: raw) else { return }
            if base == Self.opaqueMarker {
                try hideLowerContents(of: parent, entry: raw)
            } else {
                let hidden = String(base.dropFirst(Self.whiteoutPrefix.count))
                guard !hidden.isEmpty, hidden != ".", hidden != ".." else {
                    throw LayerError.hostileEntry(layer: layerName, entry: raw, reason: "is a whiteout of nothing")
                }
                let path = join(parent, hidden)
                if !touched.contains(path) { try removeTree(path, entry: raw) }
            }
            return
        }
        guard let parent = try resolveDirectory(parentComponents, create: true, entry: raw) else { return }
        let path = join(parent, base)
        markTouched(path)
        let type = UInt32(archive_entry_filetype(entry))

        if let linkName = archive_entry_hardlink(entry).map({ String(cString: $0) }) {
            try makeHardLink(path, to: linkName, entry: raw)
            return
        }
        switch type {
        case FileType.dir:
            var status = stat()
            if lstat(absolute(path), &status) == 0, UInt32(status.st_mode) & FileType.fmt == FileType.dir {
                // An existing directory stays (with its contents); only its attributes change.
            } else {
                try removeTree(path, entry: raw)
                try call("mkdir", raw) { mkdir(absolute(path), 0o755) }
            }
        case FileType.reg:
            try removeTree(path, entry: raw)
            try writeFile(path, from: archive, declared: Int64(archive_entry_size(entry)), entry: raw)
        case FileType.lnk:
            guard let target = archive_entry_symlink(entry).map({ String(cString: $0) }), !target.isEmpty else {
                throw LayerError.hostileEntry(layer: layerName, entry: raw, reason: "is a symbolic link with no target")
            }
            try removeTree(path, entry: raw)
            try call("symlink", raw) { symlink(target, absolute(path)) }
        case FileType.ifo:
            try removeTree(path, entry: raw)
            try call("mkfifo", raw) { mkfifo(absolute(path), 0o644) }
        case FileType.chr, FileType.blk:
            try removeTree(path, entry: raw)
            metadata.devices[path] = .init(
                isBlock: type == FileType.blk, major: UInt32(archive_entry_rdevmajor(entry)), minor: UInt32(archive_entry_rdevminor(entry)))
        default:
            logger.warning("skipping an entry of a type images cannot hold", metadata: ["layer": "\(layerName)", "entry": "\(raw)"])
            return
        }
        metadata.attributes[path] = attributes(of: entry, type: type)
    }

    /// Walks `components` from the root, following symbolic links as the guest would (an
    /// absolute target starts again at the image's root) but refusing any that climb above it.
    /// Returns the real root-relative directory path, or nil when a component is missing and
    /// `create` is false. Missing directories are made when `create` is true.
    func resolveDirectory(_ components: [String], create: Bool, entry raw: String) throws -> String? {
        var resolved: [String] = []
        var pending = components[...]
        var hops = 0
        while let component = pending.first {
            pending = pending.dropFirst()
            if component == "." || component.isEmpty { continue }
            if component == ".." {
                guard !resolved.isEmpty else {
                    throw LayerError.hostileEntry(layer: layerName, entry: raw, reason: "goes through a symbolic link that leads outside the root")
                }
                resolved.removeLast()
                continue
            }
            let path = (resolved + [component]).joined(separator: "/")
            var status = stat()
            if lstat(absolute(path), &status) != 0 {
                guard errno == ENOENT else { throw LayerError.hostFailure(layer: layerName, entry: raw, operation: "lstat", errno: errno) }
                guard create else { return nil }
                try call("mkdir", raw) { mkdir(absolute(path), 0o755) }
                resolved.append(component)
                continue
            }
            switch UInt32(status.st_mode) & FileType.fmt {
            case FileType.dir:
                resolved.append(component)
            case FileType.lnk:
                hops += 1
                guard hops <= Self.maxSymlinkHops else {
                    throw LayerError.hostileEntry(layer: layerName, entry: raw, reason: "goes through more than \(Self.maxSymlinkHops) symbolic links")
                }
                let target = try readLink(path, entry: raw)
                if target.hasPrefix("/") { resolved = [] }
                pending = ArraySlice(target.split(separator: "/").map(String.init)) + pending
            default:
                guard create else { return nil }
                throw LayerError.unsupportedEntry(layer: layerName, entry: raw, reason: "'\(path)' is not a directory in the image")
            }
        }
        return resolved.joined(separator: "/")
    }

    func readLink(_ path: String, entry raw: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink(absolute(path), &buffer, buffer.count - 1)
        guard count >= 0 else { throw LayerError.hostFailure(layer: layerName, entry: raw, operation: "readlink", errno: errno) }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Removes `path` and everything under it, on the host and from the metadata; a missing path is fine.
    func removeTree(_ path: String, entry raw: String) throws {
        if metadata.devices.removeValue(forKey: path) != nil { metadata.attributes[path] = nil }
        let prefix = path + "/"
        for key in metadata.devices.keys where key.hasPrefix(prefix) {
            metadata.devices[key] = nil
            metadata.attributes[key] = nil
        }
        var status = stat()
        guard lstat(absolute(path), &status) == 0 else { return }
        if UInt32(status.st_mode) & FileType.fmt == FileType.dir {
            do { try FileManager.default.removeItem(atPath: absolute(path)) } catch {
                throw LayerError.hostFailure(layer: layerName, entry: raw, operation: "remove \(path)", errno: EIO)
            }
        } else {
            try call("unlink", raw) { unlink(absolute(path)) }
        }
        metadata.attributes[path] = nil
    }

    /// Removes everything under `directory` that the current layer did not write.
    func hideLowerContents(of directory: String, entry raw: String) throws {
        let children = (try? FileManager.default.contentsOfDirectory(atPath: absolute(directory))) ?? []
        for child in children {
            let path = join(directory, child)
            guard touched.contains(path) else {
                try removeTree(path, entry: raw)
                continue
            }
            var status = stat()
            if lstat(absolute(path), &status) == 0, UInt32(status.st_mode) & FileType.fmt == FileType.dir {
                try hideLowerContents(of: path, entry: raw)
            }
        }
        let prefix = directory.isEmpty ? "" : directory + "/"
        for key in metadata.devices.keys where key.hasPrefix(prefix) && !touched.contains(key) {
            metadata.devices[key] = nil
            metadata.attributes[key] = nil
        }
    }

    func markTouched(_ path: String) {
        var current = path
        while !current.isEmpty, touched.insert(current).inserted {
            guard let slash = current.lastIndex(of: "/") else { break }
            current = String(current[..<slash])
        }
    }

    func join(_ directory: String, _ name: String) -> String { directory.isEmpty ? name : directory + "/" + name }
    func absolute(_ relative: String) -> String { relative.isEmpty ? root.path : root.path + "/" + relative }

    func call(_ operation: String, _ raw: String, _ body: () -> Int32) throws {
        guard body() == 0 else { throw LayerError.hostFailure(layer: layerName, entry: raw, operation: operation, errno: errno) }
    }
}
