import CladeEngine
import CladeGuest
import CladeGuestProtocol
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// envd's `filesystem.Filesystem` Connect service over the agent's file actions.
extension E2BService {
    typealias RPCHandler = (@escaping @Sendable (Request, String) async throws -> Response) -> @Sendable (Request, E2BContext) async throws -> Response

    func addFilesystemRoutes(to router: Router<E2BContext>, rpc: RPCHandler) {
        let service = self
        func unary(_ name: String, _ body: @escaping @Sendable (ProtoJSON, AgentClient, String, String?) async throws -> [String: Any]) {
            router.post(RouterPath("/filesystem.Filesystem/\(name)"), use: rpc { request, id in
                let message = try await ConnectRPC.message(of: request, streaming: false)
                return ConnectRPC.unary(try await body(message, try service.engine.processes.agent(for: id), id, Self.user(of: request)))
            })
        }
        unary("Stat") { message, agent, id, user in
            ["entry": try await service.entry(try await agent.stat(try service.path(message, "path", user: user)), sandbox: id, agent: agent)]
        }
        unary("MakeDir") { message, agent, id, user in
            let path = try service.path(message, "path", user: user)
            if (try? await agent.stat(path)) != nil { throw ConnectError(.alreadyExists, "\(path) already exists") }
            _ = try await agent.makeDirectory(path, parents: true)
            try await service.chown(path, agent: agent, sandbox: id, user: user)
            return ["entry": try await service.entry(try await agent.stat(path), sandbox: id, agent: agent)]
        }
        unary("Move") { message, agent, id, user in
            let destination = try service.path(message, "destination", user: user)
            _ = try await agent.move(try service.path(message, "source", user: user), to: destination)
            return ["entry": try await service.entry(try await agent.stat(destination), sandbox: id, agent: agent)]
        }
        unary("ListDir") { message, agent, id, user in
            let path = try service.path(message, "path", user: user)
            guard try await agent.stat(path).type == .directory else { throw ConnectError(.invalidArgument, "\(path) is not a directory") }
            let depth = max(message.int("depth") ?? 1, 1)
            var entries: [[String: Any]] = []
            // envd walks each directory in name order, so entries come sorted by path.
            for entry in try await agent.list(path, depth: depth).sorted(by: { $0.path < $1.path }) {
                entries.append(try await service.entry(entry, sandbox: id, agent: agent))
            }
            return ["entries": entries]
        }
        unary("Remove") { message, agent, _, user in
            // envd removes like `rm -rf`: a path that is already gone is not an error.
            do {
                try await agent.remove(try service.path(message, "path", user: user))
            } catch let error as GuestError where error.category == .notFound {}
            return [:]
        }
        unary("CreateWatcher") { message, agent, id, user in
            let path = try service.path(message, "path", user: user)
            guard try await agent.stat(path).type == .directory else { throw ConnectError(.invalidArgument, "\(path) is not a directory") }
            var describe: (@Sendable (FileEntry) async -> ProtoJSON?)?
            if message.bool("includeEntry") {
                describe = { entry in
                    guard let fields = try? await service.entry(entry, sandbox: id, agent: agent) else { return nil }
                    return ProtoJSON(fields)
                }
            }
            return ["watcherId": try await service.watchers.create(agent: agent, path: path, recursive: message.bool("recursive"), describe: describe)]
        }
        unary("GetWatcherEvents") { message, _, _, _ in
            guard let watcher = message.string("watcherId") else { throw ConnectError(.invalidArgument, "'watcherId' is required") }
            return ["events": try await service.watchers.drain(watcher).map(\.message)]
        }
        unary("RemoveWatcher") { message, _, _, _ in
            guard let watcher = message.string("watcherId") else { throw ConnectError(.invalidArgument, "'watcherId' is required") }
            await service.watchers.remove(watcher)
            return [:]
        }
        router.post("/filesystem.Filesystem/WatchDir", use: rpc { request, id in
            let message = try await ConnectRPC.message(of: request, streaming: true)
            let path = try service.path(message, "path", user: Self.user(of: request))
            let agent = try service.engine.processes.agent(for: id)
            guard try await agent.stat(path).type == .directory else { throw ConnectError(.invalidArgument, "\(path) is not a directory") }
            let recursive = message.bool("recursive")
            // envd ≥ 0.6.3 describes the entry an event is about, when asked and it still exists.
            let includeEntry = message.bool("includeEntry")
            return ConnectRPC.stream(deadline: ConnectRPC.timeout(of: request), keepalive: Self.keepalive(request, message: ["keepalive": [String: Any]()])) { send in
                try await agent.watch(path, recursive: recursive) { line in
                    if line.event == .watching {
                        try await send(["start": [String: Any]()])
                    } else if var event = Self.filesystemEvent(line, root: path) {
                        if includeEntry, let entry = line.entry { event["entry"] = try? await service.entry(entry, sandbox: id, agent: agent) }
                        try await send(["filesystem": event])
                    }
                    return true
                }
            }
        })
    }

    /// An agent watch line as a `FilesystemEvent`: the name relative to the watched directory.
    static func filesystemEvent(_ line: AgentResponse, root: String) -> [String: Any]? {
        guard let operation = line.operation, let path = line.path else { return nil }
        let types = ["create": "EVENT_TYPE_CREATE", "write": "EVENT_TYPE_WRITE", "remove": "EVENT_TYPE_REMOVE", "rename": "EVENT_TYPE_RENAME", "chmod": "EVENT_TYPE_CHMOD"]
        guard let type = types[operation] else { return nil }
        let prefix = root.hasSuffix("/") ? root : root + "/"
        let name = path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
        return ["name": name, "type": type]
    }

    /// A path field: absolute as given, relative ones from the user's home (as envd resolves them).
    func path(_ message: ProtoJSON, _ field: String, user: String?) throws -> String {
        guard let path = message.string(field), !path.isEmpty else { throw ConnectError(.invalidArgument, "'\(field)' is required") }
        return try Self.resolve(path, user: user)
    }

    static func resolve(_ path: String, user: String?) throws -> String {
        if path.hasPrefix("/") { return path }
        let name = user ?? "user"
        let home = name == "root" ? "/root" : "/home/\(name)"
        if path == "~" { return home }
        if path.hasPrefix("~/") { return home + path.dropFirst(1) }
        return home + "/" + path
    }

    /// Directories the SDK makes belong to the user it acts as (envd creates them as that user).
    func chown(_ path: String, agent: AgentClient, sandbox: String, user: String?) async throws {
        guard let owner = await owner(user, sandbox: sandbox) else { return }
        _ = try? await agent.run(ProcessSpec(args: ["chown", "\(owner):", path], user: "root")) { _ in }
    }

    /// Who files made for a request belong to: the user it names, else the image's user; nil for root.
    func owner(_ user: String?, sandbox: String) async -> String? {
        var owner = user
        if owner == nil { owner = (try? await engine.sandboxes.get(id: sandbox))?.imageConfig?.user }
        guard let owner, !owner.isEmpty, owner != "root", owner != "0" else { return nil }
        return owner
    }

    /// An `EntryInfo` message.
    func entry(_ entry: FileEntry, sandbox: String, agent: AgentClient) async throws -> [String: Any] {
        let names = await users.names(sandbox: sandbox, agent: agent)
        // envd describes a symlink by what it points to: the target's type, and its absolute path.
        var kind = entry.type
        var symlinkTarget = entry.symlinkTarget
        if entry.type == .symlink, let target = entry.symlinkTarget {
            let absolute = Self.normalize(target.hasPrefix("/") ? target : (entry.path as NSString).deletingLastPathComponent + "/" + target)
            symlinkTarget = absolute
            if let pointed = try? await agent.stat(absolute), pointed.type != .symlink { kind = pointed.type }
        }
        let type: String
        switch kind {
        case .file: type = "FILE_TYPE_FILE"
        case .directory: type = "FILE_TYPE_DIRECTORY"
        case .symlink: type = "FILE_TYPE_SYMLINK"
        case .other: type = "FILE_TYPE_UNSPECIFIED"
        }
        var info: [String: Any] = [
            "name": entry.name, "type": type, "path": entry.path, "size": "\(entry.size)", "mode": entry.mode & 0o7777,
            "permissions": Self.permissions(entry), "owner": names.users[entry.uid] ?? "\(entry.uid)", "group": names.groups[entry.gid] ?? "\(entry.gid)",
            "modifiedTime": ProtoJSON.timestamp(entry.modifiedAt),
        ]
        if let target = symlinkTarget { info["symlinkTarget"] = target }
        if let metadata = entry.metadata { info["metadata"] = metadata }
        return info
    }

    /// `path` with `.` and `..` resolved and repeated slashes dropped (no symlinks followed).
    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") where part != "." {
            if part == ".." { _ = parts.popLast() } else { parts.append(part) }
        }
        return "/" + parts.joined(separator: "/")
    }

    /// `drwxr-xr-x`, as `ls -l` and Go's `FileMode.String` write it.
    static func permissions(_ entry: FileEntry) -> String {
        let kind: Character = switch entry.type {
        case .directory: "d"
        case .symlink: "L"
        case .file, .other: "-"
        }
        let letters = Array("rwxrwxrwx")
        var text = String(kind)
        for bit in 0..<9 { text.append(entry.mode & (1 << (8 - bit)) != 0 ? letters[bit] : "-") }
        return text
    }
}

/// User and group names of each sandbox (its `/etc/passwd` and `/etc/group`, read once).
actor E2BUserNames {
    struct Names: Sendable {
        var users: [UInt32: String] = [0: "root"]
        var groups: [UInt32: String] = [0: "root"]
    }

    private var cache: [String: Names] = [:]

    func names(sandbox: String, agent: AgentClient) async -> Names {
        if let names = cache[sandbox] { return names }
        var names = Names()
        for (file, isUser) in [("/etc/passwd", true), ("/etc/group", false)] {
            let collected = DataCollector()
            guard (try? await agent.download(file, into: { collected.append($0) })) != nil else { continue }
            for line in String(decoding: collected.data, as: UTF8.self).split(separator: "\n") {
                let fields = line.split(separator: ":", omittingEmptySubsequences: false)
                guard fields.count > 2, let id = UInt32(fields[2]) else { continue }
                if isUser { names.users[id] = String(fields[0]) } else { names.groups[id] = String(fields[0]) }
            }
        }
        if cache.count > 1000 { cache.removeAll() }
        cache[sandbox] = names
        return names
    }
}

final class DataCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var buffer = Data()
    var data: Data { lock.withLock { buffer } }
    func append(_ more: Data) { lock.withLock { buffer.append(more) } }
}

/// The polling watchers of `CreateWatcher`/`GetWatcherEvents`: each runs an agent watch and
/// keeps the events until the next poll (at most 10,000; older ones are dropped).
actor E2BWatchers {
    struct WatchEvent: Sendable {
        var name: String
        var type: String
        var entry: ProtoJSON?
        var message: [String: Any] {
            var fields: [String: Any] = ["name": name, "type": type]
            if let entry { fields["entry"] = entry.fields }
            return fields
        }
    }

    private struct Watcher {
        var task: Task<Void, Never>
        var root: String
        var recursive: Bool
        var events: [WatchEvent] = []
        var failure: String?
    }

    private var watchers: [String: Watcher] = [:]
    static let maxEvents = 10_000

    /// Starts a watch of `path`; `describe`, when given, adds the `EntryInfo` of each event's entry.
    func create(agent: AgentClient, path: String, recursive: Bool, describe: (@Sendable (FileEntry) async -> ProtoJSON?)? = nil) async throws -> String {
        let id = UUID().uuidString.lowercased()
        let ready = AsyncStream<Void>.makeStream()
        let task = Task {
            do {
                try await agent.watch(path, recursive: recursive) { line in
                    if line.event == .watching { ready.continuation.yield() }
                    if let event = E2BService.filesystemEvent(line, root: path), let name = event["name"] as? String, let type = event["type"] as? String {
                        var entry: ProtoJSON?
                        if let describe, let described = line.entry { entry = await describe(described) }
                        await self.record(id, event: WatchEvent(name: name, type: type, entry: entry))
                    }
                    return !Task.isCancelled
                }
            } catch {
                self.fail(id, "\(error)")
            }
            ready.continuation.finish()
        }
        watchers[id] = Watcher(task: task, root: path, recursive: recursive)
        // Events from before the watch is in place would be lost: answer once it is.
        for await _ in ready.stream { break }
        if let failure = watchers[id]?.failure { throw ConnectError(.internal, "the watch failed: \(failure)") }
        return id
    }

    private func record(_ id: String, event: WatchEvent) {
        watchers[id]?.events.append(event)
        if let count = watchers[id]?.events.count, count > Self.maxEvents { watchers[id]?.events.removeFirst(count - Self.maxEvents) }
    }

    private func fail(_ id: String, _ message: String) { watchers[id]?.failure = message }

    func drain(_ id: String) throws -> [WatchEvent] {
        guard var watcher = watchers[id] else { throw ConnectError(.notFound, "watcher \(id) not found") }
        if let failure = watcher.failure, watcher.events.isEmpty { throw ConnectError(.internal, "the watch ended: \(failure)") }
        let events = watcher.events
        watcher.events = []
        watchers[id] = watcher
        return events
    }

    func remove(_ id: String) {
        watchers.removeValue(forKey: id)?.task.cancel()
    }

    /// Waits (at most `timeout` seconds) until every watcher that covers `path` has seen an
    /// event of `type` for it. The guest reports events on a connection of their own, so
    /// without this an SDK that polls right after its upload returns could miss the upload's
    /// last event, which envd, in the same process as the write, would already have.
    func settle(_ path: String, type: String, timeout: Double = 1) async {
        let deadline = Date().addingTimeInterval(timeout)
        func pending() -> Bool {
            watchers.values.contains { watcher in
                let prefix = watcher.root.hasSuffix("/") ? watcher.root : watcher.root + "/"
                guard path.hasPrefix(prefix) else { return false }
                let name = String(path.dropFirst(prefix.count))
                guard watcher.recursive || !name.contains("/") else { return false }
                return !watcher.events.contains { $0.name == name && $0.type == type }
            }
        }
        while pending(), Date() < deadline {
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
    }
}
