import CladeGuest
import CladeModel
import CladePack
import CladeStore
import Foundation

/// How an image is pulled or imported.
public struct ImageIngestOptions: Sendable {
    /// The image's name in clade; nil derives one from the reference or file name.
    public var name: String?
    public var platform: ImagePlatform
    /// Free space in the root filesystem beyond its content, MiB.
    public var freeMiB: Int
    /// The most the layers may unpack to, MiB: a tar bomb fails at this, not at a full disk.
    public var sizeLimitMiB: Int

    public init(name: String? = nil, platform: ImagePlatform = .host, freeMiB: Int = 256, sizeLimitMiB: Int = 32768) {
        self.name = name
        self.platform = platform
        self.freeMiB = freeMiB
        self.sizeLimitMiB = sizeLimitMiB
    }
}

extension Images {
    /// Pulls a container image from a registry (`python:3.12-slim`, `localhost:5000/app:v1`)
    /// and makes it a clade image. Layers are cached by digest; an interrupted pull resumes.
    @discardableResult
    public func pull(
        _ text: String, options: ImageIngestOptions = .init(), access: RegistryAccess = .init(), progress: PackProgress? = nil
    ) async throws -> ImageRecord {
        let reference = try RegistryReference(image: text)
        let name = try options.name ?? Self.defaultName(repository: reference.repository, tag: reference.isDigest ? nil : reference.reference)
        let source = RegistryImageSource(reference: reference, insecure: access.insecure, credentials: access.credentials, logger: logger)
        do {
            let record = try await ingest(from: source, name: name, options: options, progress: progress)
            await source.close()
            return record
        } catch {
            await source.close()
            throw error
        }
    }

    /// Imports an image from an OCI image layout (`DIR` or `DIR:TAG`), a `docker save` archive
    /// (`FILE` or `FILE:TAG`) or a plain root filesystem tarball (tar, tar.gz, tar.zst).
    @discardableResult
    public func importImage(_ path: String, options: ImageIngestOptions = .init(), progress: PackProgress? = nil) async throws -> ImageRecord {
        var location = path
        var tag: String?
        if try !FileSystem.exists(URL(fileURLWithPath: path)), let colon = path.lastIndex(of: ":") {
            location = String(path[..<colon])
            tag = String(path[path.index(after: colon)...])
        }
        let url = URL(fileURLWithPath: location)
        guard let status = try FileSystem.status(of: url.resolvingSymlinksInPath()) else {
            throw EngineError.badInput("\(location) does not exist; give an OCI layout directory, a docker save archive or a rootfs tarball")
        }
        let base = url.lastPathComponent.split(separator: ".").first.map(String.init) ?? "image"
        let name = try options.name ?? Self.defaultName(repository: base, tag: tag)
        if status.isDirectory {
            return try await ingest(from: LayoutImageSource(directory: url.resolvingSymlinksInPath(), tag: tag), name: name, options: options, progress: progress)
        }
        if DockerArchiveSource.looksLikeDockerArchive(url) {
            let temporary = try home.makeTemporaryDirectory(prefix: "docker-archive")
            defer { try? FileSystem.remove(temporary) }
            progress?("unpacking \(url.lastPathComponent)", 0, 0)
            let source = try DockerArchiveSource.open(url, tag: tag, temporaryRoot: temporary)
            return try await ingest(from: source, name: name, options: options, progress: progress)
        }
        guard tag == nil else { throw EngineError.badInput("\(location) is a rootfs tarball, which has no tags; drop ':\(tag ?? "")'") }
        return try await ingest(from: RootfsTarballSource(file: url), name: name, options: options, progress: progress)
    }

    /// A name for an image from its repository and tag: `library/python` + `3.12-slim` → `python-3.12-slim`.
    static func defaultName(repository: String, tag: String?) throws -> String {
        let last = repository.split(separator: "/").last.map(String.init) ?? repository
        var name = last + (tag.map { $0 == "latest" ? "" : "-\($0)" } ?? "")
        name = String(name.map { $0.isLetter || $0.isNumber || "._-".contains($0) ? $0 : "-" }.prefix(Names.maxLength))
        while name.contains("..") { name = name.replacingOccurrences(of: "..", with: ".") }
        try Names.validate(name, kind: "image")
        return name
    }

    /// The one path every source takes: resolve, fetch and verify blobs, unpack the layers in
    /// order, resolve the user, build the deterministic root filesystem, record the image.
    ///
    /// `defaults` is the config of an image whose source has none (a rootfs tarball, a Debian
    /// root); `sourceName` replaces the source's own description; without `keepLayers` the layer
    /// blobs are dropped once the root filesystem is built (a Debian root's one big tar).
    func ingest(
        from source: any ImageSource, name: String, options: ImageIngestOptions, progress: PackProgress?,
        defaults: ImageConfig? = nil, sourceName: String? = nil, keepLayers: Bool = true
    ) async throws -> ImageRecord {
        guard (1...16_777_216).contains(options.sizeLimitMiB) else { throw EngineError.badInput("--size-limit must be between 1 and 16777216 MiB") }
        let locks = try beginWriting(name, freeMiB: options.freeMiB)
        defer { locks.unlock() }

        progress?("resolving", 0, 0)
        let resolved = try await source.resolve(platform: options.platform)
        var config = defaults ?? ImageConfig()
        if let descriptor = resolved.config {
            let url = try await source.fetch(descriptor, into: blobs) { _ in }
            let parsed = try OCIImageConfig.decode(try Data(contentsOf: url), what: "image config of \(resolved.source)")
            if let architecture = parsed.architecture, !architecture.isEmpty, architecture != options.platform.architecture {
                throw EngineError.badInput("\(resolved.source) is built for \(parsed.os ?? "linux")/\(architecture), not \(options.platform); pick another tag or --platform")
            }
            config = parsed.imageConfig
        }

        let total = resolved.layers.reduce(Int64(0)) { $0 + $1.size }
        let missing = try resolved.layers.filter { !(try blobs.contains($0.digest)) }
        let needed = missing.reduce(Int64(0)) { $0 + $1.size }
        let free = try FileSystem.freeBytes(at: home.root)
        guard needed + (256 << 20) <= free else {
            throw EngineError.badInput("\(resolved.source) needs \(needed >> 20) MiB of layers but the store at \(home.root.path) has \(free >> 20) MiB free; free space and retry")
        }
        var layerFiles: [URL] = []
        let done = Locked(Int64(0))
        for layer in resolved.layers {
            let url = try await source.fetch(layer, into: blobs) { bytes in
                let now = done.withLock { $0 += bytes; return $0 }
                progress?("fetching layers", now, total)
            }
            layerFiles.append(url)
        }
        let fetchedNow = Set(missing.map(\.digest))

        let work = try home.makeTemporaryDirectory(prefix: "image-\(name)")
        defer { try? FileSystem.remove(work) }
        let root = work.appendingPathComponent("root")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: false)
        let applier = LayerApplier(root: root, limits: .init(maxBytes: Int64(options.sizeLimitMiB) << 20), logger: logger)
        do {
            for (index, (layer, file)) in zip(resolved.layers, layerFiles).enumerated() {
                progress?("unpacking layer \(index + 1)/\(resolved.layers.count) (\(layer.digest.short))", Int64(index), Int64(resolved.layers.count))
                try applier.apply(layer: file, name: "\(index + 1)/\(resolved.layers.count) (\(layer.digest.short))")
            }
        } catch {
            // A layer that cannot be unpacked never will be: keep nothing this attempt brought in.
            try removeUnreferenced(fetchedNow)
            throw error
        }
        let metadata = try applier.finish()
        if let user = config.user {
            let resolvedUser = try ImageUser.resolve(
                user, passwd: try applier.readFile("etc/passwd").map { String(decoding: $0, as: UTF8.self) },
                group: try applier.readFile("etc/group").map { String(decoding: $0, as: UTF8.self) })
            config.uid = resolvedUser.uid
            config.gid = resolvedUser.gid
        }

        progress?("building root filesystem", 0, 0)
        let rootfs = try Ext4Builder(home: home, logger: logger).build(from: root, freeMiB: options.freeMiB, metadata: metadata)
        var record = try record(named: name, rootfs: rootfs) { progress?($0, 0, 0) }
        record.source = sourceName ?? resolved.source
        record.manifestDigest = resolved.manifestDigest
        record.config = config
        record.configBlob = resolved.config?.digest
        if keepLayers {
            record.layers = resolved.layers.map(\.digest)
        } else {
            try removeUnreferenced(fetchedNow, ignoring: name)
        }
        try imageCatalog.put(record)
        logger.info("image ready", metadata: ["image": "\(name)", "source": "\(resolved.source)", "rootfs": "\(rootfs.digest)"])
        return record
    }
}

extension Images {
    /// Removes the layer blobs in `fetched` that no image but `ignored` names.
    func removeUnreferenced(_ fetched: Set<Digest>, ignoring ignored: String? = nil) throws {
        let kept = Set(try imageCatalog.list().filter { $0.name != ignored }.flatMap(\.layers))
        for digest in fetched where !kept.contains(digest) { try? FileSystem.remove(blobs.url(for: digest)) }
    }

    /// Builds a Debian image with mmdebstrap: `suite` from `mirror` (default: the host's
    /// configured Debian mirror) with `packages`, an unprivileged `user` (uid 1000, home
    /// `/home/user`, bash) who runs commands by default, in `/home/user`.
    @discardableResult
    public func buildDebian(
        suite: String, packages: [String], mirror: String? = nil, options: ImageIngestOptions, progress: PackProgress? = nil
    ) async throws -> ImageRecord {
        let builder = DebianRootBuilder(suite: suite, packages: packages, mirror: mirror, logger: logger)
        try builder.validate()
        let name = try options.name ?? Self.defaultName(repository: "debian", tag: suite)
        try Names.validate(name, kind: "image")
        let work = try home.makeTemporaryDirectory(prefix: "debian-\(name)")
        defer { try? FileSystem.remove(work) }
        let tarball = work.appendingPathComponent("root.tar")
        progress?("mmdebstrap \(suite) (\(builder.includedPackages.joined(separator: ",")))", 0, 0)
        try builder.build(to: tarball)
        let home = "/home/\(DebianRootBuilder.userName)"
        let defaults = ImageConfig(
            env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
            workingDir: home, user: DebianRootBuilder.userName)
        let source = "debian:\(suite)" + (packages.isEmpty ? "" : " +" + packages.joined(separator: ","))
        return try await ingest(
            from: RootfsTarballSource(file: tarball), name: name, options: options, progress: progress, defaults: defaults, sourceName: source,
            keepLayers: false)
    }
}
