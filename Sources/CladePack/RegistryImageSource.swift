import CladeStore
import Foundation
import Logging

/// Images from any registry speaking the OCI distribution API (Docker Hub's token flow, basic
/// auth, plain HTTP with `insecure`). Blobs download through a partial file beside their place
/// in the store, so a pull interrupted half-way resumes where it stopped.
public struct RegistryImageSource: ImageSource {
    public let reference: RegistryReference
    private let client: RegistryClient

    public init(reference: RegistryReference, insecure: Bool, credentials: RegistryCredentials?, logger: Logger = Logger(label: "clade.registry")) {
        self.reference = reference
        client = RegistryClient(reference: reference, insecure: insecure, credentials: credentials, logger: logger)
    }

    public func resolve(platform: ImagePlatform) async throws -> ResolvedImage {
        let (data, digest) = try await client.getManifest(reference.reference, accept: ImageMediaType.manifests)
        return try await resolveDocument(data, digest: digest, source: reference.imageName, platform: platform) { entry in
            try await client.getManifest(entry.digest.description, accept: ImageMediaType.manifests)
        }
    }

    public func fetch(_ descriptor: Descriptor, into blobs: BlobStore, progress: @Sendable (Int64) -> Void) async throws -> URL {
        let target = blobs.url(for: descriptor.digest)
        if try FileSystem.exists(target) { return target }
        try blobs.home.prepare()
        try await client.downloadBlob(descriptor.digest, size: descriptor.size, to: target, progress: progress)
        return target
    }

    public func close() async { await client.shutdown() }
}

/// Images in an OCI image layout directory (`DIR` or `DIR:TAG`).
public struct LayoutImageSource: ImageSource {
    public let directory: URL
    /// The `org.opencontainers.image.ref.name` to pick; nil takes the only manifest.
    public let tag: String?
    let sourceName: String

    public init(directory: URL, tag: String?, sourceName: String? = nil) {
        self.directory = directory
        self.tag = tag
        self.sourceName = sourceName ?? directory.path + (tag.map { ":\($0)" } ?? "")
    }

    public func resolve(platform: ImagePlatform) async throws -> ResolvedImage {
        try LayoutReader.requireDirectory(directory, what: "OCI image layout")
        let indexData = try LayoutReader.readSmallFile(directory.appendingPathComponent("index.json"), what: "index.json", root: directory)
        let index = try CanonicalJSON.decode(ImageIndexDocument.self, from: indexData, what: "index.json of \(sourceName)")
        let entry: ImageIndexDocument.Entry
        if let tag {
            let matches = index.manifests.filter { $0.annotations?[AnnotationKey.refName] == tag }
            guard let match = matches.first else {
                let tags = index.manifests.compactMap { $0.annotations?[AnnotationKey.refName] }
                throw PackError.malformed(what: sourceName, reason: "it has no image tagged '\(tag)' (it has: \(tags.isEmpty ? "no tags" : tags.joined(separator: ", ")))")
            }
            entry = match
        } else if index.manifests.count == 1, let only = index.manifests.first {
            entry = only
        } else {
            let platformMatch = try? index.entry(for: platform, what: sourceName)
            guard let platformMatch else {
                throw PackError.malformed(what: sourceName, reason: "it holds \(index.manifests.count) images; name one as DIR:TAG")
            }
            entry = platformMatch
        }
        let data = try readBlob(entry.digest, size: entry.size)
        return try await resolveDocument(data, digest: entry.digest, source: sourceName, platform: platform) { next in
            (try readBlob(next.digest, size: next.size), next.digest)
        }
    }

    private func readBlob(_ digest: Digest, size: Int64) throws -> Data {
        guard size <= ResolvedImage.maxConfigBytes else {
            throw PackError.tooLarge(what: "manifest \(digest.short)", declared: size, limit: ResolvedImage.maxConfigBytes, reason: "manifests are small")
        }
        let data = try LayoutReader.readSmallFile(directory.appendingPathComponent("blobs/sha256/\(digest.hex)"), what: "blob \(digest.short)", root: directory)
        let actual = Digest.of(data)
        guard actual == digest else { throw PackError.digestMismatch(what: "blob in \(sourceName)", expected: digest, actual: actual) }
        return data
    }

    public func fetch(_ descriptor: Descriptor, into blobs: BlobStore, progress: @Sendable (Int64) -> Void) async throws -> URL {
        let file = directory.appendingPathComponent("blobs/sha256/\(descriptor.digest.hex)")
        let url = try blobs.ingestVerified(file, as: descriptor, what: "blob \(descriptor.digest.short) of \(sourceName)")
        progress(descriptor.size)
        return url
    }
}

/// A plain root filesystem tarball (tar, tar.gz or tar.zst): one layer, no config.
public struct RootfsTarballSource: ImageSource {
    public let file: URL

    public init(file: URL) { self.file = file }

    public func resolve(platform: ImagePlatform) async throws -> ResolvedImage {
        guard let status = try FileSystem.status(of: file), status.isRegularFile else {
            throw PackError.notALayout(path: file.path, reason: "it is not a file")
        }
        let (digest, size) = try Digest.ofFile(at: file)
        return try ResolvedImage(
            source: file.path, manifestDigest: nil, config: nil,
            layers: [Descriptor(mediaType: ImageMediaType.tarLayer, digest: digest, size: size)]
        ).validated(what: file.path)
    }

    public func fetch(_ descriptor: Descriptor, into blobs: BlobStore, progress: @Sendable (Int64) -> Void) async throws -> URL {
        let url = try blobs.ingestVerified(file, as: descriptor, what: file.path)
        progress(descriptor.size)
        return url
    }
}
