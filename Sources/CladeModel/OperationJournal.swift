import CladeStore
import Foundation
import GRDB

/// The catalog's journal of operations in flight (bake, snapshot, branch, fork, unpack, removal).
///
/// An operation writes its entry before it creates anything and lists the paths it may leave
/// behind; it deletes the entry when it has finished (or undone itself). An entry whose owner
/// process is gone marks an operation that was killed half-way: ``abandoned()`` finds them and
/// the engine rolls each back from its paths.
public struct OperationJournal: Sendable {
    public let home: CladeHome

    public init(home: CladeHome) { self.home = home }

    /// One journal entry.
    public struct Entry: Sendable, Equatable {
        public var id: Int64
        public var kind: String
        public var subject: String
        public var owner: OwnerProcess
        public var startedAtUnix: Int64
        /// Paths relative to the home (so a moved store still resolves them).
        public var paths: [String]

        /// The entry's paths as URLs under `home`, refusing any that would leave it.
        public func urls(in home: CladeHome) -> [URL] {
            paths.compactMap { path in
                guard !path.hasPrefix("/"), !path.split(separator: "/").contains("..") else { return nil }
                return home.root.appendingPathComponent(path)
            }
        }
    }

    /// Opens an entry owned by this process.
    public func begin(kind: OperationKind, subject: String, paths: [URL] = []) throws -> Entry {
        let owner = OwnerProcess.current
        let relative = try encode(paths.map(relativePath))
        let started = Int64(Date().timeIntervalSince1970)
        let id = try CatalogDatabase.shared(home).write { db -> Int64 in
            try db.execute(
                sql: "INSERT INTO operations (kind, subject, owner_pid, owner_start, started_at_unix, paths) VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [kind.rawValue, subject, Int(owner.pid), owner.start, started, relative])
            return db.lastInsertedRowID
        }
        return Entry(id: id, kind: kind.rawValue, subject: subject, owner: owner, startedAtUnix: started, paths: paths.map(relativePath))
    }

    /// Adds a path the operation is about to create (to the stored entry; `entry` itself is not changed).
    public func add(_ path: URL, to entry: Entry) throws {
        let relative = relativePath(path)
        let id = entry.id
        try CatalogDatabase.shared(home).write { db in
            let text = try String.fetchOne(db, sql: "SELECT paths FROM operations WHERE id = ?", arguments: [id]) ?? "[]"
            let paths = ((try? JSONDecoder().decode([String].self, from: Data(text.utf8))) ?? []) + [relative]
            try db.execute(sql: "UPDATE operations SET paths = ? WHERE id = ?", arguments: [try encode(paths), id])
        }
    }

    /// Closes an entry: the operation finished or undid itself.
    public func end(_ entry: Entry) {
        let id = entry.id
        try? CatalogDatabase.shared(home).write { try $0.execute(sql: "DELETE FROM operations WHERE id = ?", arguments: [id]) }
    }

    /// Every open entry.
    public func entries() throws -> [Entry] {
        try CatalogDatabase.shared(home).read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM operations ORDER BY id").map { row in
                let text: String = row["paths"]
                let paths = (try? JSONDecoder().decode([String].self, from: Data(text.utf8))) ?? []
                return Entry(
                    id: row["id"], kind: row["kind"], subject: row["subject"],
                    owner: OwnerProcess(pid: Int32(truncatingIfNeeded: row["owner_pid"] as Int), start: row["owner_start"]),
                    startedAtUnix: row["started_at_unix"], paths: paths)
            }
        }
    }

    /// Entries whose owner process is gone: operations killed half-way.
    public func abandoned() throws -> [Entry] {
        try entries().filter { !$0.owner.isAlive }
    }

    private func relativePath(_ url: URL) -> String {
        let root = home.root.path.hasSuffix("/") ? home.root.path : home.root.path + "/"
        let path = url.standardizedFileURL.path
        return path.hasPrefix(root) ? String(path.dropFirst(root.count)) : path
    }

    private static var pathEncoder: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return encoder
    }

    private func encode(_ paths: [String]) throws -> String {
        String(decoding: try Self.pathEncoder.encode(paths), as: UTF8.self)
    }
}
