import CZlib
import CladeEngine
import CladeGuest
import CladeGuestProtocol
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// envd's `/files`: download a file (GET), upload files (POST, multipart or octet-stream,
/// optionally gzip-encoded). Files are written as the user the request names (the template's
/// default user otherwise), creating missing directories, as envd does.
extension E2BService {
    /// Largest multipart upload held in memory; octet-stream uploads are streamed and unbounded.
    static let maxMultipartBytes = 512 << 20

    func addFileTransferRoutes(to router: Router<E2BContext>) {
        let service = self
        router.get("/files") { request, _ in
            do { return try await service.download(request) } catch { return E2BError.from(error).response }
        }
        router.post("/files") { request, _ in
            do { return try await service.upload(request) } catch { return E2BError.from(error).response }
        }
    }

    func download(_ request: Request) async throws -> Response {
        guard let sandbox = envdSandbox(of: request) else { throw E2BError(400, "no sandbox named") }
        let query = request.uri.queryParameters
        guard let raw = query.get("path"), !raw.isEmpty else { throw E2BError(400, "give the file as ?path=") }
        let path = try Self.resolve(String(raw), user: query.get("username").map { String($0) })
        let agent = try engine.processes.agent(for: sandbox)
        let entry: FileEntry
        do { entry = try await agent.stat(path) } catch { throw E2BError(404, "path '\(path)' does not exist") }
        guard entry.type != .directory else { throw E2BError(400, "path '\(path)' is a directory") }
        let producer = ProducerTask()
        let (stream, writer) = BackpressuredStream.make(buffered: 8) { producer.cancel() }
        let task = Task {
            do {
                _ = try await agent.download(path) { data in try await writer.write(ByteBuffer(bytes: data)) }
                writer.finish()
            } catch {
                writer.finish(throwing: error)
            }
        }
        producer.set(task)
        let name = (path as NSString).lastPathComponent.replacingOccurrences(of: "\"", with: "")
        // No Content-Length: a stat's size is not what a read gives for /proc and /sys files
        // (0) or a file still growing, and a body longer than its declared length leaves bytes
        // on a kept-alive connection that the client then reads as the next response ("invalid
        // HTTP version"). Chunked framing always says where the body ends.
        return Response(
            status: .ok,
            headers: [.contentType: "application/octet-stream", .contentDisposition: "attachment; filename=\"\(name)\""],
            body: ResponseBody(asyncSequence: stream))
    }

    func upload(_ request: Request) async throws -> Response {
        guard let sandbox = envdSandbox(of: request) else { throw E2BError(400, "no sandbox named") }
        let query = request.uri.queryParameters
        let user = query.get("username").map { String($0) }
        let agent = try engine.processes.agent(for: sandbox)
        let contentType = request.headers[.contentType] ?? ""
        let metadata = try Self.uploadMetadata(request.headers)
        var written: [[String: Any]] = []
        if contentType.lowercased().hasPrefix("multipart/form-data") {
            guard let boundary = Self.boundary(contentType) else { throw E2BError(400, "the multipart Content-Type has no boundary") }
            let body: ByteBuffer
            do { body = try await request.body.collect(upTo: Self.maxMultipartBytes) } catch {
                throw E2BError(413, "multipart uploads are limited to \(Self.maxMultipartBytes >> 20) MiB; send larger files as application/octet-stream")
            }
            let parts = try Self.multipartFiles(Data(body.readableBytesView), boundary: boundary)
            guard !parts.isEmpty else { throw E2BError(400, "the multipart body has no file parts") }
            let single = query.get("path").map { String($0) }
            for part in parts {
                guard let target = parts.count == 1 ? (single ?? part.filename) : part.filename, !target.isEmpty else {
                    throw E2BError(400, "each file part needs a filename (the path to write), or give ?path= for a single file")
                }
                let path = try Self.resolve(target, user: user)
                let content = SingleShot(part.content)
                try await write(path, agent: agent, sandbox: sandbox, user: user, metadata: metadata) { content.next() }
                written.append(Self.writeInfo(path, metadata: metadata))
            }
        } else {
            guard let target = query.get("path"), !target.isEmpty else { throw E2BError(400, "give the file as ?path= for an octet-stream upload") }
            let path = try Self.resolve(String(target), user: user)
            let chunks = BodyChunks(request.body)
            let gzip = request.headers[.contentEncoding]?.lowercased() == "gzip"
            let inflater = gzip ? try GzipInflater() : nil
            try await write(path, agent: agent, sandbox: sandbox, user: user, metadata: metadata) {
                guard let inflater else { return try await chunks.next(AgentClient.transferChunkBytes) }
                while true {
                    guard let piece = try await chunks.next(256 << 10) else { return try inflater.finish() }
                    let out = try inflater.inflate(piece)
                    if !out.isEmpty { return out }
                }
            }
            written.append(Self.writeInfo(path, metadata: metadata))
        }
        return Self.json(written)
    }

    /// Writes one file through the agent: missing directories made, the file and those
    /// directories given to `user` (unless root).
    func write(
        _ path: String, agent: AgentClient, sandbox: String, user: String?, metadata: [String: String] = [:],
        from source: @escaping @Sendable () async throws -> Data?
    ) async throws {
        let parent = (path as NSString).deletingLastPathComponent
        var created: [String] = []
        var probe = parent
        while probe != "/" && !probe.isEmpty, (try? await agent.stat(probe)) == nil {
            created.append(probe)
            probe = (probe as NSString).deletingLastPathComponent
        }
        if !created.isEmpty { _ = try await agent.makeDirectory(parent, parents: true) }
        do {
            _ = try await agent.upload(to: path, mode: 0o644, from: source)
        } catch {
            throw E2BError(APIError.from(error).status.code == 404 ? 404 : 400, "cannot write \(path): \(error)")
        }
        if !metadata.isEmpty {
            do { try await agent.setMetadata(metadata, on: path) } catch { throw E2BError(APIError.from(error).status.code, "cannot set metadata on \(path): \(error)") }
        }
        var lastEvent = "EVENT_TYPE_WRITE"
        if let owner = await owner(user, sandbox: sandbox) {
            _ = try? await agent.run(ProcessSpec(args: ["chown", "\(owner):"] + [path] + created, user: "root")) { _ in }
            lastEvent = "EVENT_TYPE_CHMOD"
        }
        await watchers.settle(path, type: lastEvent)
    }

    /// envd ≥ 0.6.2's file metadata: one `X-Metadata-<key>: <value>` header per entry, applied to
    /// every file of the upload. Keys are HTTP tokens (lowercased), values printable ASCII.
    static func uploadMetadata(_ headers: HTTPFields) throws -> [String: String] {
        var metadata: [String: String] = [:]
        let prefix = "x-metadata-"
        for field in headers where field.name.canonicalName.hasPrefix(prefix) {
            let key = String(field.name.canonicalName.dropFirst(prefix.count))
            guard !key.isEmpty else { throw E2BError(400, "a metadata header needs a key after X-Metadata-") }
            guard field.value.unicodeScalars.allSatisfy({ (0x20...0x7E).contains($0.value) }) else {
                throw E2BError(400, "the value of metadata '\(key)' must be printable US-ASCII")
            }
            metadata[key] = field.value
        }
        return metadata
    }

    /// A `WriteInfo` of an uploaded file.
    static func writeInfo(_ path: String, metadata: [String: String]) -> [String: Any] {
        var info: [String: Any] = ["name": (path as NSString).lastPathComponent, "type": "file", "path": path]
        if !metadata.isEmpty { info["metadata"] = metadata }
        return info
    }

    static func boundary(_ contentType: String) -> String? {
        for parameter in contentType.split(separator: ";").dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if pair.count == 2, pair[0].lowercased() == "boundary" { return pair[1].trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
        }
        return nil
    }

    /// The parts of a `multipart/form-data` body that carry a file: (filename, content).
    static func multipartFiles(_ body: Data, boundary: String) throws -> [(filename: String?, content: Data)] {
        let delimiter = Data("--\(boundary)".utf8)
        var parts: [(String?, Data)] = []
        var cursor = body.startIndex
        guard let first = body.range(of: delimiter, in: cursor..<body.endIndex) else { throw E2BError(400, "the multipart body does not contain its boundary") }
        cursor = first.upperBound
        let separator = Data("\r\n\r\n".utf8)
        while cursor < body.endIndex {
            if body[cursor...].starts(with: Data("--".utf8)) { break }
            guard let headerEnd = body.range(of: separator, in: cursor..<body.endIndex) else { throw E2BError(400, "a multipart part has no header end") }
            let headers = String(decoding: body[cursor..<headerEnd.lowerBound], as: UTF8.self)
            guard let next = body.range(of: Data("\r\n".utf8) + delimiter, in: headerEnd.upperBound..<body.endIndex) else {
                throw E2BError(400, "a multipart part is not terminated by its boundary")
            }
            let content = body.subdata(in: headerEnd.upperBound..<next.lowerBound)
            var filename: String?
            var isFile = false
            for line in headers.split(separator: "\r\n") where line.lowercased().hasPrefix("content-disposition:") {
                for item in line.split(separator: ";").dropFirst() {
                    let pair = item.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                    guard pair.count == 2 else { continue }
                    let value = pair[1].trimmingCharacters(in: CharacterSet(charactersIn: "\""))
                    if pair[0] == "filename" { filename = value; isFile = true }
                    if pair[0] == "name", value == "file" { isFile = true }
                }
            }
            if isFile { parts.append((filename, content)) }
            cursor = next.upperBound
        }
        return parts
    }
}

/// Hands out one piece of data, then nil.
final class SingleShot: @unchecked Sendable {
    private let lock = NSLock()
    private var data: Data?
    init(_ data: Data) { self.data = data }
    func next() -> Data? {
        lock.withLock {
            defer { data = nil }
            return data
        }
    }
}

/// Streaming gzip decoding with zlib.
final class GzipInflater: @unchecked Sendable {
    private var stream = z_stream()
    private var ended = false

    init() throws {
        // 16 + MAX_WBITS: expect a gzip header.
        guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw E2BError(500, "zlib could not start a gzip decoder")
        }
    }

    deinit { inflateEnd(&stream) }

    func inflate(_ input: Data) throws -> Data {
        guard !ended else { return Data() }
        var output = Data()
        var input = input
        let chunk = 64 << 10
        var buffer = [UInt8](repeating: 0, count: chunk)
        try input.withUnsafeMutableBytes { (raw: UnsafeMutableRawBufferPointer) in
            stream.next_in = raw.bindMemory(to: Bytef.self).baseAddress
            stream.avail_in = uInt(raw.count)
            repeat {
                let status = buffer.withUnsafeMutableBufferPointer { out -> Int32 in
                    stream.next_out = out.baseAddress
                    stream.avail_out = uInt(chunk)
                    return CZlib.inflate(&stream, Z_NO_FLUSH)
                }
                guard status == Z_OK || status == Z_STREAM_END || status == Z_BUF_ERROR else {
                    throw E2BError(400, "the upload is not valid gzip (zlib status \(status))")
                }
                output.append(contentsOf: buffer[0..<(chunk - Int(stream.avail_out))])
                if status == Z_STREAM_END { ended = true; break }
                if status == Z_BUF_ERROR { break }
            } while stream.avail_out == 0 || stream.avail_in > 0
        }
        return output
    }

    /// Nil at a proper end of stream; an error when the gzip data stopped half-way.
    func finish() throws -> Data? {
        guard ended else { throw E2BError(400, "the gzip upload ended before its end of stream") }
        return nil
    }
}
