import CladeEngine
import CladeGuest
import CladeGuestProtocol
import Foundation
import Hummingbird
import NIOCore

/// Guest files over HTTP: metadata as JSON, contents streamed as raw bytes in both directions.
extension CladeAPI {
    func addFileRoutes(to router: Router<Context>) {
        let api = self
        router.get("/v1/sandboxes/:id/fs") { request, context in
            let depth = request.uri.queryParameters.get("depth").map { Int($0) } ?? 1
            guard let depth, depth >= 1, depth <= 64 else { throw APIError(.badRequest, "'depth' is a number from 1 to 64") }
            let agent = try api.engine.processes.agent(for: try api.sandboxID(context))
            return try JSONIO.response(try await agent.list(try Self.guestPath(request), depth: depth))
        }
        router.get("/v1/sandboxes/:id/fs/stat") { request, context in
            try JSONIO.response(try await api.engine.processes.agent(for: try api.sandboxID(context)).stat(try Self.guestPath(request)))
        }
        router.delete("/v1/sandboxes/:id/fs") { request, context in
            try await api.engine.processes.agent(for: try api.sandboxID(context)).remove(try Self.guestPath(request))
            return JSONIO.noContent()
        }
        router.post("/v1/sandboxes/:id/fs/mkdir") { request, context in
            let body = try await JSONIO.decode(PathRequest.self, from: request, limit: api.limits.maxBodyBytes)
            let agent = try api.engine.processes.agent(for: try api.sandboxID(context))
            guard let entry = try await agent.makeDirectory(try Self.absolute(body.path), mode: body.mode) else {
                throw APIError(.badGateway, "the guest agent made the directory but did not describe it")
            }
            return try JSONIO.response(entry, status: .created)
        }
        router.post("/v1/sandboxes/:id/fs/move") { request, context in
            let body = try await JSONIO.decode(PathRequest.self, from: request, limit: api.limits.maxBodyBytes)
            let destination = try Self.absolute(body.destination ?? "", field: "destination")
            let agent = try api.engine.processes.agent(for: try api.sandboxID(context))
            guard let entry = try await agent.move(try Self.absolute(body.path), to: destination) else {
                throw APIError(.badGateway, "the guest agent moved the file but did not describe it")
            }
            return try JSONIO.response(entry)
        }
        router.get("/v1/sandboxes/:id/fs/content") { request, context in
            let path = try Self.guestPath(request)
            let agent = try api.engine.processes.agent(for: try api.sandboxID(context))
            // Fail with a status (not a cut stream) when the file cannot be read at all.
            let entry = try await agent.stat(path)
            guard entry.type == .file else { throw APIError(.badRequest, "\(path) is not a regular file") }
            return NDJSONStream.response(contentType: "application/octet-stream", { emit in
                _ = try await agent.download(path) { data in try await emit(ByteBuffer(bytes: data)) }
            }, onError: { _ in nil })
        }
        router.put("/v1/sandboxes/:id/fs/content") { request, context in
            let path = try Self.guestPath(request)
            let mode = request.uri.queryParameters.get("mode").map { Int($0, radix: 8) } ?? 0o644
            guard let mode else { throw APIError(.badRequest, "'mode' is octal permission bits, e.g. 755") }
            let agent = try api.engine.processes.agent(for: try api.sandboxID(context))
            let body = BodyChunks(request.body)
            let size = try await agent.upload(to: path, mode: mode) { try await body.next(AgentClient.transferChunkBytes) }
            return try JSONIO.response(["path": path, "size": "\(size)"])
        }
        router.get("/v1/sandboxes/:id/fs/watch") { request, context in
            let path = try Self.guestPath(request)
            let recursive = request.uri.queryParameters.get("recursive") == "true"
            let agent = try api.engine.processes.agent(for: try api.sandboxID(context))
            guard try await agent.stat(path).type == .directory else { throw APIError(.badRequest, "\(path) is not a directory") }
            return NDJSONStream.response({ emit in
                try await agent.watch(path, recursive: recursive) { line in
                    let out = WatchLine(event: line.event?.rawValue ?? "fs", op: line.operation, path: line.path, type: line.entry?.type.rawValue)
                    try await emit(try NDJSONStream.line(out))
                    return true
                }
            }, onError: { error in try? NDJSONStream.line(WatchLine(event: "error", message: "\(error)")) })
        }
    }

    static func guestPath(_ request: Request) throws -> String {
        try absolute(request.uri.queryParameters.get("path").map { String($0) } ?? "", field: "path", query: true)
    }

    static func absolute(_ path: String, field: String = "path", query: Bool = false) throws -> String {
        guard path.hasPrefix("/") else {
            throw APIError(.badRequest, query ? "give the guest path as ?path=/absolute/path" : "field '\(field)' must be an absolute path in the guest")
        }
        return path
    }
}

/// Reads a request body in pieces of about `count` bytes, for uploads that never sit whole in memory.
final class BodyChunks: @unchecked Sendable {
    private var iterator: RequestBody.AsyncIterator
    private var pending = ByteBuffer()
    private var ended = false

    init(_ body: RequestBody) { iterator = body.makeAsyncIterator() }

    /// The next piece (at most `count` bytes), or nil at the end.
    func next(_ count: Int) async throws -> Data? {
        while pending.readableBytes < count && !ended {
            if var buffer = try await iterator.next() {
                pending.writeBuffer(&buffer)
            } else {
                ended = true
            }
        }
        guard pending.readableBytes > 0 else { return nil }
        let take = min(count, pending.readableBytes)
        guard let bytes = pending.readBytes(length: take) else { return nil }
        pending.discardReadBytes()
        return Data(bytes)
    }
}
