#if canImport(Glibc)
import Glibc
#endif
import AsyncHTTPClient
import CladeStore
import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// Credentials for a registry (basic auth, or exchanged for a bearer token).
public struct RegistryCredentials: Sendable {
    public var username: String
    public var password: String
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }
}

/// A client of the OCI distribution API for one repository: blob existence, chunked uploads,
/// verified downloads, manifests, and the `WWW-Authenticate` dance (bearer token or basic).
public actor RegistryClient {
    public let reference: RegistryReference
    private let base: String
    private let credentials: RegistryCredentials?
    private let client: HTTPClient
    private let logger: Logger
    private var authorization: String?

    /// Uploads larger than this go up in PATCH chunks of this size.
    static let chunkSize = 8 << 20
    static let manifestLimit = 4 << 20

    /// `connectTimeout` bounds each attempt to connect (the HTTP client retries refused
    /// connections until it passes); the default suits transfers nobody waits on byte by byte.
    public init(
        reference: RegistryReference, insecure: Bool, credentials: RegistryCredentials?, connectTimeout: TimeAmount = .seconds(10),
        logger: Logger = Logger(label: "clade.registry")
    ) {
        self.reference = reference
        self.base = "\(insecure ? "http" : "https")://\(reference.host)/v2/\(reference.repository)"
        self.credentials = credentials
        self.logger = logger
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(
                redirectConfiguration: .follow(max: 5, allowCycles: false), timeout: .init(connect: connectTimeout)))
    }

    public func shutdown() async {
        try? await client.shutdown()
    }

    // MARK: - Requests with authentication

    private func send(
        _ method: HTTPMethod, _ url: String, headers: [(String, String)] = [], body: ByteBuffer? = nil, timeout: TimeAmount = .seconds(120)
    ) async throws -> HTTPClientResponse {
        for attempt in 0..<2 {
            var request = HTTPClientRequest(url: url)
            request.method = method
            for (name, value) in headers { request.headers.add(name: name, value: value) }
            if let authorization { request.headers.replaceOrAdd(name: "Authorization", value: authorization) }
            if let body { request.body = .bytes(body) } else if method == .PUT || method == .POST || method == .PATCH { request.headers.add(name: "Content-Length", value: "0") }
            let response: HTTPClientResponse
            do {
                response = try await client.execute(request, timeout: timeout)
            } catch {
                throw PackError.registry("cannot reach registry \(reference.host) (\(method) \(url)): \(error); check the address, and use --insecure for a plain-HTTP registry")
            }
            guard response.status == .unauthorized else { return response }
            guard attempt == 0 else { break }
            let challenge = response.headers.first(name: "WWW-Authenticate").flatMap(AuthChallenge.init(header:))
            _ = try? await response.body.collect(upTo: 1 << 16)
            try await authenticate(challenge)
        }
        throw PackError.registry("registry \(reference.host) refused the credentials for \(reference.repository) (HTTP 401); check --username and the password")
    }

    private func authenticate(_ challenge: AuthChallenge?) async throws {
        guard let challenge else {
            throw PackError.registry("registry \(reference.host) answered 401 without a WWW-Authenticate challenge")
        }
        switch challenge.scheme {
        case "basic":
            guard let credentials else {
                throw PackError.registry("registry \(reference.host) requires a login; pass --username and the password on stdin (--password-stdin) or in CLADE_REGISTRY_PASSWORD")
            }
            authorization = "Basic " + Data("\(credentials.username):\(credentials.password)".utf8).base64EncodedString()
        case "bearer":
            guard let realm = challenge.parameters["realm"], var components = URLComponents(string: realm) else {
                throw PackError.registry("registry \(reference.host) sent a bearer challenge without a realm")
            }
            var query = components.queryItems ?? []
            if let service = challenge.parameters["service"] { query.append(URLQueryItem(name: "service", value: service)) }
            let scope = challenge.parameters["scope"] ?? "repository:\(reference.repository):pull,push"
            query.append(URLQueryItem(name: "scope", value: scope))
            components.queryItems = query
            guard let tokenURL = components.string else { throw PackError.registry("bad token realm '\(realm)'") }
            var request = HTTPClientRequest(url: tokenURL)
            if let credentials {
                request.headers.add(name: "Authorization", value: "Basic " + Data("\(credentials.username):\(credentials.password)".utf8).base64EncodedString())
            }
            let response = try await client.execute(request, timeout: .seconds(30))
            let body = try await response.body.collect(upTo: 1 << 20)
            guard response.status == .ok else {
                throw PackError.registry("the token service \(realm) refused access to \(scope) (HTTP \(response.status.code)); check --username and the password")
            }
            struct Token: Decodable {
                var token: String?
                var access_token: String?
            }
            let token = try? JSONDecoder().decode(Token.self, from: Data(body.readableBytesView))
            guard let value = token?.token ?? token?.access_token else { throw PackError.registry("the token service \(realm) returned no token") }
            authorization = "Bearer \(value)"
        default:
            throw PackError.registry("registry \(reference.host) asks for '\(challenge.scheme)' authentication, which clade does not speak")
        }
    }

    private func failure(_ response: HTTPClientResponse, _ what: String) async -> PackError {
        let body = (try? await response.body.collect(upTo: 1 << 16)).map { String(buffer: $0) } ?? ""
        let detail = body.trimmingCharacters(in: .whitespacesAndNewlines).prefix(300)
        return PackError.registry("\(what) failed at \(reference.host): HTTP \(response.status.code)\(detail.isEmpty ? "" : ": \(detail)")")
    }

    // MARK: - Blobs

    /// Whether the repository already has the blob.
    public func hasBlob(_ digest: Digest) async throws -> Bool {
        let response = try await send(.HEAD, "\(base)/blobs/\(digest)")
        switch response.status.code {
        case 200: return true
        case 404: return false
        default: throw await failure(response, "checking blob \(digest.short)")
        }
    }

    /// Uploads a file as blob `digest`: one PUT for small blobs, PATCH chunks then PUT for large ones.
    public func uploadBlob(_ file: URL, digest: Digest, size: Int64, progress: (Int64) -> Void = { _ in }) async throws {
        let start = try await send(.POST, "\(base)/blobs/uploads/")
        guard start.status == .accepted, var location = start.headers.first(name: "Location") else {
            throw await failure(start, "starting the upload of blob \(digest.short)")
        }
        let fd = try FileSystem.open(file, flags: O_RDONLY | O_CLOEXEC)
        defer { close(fd) }
        var offset: Int64 = 0
        var last: ByteBuffer?
        while offset < size {
            let count = Int(min(Int64(Self.chunkSize), size - offset))
            var buffer = ByteBuffer()
            buffer.reserveCapacity(count)
            let read = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { pointer in
                let done = pread(fd, pointer.baseAddress, count, off_t(offset))
                guard done == count else { throw StoreError.sizeMismatch(path: file.path, expected: size, actual: offset + Int64(max(done, 0))) }
                return done
            }
            let isLast = offset + Int64(read) >= size
            if isLast && offset == 0 {
                last = buffer  // a small blob: one PUT carries it
                offset += Int64(read)
                break
            }
            let url = resolve(location)
            let patch = try await send(.PATCH, url, headers: [
                ("Content-Type", "application/octet-stream"), ("Content-Range", "\(offset)-\(offset + Int64(read) - 1)"),
                ("Content-Length", "\(read)"),
            ], body: buffer, timeout: .seconds(600))
            guard patch.status == .accepted, let next = patch.headers.first(name: "Location") else {
                throw await failure(patch, "uploading blob \(digest.short) at byte \(offset)")
            }
            _ = try? await patch.body.collect(upTo: 1 << 16)
            location = next
            offset += Int64(read)
            progress(Int64(read))
        }
        let url = resolve(location)
        let separator = url.contains("?") ? "&" : "?"
        let body = last ?? ByteBuffer()
        let put = try await send(.PUT, "\(url)\(separator)digest=\(digest)", headers: [
            ("Content-Type", "application/octet-stream"), ("Content-Length", "\(body.readableBytes)"),
        ], body: body, timeout: .seconds(600))
        guard put.status == .created else { throw await failure(put, "finishing the upload of blob \(digest.short)") }
        _ = try? await put.body.collect(upTo: 1 << 16)
        if let last { progress(Int64(last.readableBytes)) }
    }

    /// Downloads blob `digest` into `target` through a partial file beside it (`.HEX.partial`),
    /// checking size and digest as it streams; the file appears under `target` only when both
    /// match. A partial file left by an interrupted download is resumed with a `Range` request
    /// (its bytes are hashed again first); a registry that ignores the range sends the whole
    /// blob, and a resumed download whose digest does not match is retried once from byte 0.
    /// Returns the bytes fetched over the network.
    @discardableResult
    public func downloadBlob(_ digest: Digest, size: Int64, to target: URL, progress: (Int64) -> Void = { _ in }) async throws -> Int64 {
        let partial = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).partial")
        do {
            return try await download(digest, size: size, partial: partial, target: target, resume: true, progress: progress)
        } catch is ResumedDownloadMismatch {
            logger.warning("a resumed download did not match its digest; downloading it again from the start", metadata: ["blob": "\(digest.short)"])
            return try await download(digest, size: size, partial: partial, target: target, resume: false, progress: progress)
        }
    }

    private func download(
        _ digest: Digest, size: Int64, partial: URL, target: URL, resume: Bool, progress: (Int64) -> Void
    ) async throws -> Int64 {
        var hasher = DigestHasher()
        var offset: Int64 = 0
        if resume, let status = try FileSystem.status(of: partial), status.isRegularFile, status.size > 0, status.size < size {
            offset = try Self.hash(partial, into: &hasher)
        } else {
            try? FileSystem.remove(partial)
        }
        let what = "blob \(digest.short) from \(reference.host)"
        let response = try await send(.GET, "\(base)/blobs/\(digest)", headers: offset > 0 ? [("Range", "bytes=\(offset)-")] : [], timeout: .seconds(3600))
        if response.status == .ok, offset > 0 {
            offset = 0  // the registry sent the whole blob
            hasher = DigestHasher()
        } else if response.status == .partialContent {
            guard offset > 0, response.headers.first(name: "Content-Range")?.hasPrefix("bytes \(offset)-") == true else {
                throw PackError.malformed(what: what, reason: "the registry answered a range this download did not ask for")
            }
        } else if response.status != .ok {
            throw await failure(response, "downloading blob \(digest.short)")
        }
        if let length = response.headers.first(name: "Content-Length").flatMap({ Int64($0) }), length != size - offset {
            throw PackError.sizeMismatch(what: what, declared: size - offset, actual: length)
        }
        let fd = try FileSystem.open(partial, flags: O_WRONLY | O_CREAT | O_CLOEXEC | (offset > 0 ? O_APPEND : O_TRUNC), mode: 0o644)
        var closed = false
        defer { if !closed { close(fd) } }
        progress(offset)
        var received = offset
        do {
            for try await buffer in response.body {
                received += Int64(buffer.readableBytes)
                guard received <= size else { throw PackError.sizeMismatch(what: what, declared: size, actual: received) }
                try buffer.withUnsafeReadableBytes { bytes in
                    hasher.update(bytes)
                    try writeAll(fd, bytes, path: partial.path)
                }
                // A deterministic stand-in for a pull killed in the middle of a blob.
                if received * 2 >= size, received < size { FaultPoint.pullBlobHalfWritten.crashIfRequested() }
                progress(Int64(buffer.readableBytes))
            }
        } catch let error as PackError {
            try? FileSystem.remove(partial)  // wrong bytes are not worth resuming
            throw error
        }
        guard received == size else { throw PackError.sizeMismatch(what: what, declared: size, actual: received) }
        let actual = hasher.finalize()
        guard actual == digest else {
            try? FileSystem.remove(partial)
            if offset > 0 { throw ResumedDownloadMismatch() }
            throw PackError.digestMismatch(what: "blob from \(reference.host)", expected: digest, actual: actual)
        }
        guard fchmod(fd, 0o444) == 0, fsync(fd) == 0 else { throw StoreError.systemCall("fsync", path: partial.path, errno: errno) }
        close(fd)
        closed = true
        guard rename(partial.path, target.path) == 0 else { throw StoreError.systemCall("rename", path: target.path, errno: errno) }
        return received - offset
    }

    /// Bytes `[offset, offset + length)` of blob `digest` (one frame of a framed rootfs). The
    /// caller verifies what they decompress to; a registry that ignores the range is refused,
    /// since the whole blob is not what was asked for.
    public func downloadRange(_ digest: Digest, offset: Int64, length: Int64) async throws -> [UInt8] {
        let what = "bytes \(offset)-\(offset + length - 1) of blob \(digest.short) from \(reference.host)"
        let response = try await send(.GET, "\(base)/blobs/\(digest)", headers: [("Range", "bytes=\(offset)-\(offset + length - 1)")], timeout: .seconds(120))
        guard response.status == .partialContent else {
            if response.status == .ok {
                _ = try? await response.body.collect(upTo: 0)
                throw PackError.registry("\(reference.host) does not serve byte ranges of blobs, which lazy forks of a root filesystem need; pull the snapshot whole (`clade pull` without --lazy)")
            }
            throw await failure(response, "downloading \(what)")
        }
        guard response.headers.first(name: "Content-Range")?.hasPrefix("bytes \(offset)-\(offset + length - 1)/") == true else {
            throw PackError.malformed(what: what, reason: "the registry answered a range this download did not ask for")
        }
        let body = try await response.body.collect(upTo: Int(length))
        guard body.readableBytes == Int(length) else { throw PackError.sizeMismatch(what: what, declared: length, actual: Int64(body.readableBytes)) }
        return Array(body.readableBytesView)
    }

    /// A resumed download ended with the wrong digest: the kept bytes were bad, start over.
    private struct ResumedDownloadMismatch: Error {}

    /// Feeds a file's bytes to `hasher`; returns how many there were.
    private static func hash(_ file: URL, into hasher: inout DigestHasher) throws -> Int64 {
        let fd = try FileSystem.open(file, flags: O_RDONLY | O_CLOEXEC)
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var total: Int64 = 0
        while true {
            let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard count >= 0 else { throw StoreError.systemCall("read", path: file.path, errno: errno) }
            if count == 0 { return total }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            total += Int64(count)
        }
    }

    // MARK: - Manifests

    /// Stores a manifest under `reference` (a tag or its digest).
    public func putManifest(_ data: Data, mediaType: String, reference tagOrDigest: String) async throws {
        let response = try await send(.PUT, "\(base)/manifests/\(tagOrDigest)", headers: [("Content-Type", mediaType)], body: ByteBuffer(bytes: data))
        guard response.status == .created else { throw await failure(response, "storing manifest \(tagOrDigest)") }
        _ = try? await response.body.collect(upTo: 1 << 16)
    }

    /// Fetches a manifest; its digest is computed here (and must equal `tagOrDigest` when that is a digest).
    /// `accept` lists the manifest media types the caller can read.
    public func getManifest(_ tagOrDigest: String, accept: [String] = [MediaType.imageManifest]) async throws -> (data: Data, digest: Digest) {
        let response = try await send(.GET, "\(base)/manifests/\(tagOrDigest)", headers: accept.map { ("Accept", $0) })
        if response.status == .notFound {
            throw PackError.registry("\(reference.with(reference: tagOrDigest)) does not exist; check the name with the registry, or push it first")
        }
        guard response.status == .ok else { throw await failure(response, "fetching manifest \(tagOrDigest)") }
        let body: ByteBuffer
        do { body = try await response.body.collect(upTo: Self.manifestLimit) } catch {
            throw PackError.tooLarge(what: "manifest \(tagOrDigest)", declared: Int64(Self.manifestLimit) + 1, limit: Int64(Self.manifestLimit), reason: "manifests are small")
        }
        let data = Data(body.readableBytesView)
        let digest = Digest.of(data)
        if tagOrDigest.hasPrefix("sha256:"), digest.description != tagOrDigest {
            throw PackError.digestMismatch(what: "manifest from \(reference.host)", expected: (try? Digest(parsing: tagOrDigest)) ?? digest, actual: digest)
        }
        return (data, digest)
    }

    private func resolve(_ location: String) -> String {
        if location.hasPrefix("http://") || location.hasPrefix("https://") { return location }
        let scheme = base.hasPrefix("https") ? "https" : "http"
        return "\(scheme)://\(reference.host)\(location.hasPrefix("/") ? "" : "/")\(location)"
    }
}
