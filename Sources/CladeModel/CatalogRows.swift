import CladeStore
import Foundation
import GRDB

/// Reading and writing the catalog's object tables inside a transaction, so callers can combine
/// them (e.g. publish a snapshot and close its journal entry in one commit).
public enum CatalogRows {
    static func json<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try JSONFiles.encoder().encode(value), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String, what: String) throws -> T {
        do {
            return try JSONFiles.decoder().decode(type, from: Data(text.utf8))
        } catch let error as ModelError {
            throw error
        } catch let error as DecodingError {
            throw ModelError.corrupt(path: "catalog row for \(what)", reason: error.fieldDescription)
        } catch {
            throw ModelError.corrupt(path: "catalog row for \(what)", reason: "\(error)")
        }
    }

    // MARK: snapshots

    public static func putSnapshot(_ metadata: SnapshotMetadata, storedBytes: Int64, in db: Database) throws {
        try db.execute(
            sql: """
                INSERT OR REPLACE INTO snapshots
                    (tag, id, parent_tag, parent_id, branched_from, image, memory_mib, stored_bytes, created_at, record)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                metadata.tag, metadata.id, metadata.parent?.tag, metadata.parent?.id, metadata.branchedFrom, metadata.image,
                metadata.machine.memoryMiB, storedBytes, ISO8601DateFormatter().string(from: metadata.createdAt), try json(metadata),
            ])
    }

    public static func removeSnapshot(_ tag: String, in db: Database) throws {
        try db.execute(sql: "DELETE FROM snapshots WHERE tag = ?", arguments: [tag])
    }

    public static func snapshots(in db: Database) throws -> [SnapshotMetadata] {
        try Row.fetchAll(db, sql: "SELECT tag, record FROM snapshots ORDER BY tag").map {
            try decode(SnapshotMetadata.self, $0["record"], what: "snapshot \($0["tag"] as String)")
        }
    }

    public static func snapshot(_ tag: String, in db: Database) throws -> SnapshotMetadata? {
        guard let text = try String.fetchOne(db, sql: "SELECT record FROM snapshots WHERE tag = ?", arguments: [tag]) else { return nil }
        return try decode(SnapshotMetadata.self, text, what: "snapshot \(tag)")
    }

    /// Tags of every snapshot layered on `tag`, directly or through others, nearest first.
    public static func descendants(of tag: String, in db: Database) throws -> [String] {
        try String.fetchAll(db, sql: """
            WITH RECURSIVE below(tag, depth) AS (
                SELECT tag, 1 FROM snapshots WHERE parent_tag = ?
                UNION
                SELECT s.tag, below.depth + 1 FROM snapshots s JOIN below ON s.parent_tag = below.tag
                WHERE below.depth < 64
            )
            SELECT tag FROM below ORDER BY depth, tag
            """, arguments: [tag])
    }

    /// `tag`'s parent, grandparent … up to the root.
    public static func ancestors(of tag: String, in db: Database) throws -> [String] {
        try String.fetchAll(db, sql: """
            WITH RECURSIVE above(tag, depth) AS (
                SELECT parent_tag, 1 FROM snapshots WHERE tag = ? AND parent_tag IS NOT NULL
                UNION
                SELECT s.parent_tag, above.depth + 1 FROM snapshots s JOIN above ON s.tag = above.tag
                WHERE s.parent_tag IS NOT NULL AND above.depth < 64
            )
            SELECT tag FROM above ORDER BY depth
            """, arguments: [tag])
    }

    /// Bytes the snapshots' own files occupy on disk (recorded when each was published).
    public static func storedSnapshotBytes(in db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT COALESCE(SUM(stored_bytes), 0) FROM snapshots") ?? 0
    }

    // MARK: sandboxes

    /// Writes a sandbox's row; with `onlyIfMissing` an existing row (possibly newer) is kept.
    public static func putSandbox(_ record: SandboxRecord, onlyIfMissing: Bool = false, in db: Database) throws {
        try db.execute(
            sql: """
                INSERT OR \(onlyIfMissing ? "IGNORE" : "REPLACE") INTO sandboxes
                    (id, snapshot_tag, snapshot_id, image, state, pid, agent_port, created_at, expires_at_unix, record)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
            arguments: [
                record.id, record.snapshot, record.snapshotID, record.image, record.state.rawValue, record.pid.map { Int($0) },
                record.agentPort, ISO8601DateFormatter().string(from: record.createdAt),
                record.expiresAt.map { Int64($0.timeIntervalSince1970.rounded(.down)) }, try json(record),
            ])
    }

    /// Ids of the sandboxes whose end time is at or before `now` (to the second, rounded down:
    /// a superset that the caller narrows with the record itself).
    public static func sandboxIDsEnding(atOrBefore now: Date, in db: Database) throws -> [String] {
        try String.fetchAll(
            db, sql: "SELECT id FROM sandboxes WHERE expires_at_unix IS NOT NULL AND expires_at_unix <= ? ORDER BY id",
            arguments: [Int64(now.timeIntervalSince1970.rounded(.down))])
    }

    public static func removeSandbox(_ id: String, in db: Database) throws {
        try db.execute(sql: "DELETE FROM sandboxes WHERE id = ?", arguments: [id])
    }

    public static func sandbox(_ id: String, in db: Database) throws -> SandboxRecord? {
        guard let text = try String.fetchOne(db, sql: "SELECT record FROM sandboxes WHERE id = ?", arguments: [id]) else { return nil }
        return try decode(SandboxRecord.self, text, what: "sandbox \(id)")
    }

    public static func sandboxes(in db: Database) throws -> [SandboxRecord] {
        try Row.fetchAll(db, sql: "SELECT id, record FROM sandboxes ORDER BY id").map {
            try decode(SandboxRecord.self, $0["record"], what: "sandbox \($0["id"] as String)")
        }
    }

    /// Sandboxes counted by state, for metrics.
    public static func sandboxCounts(in db: Database) throws -> [String: Int] {
        var counts: [String: Int] = [:]
        for row in try Row.fetchAll(db, sql: "SELECT state, COUNT(*) AS n FROM sandboxes GROUP BY state") {
            counts[row["state"]] = row["n"]
        }
        return counts
    }

    // MARK: images

    public static func putImage(_ record: ImageRecord, in db: Database) throws {
        try db.execute(
            sql: "INSERT OR REPLACE INTO images (name, kernel, initrd, rootfs, record) VALUES (?, ?, ?, ?, ?)",
            arguments: [record.name, record.kernel.description, record.initrd.description, record.rootfs.description, try json(record)])
    }

    public static func removeImage(_ name: String, in db: Database) throws {
        try db.execute(sql: "DELETE FROM images WHERE name = ?", arguments: [name])
    }

    public static func images(in db: Database) throws -> [ImageRecord] {
        try Row.fetchAll(db, sql: "SELECT name, record FROM images ORDER BY name").map {
            try decode(ImageRecord.self, $0["record"], what: "image \($0["name"] as String)")
        }
    }
}
