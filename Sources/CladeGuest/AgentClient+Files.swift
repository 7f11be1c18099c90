import CladeGuestProtocol
import Foundation

extension AgentClient {
    /// Chunk size of streamed reads and writes: big enough to amortise a round trip, small enough
    /// that neither side holds much (the agent caps a chunk at 8 MiB).
    public static let transferChunkBytes = 1024 * 1024

    public func stat(_ path: String) async throws -> FileEntry {
        let response = try await call(AgentRequest(action: .stat, path: path))
        guard let entry = response.entry else { throw GuestError.agent("the agent's stat reply carried no entry") }
        return entry
    }

    public func list(_ path: String, depth: Int = 1) async throws -> [FileEntry] {
        var request = AgentRequest(action: .listDir, path: path)
        request.depth = depth
        return try await call(request, timeout: 120).entries ?? []
    }

    @discardableResult
    public func makeDirectory(_ path: String, parents: Bool = true, mode: Int? = nil) async throws -> FileEntry? {
        var request = AgentRequest(action: .mkdir, path: path, mode: mode)
        request.recursive = parents
        return try await call(request).entry
    }

    @discardableResult
    public func move(_ path: String, to destination: String) async throws -> FileEntry? {
        var request = AgentRequest(action: .move, path: path)
        request.destination = destination
        return try await call(request).entry
    }

    /// Sets user metadata on the guest file at `path` (keys lowercased); answers its entry.
    /// An agent older than the action is ``GuestError/agentLacks(action:)``.
    @discardableResult
    public func setMetadata(_ metadata: [String: String], on path: String) async throws -> FileEntry? {
        var request = AgentRequest(action: .setMetadata, path: path)
        request.metadata = metadata
        do {
            return try await call(request).entry
        } catch GuestError.agent(let message) where message.hasPrefix("unknown action") {
            throw GuestError.agentLacks(action: AgentAction.setMetadata.rawValue)
        }
    }

    public func remove(_ path: String) async throws {
        _ = try await call(AgentRequest(action: .remove, path: path), timeout: 300)
    }

    /// Streams the guest file at `path` into `sink`, a chunk at a time; returns its size.
    public func download(_ path: String, into sink: @escaping @Sendable (Data) async throws -> Void) async throws -> Int64 {
        try await withSession { session in
            var offset: Int64 = 0
            while true {
                var request = AgentRequest(action: .readFile, path: path)
                request.offset = offset
                request.length = Self.transferChunkBytes
                let response = try await session.call(request)
                guard let content = response.content, let data = Data(base64Encoded: content) else {
                    throw GuestError.agent("the agent's read_file reply carried no valid content")
                }
                if !data.isEmpty { try await sink(data) }
                offset += Int64(data.count)
                if response.eof == true || data.isEmpty { return offset }
            }
        }
    }

    /// Writes a guest file from `source` (called until it returns nil), a chunk at a time; the file
    /// appears at `path` whole, only after the last chunk. Returns its size.
    public func upload(to path: String, mode: Int = 0o644, from source: @escaping @Sendable () async throws -> Data?) async throws -> Int64 {
        let upload = UUID().uuidString.lowercased()
        return try await withSession { session in
            var offset: Int64 = 0
            var next = try await source()
            repeat {
                let chunk = next ?? Data()
                next = chunk.isEmpty ? nil : try await source()
                var request = AgentRequest(action: .writeChunk, path: path, mode: mode)
                request.upload = upload
                request.offset = offset
                request.data = chunk.base64EncodedString()
                request.commit = next == nil ? true : nil
                _ = try await session.call(request)
                offset += Int64(chunk.count)
            } while next != nil
            return offset
        }
    }

    /// Streams filesystem events under `path` to `onEvent` until it returns false.
    public func watch(_ path: String, recursive: Bool = false, onEvent: @escaping @Sendable (AgentResponse) async throws -> Bool) async throws {
        var watch = AgentRequest(id: "watch", action: .watch, path: path)
        watch.recursive = recursive
        let request = watch
        try await withSession { session in
            try await session.send(request)
            for try await line in session.lines {
                if let error = line.error { throw GuestError.agent(error) }
                if !(try await onEvent(line)) { return }
            }
        }
    }
}
