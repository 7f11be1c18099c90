#if canImport(Glibc)
import Glibc
#endif
import CArchive
import CladeArchive
import CladeStore
import Foundation

/// Images in a `docker save` archive: the classic layout (`manifest.json`, `<id>/layer.tar`)
/// or the OCI layout Docker 25 and later write. The archive is unpacked into the store's
/// temporary space (regular files only, every name checked), then read like a layout.
public struct DockerArchiveSource: ImageSource {
    public let archive: URL
    /// Which of the archive's `RepoTags` to take; nil takes the only image.
    public let tag: String?
    private let unpacked: URL

    /// Unpacks `archive` under `temporaryRoot` (which the caller removes with `close`).
    public static func open(_ archive: URL, tag: String?, temporaryRoot: URL) throws -> DockerArchiveSource {
        let unpacked = temporaryRoot.appendingPathComponent("docker-archive")
        try FileManager.default.createDirectory(at: unpacked, withIntermediateDirectories: true)
        try extract(archive, into: unpacked)
        return DockerArchiveSource(archive: archive, tag: tag, unpacked: unpacked)
    }

    private init(archive: URL, tag: String?, unpacked: URL) {
        self.archive = archive
        self.tag = tag
        self.unpacked = unpacked
    }

    public static func looksLikeDockerArchive(_ file: URL) -> Bool {
        (try? memberNames(of: file).contains { $0 == "manifest.json" || $0 == "./manifest.json" }) ?? false
    }

    public func resolve(platform: ImagePlatform) async throws -> ResolvedImage {
        let name = archive.path + (tag.map { ":\($0)" } ?? "")
        let manifestFile = unpacked.appendingPathComponent("manifest.json")
        struct Entry: Decodable {
            var Config: String
            var RepoTags: [String]?
            var Layers: [String]
        }
        let entries = try CanonicalJSON.decode(
            [Entry].self, from: try LayoutReader.readSmallFile(manifestFile, what: "manifest.json", root: unpacked), what: "manifest.json of \(archive.path)")
        let chosen: Entry
        if let tag {
            guard let match = entries.first(where: { ($0.RepoTags ?? []).contains { $0 == tag || $0.hasSuffix(":" + tag) || $0.hasSuffix("/" + tag) } }) else {
                throw PackError.malformed(what: archive.path, reason: "it has no image tagged '\(tag)' (it has: \(entries.flatMap { $0.RepoTags ?? [] }.joined(separator: ", ")))")
            }
            chosen = match
        } else {
            guard entries.count == 1, let only = entries.first else {
                throw PackError.malformed(what: archive.path, reason: "it holds \(entries.count) images; name one as FILE:TAG")
            }
            chosen = only
        }
        // Docker 25+ archives are OCI layouts; their manifest.json points into blobs/sha256.
        if try FileSystem.exists(unpacked.appendingPathComponent("index.json")), chosen.Config.hasPrefix("blobs/") {
            let configDescriptor = try describe(chosen.Config, mediaType: ImageMediaType.ociConfig)
            let layers = try chosen.Layers.map { try describe($0, mediaType: ImageMediaType.tarLayer) }
            return try ResolvedImage(source: name, manifestDigest: nil, config: configDescriptor, layers: layers).validated(what: name)
        }
        let config = try describe(chosen.Config, mediaType: ImageMediaType.dockerConfig)
        let layers = try chosen.Layers.map { try describe($0, mediaType: ImageMediaType.tarLayer) }
        return try ResolvedImage(source: name, manifestDigest: nil, config: config, layers: layers).validated(what: name)
    }

    /// A descriptor for a member of the unpacked archive, by hashing it.
    private func describe(_ member: String, mediaType: String) throws -> Descriptor {
        let file = try memberURL(member)
        let (digest, size) = try Digest.ofFile(at: file)
        return Descriptor(mediaType: mediaType, digest: digest, size: size, annotations: ["org.clade.archive.member": member])
    }

    private func memberURL(_ member: String) throws -> URL {
        let name = try Self.safeName(member)
        return unpacked.appendingPathComponent(name)
    }

    public func fetch(_ descriptor: Descriptor, into blobs: BlobStore, progress: @Sendable (Int64) -> Void) async throws -> URL {
        guard let member = descriptor.annotations?["org.clade.archive.member"] else { throw PackError.missingBlob(descriptor.digest, what: archive.path) }
        let url = try blobs.ingestVerified(try memberURL(member), as: descriptor, what: "\(member) in \(archive.path)")
        progress(descriptor.size)
        return url
    }

    public func close() async { try? FileSystem.remove(unpacked) }

    // MARK: - Unpacking

    static func memberNames(of file: URL) throws -> [String] {
        guard let reader = try? TarReader(path: file.path, blockBytes: 1 << 16) else { return [] }
        var names: [String] = []
        while names.count < 100_000, let entry = try? reader.next() {
            names.append(archive_entry_pathname(entry).map { String(cString: $0) } ?? "")
        }
        return names
    }

    /// Extracts regular files and directories; a symbolic link (classic archives link shared
    /// layers) becomes a copy of the member it names, which must be inside the archive.
    static func extract(_ file: URL, into destination: URL) throws {
        let archive: TarReader
        do { archive = try TarReader(path: file.path) } catch {
            throw PackError.notALayout(path: file.path, reason: "it is not a readable tar file")
        }
        let reader = archive.handle
        // A plain tar's members cannot hold more than the tar; sparse members that claim to
        // would be a way to fill the disk from a small file.
        let byteLimit = (try FileSystem.status(of: file.resolvingSymlinksInPath())?.size) ?? 0
        var written: Int64 = 0
        var links: [(name: String, target: String)] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let next: OpaquePointer?
            do { next = try archive.next() } catch { throw PackError.archive("reading \(file.path) failed; the archive is truncated or corrupt") }
            guard let entry = next else { break }
            let raw = archive_entry_pathname(entry).map { String(cString: $0) } ?? ""
            if raw == "." || raw == "./" { continue }
            let name = try safeName(raw)
            let type = UInt32(archive_entry_filetype(entry))
            let target = destination.appendingPathComponent(name)
            switch type {
            case 0o040000:
                try FileManager.default.createDirectory(at: target, withIntermediateDirectories: true)
            case 0o120000:
                let linkTarget = archive_entry_symlink(entry).map { String(cString: $0) } ?? ""
                links.append((name, linkTarget))
            case 0o100000:
                try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
                let fd = try FileSystem.open(target, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode: 0o644)
                defer { Glibc.close(fd) }
                while true {
                    let count = archive_read_data(reader, buffer.baseAddress, buffer.count)
                    if count < 0 { throw PackError.archive("reading '\(raw)' in \(file.path) failed; the archive is truncated or corrupt") }
                    if count == 0 { break }
                    written += Int64(count)
                    guard written <= byteLimit else {
                        throw PackError.tooLarge(what: "\(file.path) unpacked", declared: written, limit: byteLimit, reason: "its members hold more than the archive itself")
                    }
                    try writeAll(fd, UnsafeRawBufferPointer(rebasing: buffer[0..<count]), path: target.path)
                }
            default:
                throw PackError.unsafeArchiveEntry(name: raw, reason: "an image archive holds only files, directories and links between its own files")
            }
        }
        for link in links {
            let base = (link.name as NSString).deletingLastPathComponent
            let resolved = try safeName(link.target.hasPrefix("/") ? link.target : (base.isEmpty ? link.target : base + "/" + link.target), allowDotDot: true)
            let source = destination.appendingPathComponent(resolved)
            guard let status = try FileSystem.status(of: source), status.isRegularFile else {
                throw PackError.unsafeArchiveEntry(name: link.name, reason: "it links to '\(link.target)', which is not a file in the archive")
            }
            let target = destination.appendingPathComponent(link.name)
            try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: source, to: target)
        }
    }

    /// An archive-relative name; `..` is allowed only where it stays inside (link targets).
    static func safeName(_ raw: String, allowDotDot: Bool = false) throws -> String {
        guard !raw.hasPrefix("/") else { throw PackError.unsafeArchiveEntry(name: raw, reason: "it is an absolute path") }
        var parts: [Substring] = []
        for part in raw.split(separator: "/") where part != "." {
            if part == ".." {
                guard allowDotDot, !parts.isEmpty else { throw PackError.unsafeArchiveEntry(name: raw, reason: "it climbs out of the archive with '..'") }
                parts.removeLast()
            } else {
                parts.append(part)
            }
        }
        guard !parts.isEmpty else { throw PackError.unsafeArchiveEntry(name: raw, reason: "it is not a plain relative path") }
        return parts.joined(separator: "/")
    }
}
