import CladeStore
import Foundation
import GRDB

/// A long operation (pack, push, pull) the daemon runs in the background, polled by id.
public struct JobRecord: Codable, Sendable, Equatable {
    public var id: String
    public var kind: String
    /// `running`, `succeeded`, `failed`, or `interrupted` (its daemon stopped while it ran).
    public var state: String
    public var step: String
    public var done: Int64
    public var total: Int64
    public var error: String?
    /// The operation's report once it succeeded.
    public var result: String?
    public var createdAtUnix: Int64

    public init(id: String, kind: String, state: String, step: String, done: Int64, total: Int64, error: String?, result: String?, createdAtUnix: Int64) {
        self.id = id
        self.kind = kind
        self.state = state
        self.step = step
        self.done = done
        self.total = total
        self.error = error
        self.result = result
        self.createdAtUnix = createdAtUnix
    }

    enum CodingKeys: String, CodingKey {
        case id, kind, state, step, done, total, error, result
        case createdAtUnix = "created_at_unix"
    }
}

/// Jobs in the catalog, so they outlive the daemon that ran them.
public struct JobCatalog: Sendable {
    public let home: CladeHome

    public init(home: CladeHome) { self.home = home }

    /// Writes a job (new or updated), owned by this process.
    public func put(_ job: JobRecord) throws {
        let owner = OwnerProcess.current
        try CatalogDatabase.shared(home).write { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO jobs (id, kind, state, step, done, total, error, result, created_at_unix, owner_pid, owner_start)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    job.id, job.kind, job.state, job.step, job.done, job.total, job.error, job.result, job.createdAtUnix,
                    Int(owner.pid), owner.start,
                ])
        }
    }

    public func get(_ id: String) throws -> JobRecord? {
        try CatalogDatabase.shared(home).read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM jobs WHERE id = ?", arguments: [id]).map(Self.job)
        }
    }

    /// Every job, oldest first.
    public func list() throws -> [JobRecord] {
        try CatalogDatabase.shared(home).read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM jobs ORDER BY created_at_unix, id").map(Self.job)
        }
    }

    /// Marks `running` jobs whose owner process is gone as `interrupted`, and returns their ids.
    @discardableResult
    public func interruptAbandoned() throws -> [String] {
        try CatalogDatabase.shared(home).write { db in
            var interrupted: [String] = []
            for row in try Row.fetchAll(db, sql: "SELECT id, kind, owner_pid, owner_start FROM jobs WHERE state = 'running'") {
                let owner = OwnerProcess(pid: Int32(truncatingIfNeeded: row["owner_pid"] as Int), start: row["owner_start"])
                guard !owner.isAlive else { continue }
                let kind: String = row["kind"]
                let hint = kind == JobKind.pull.rawValue
                    ? "start the pull again; it resumes from the blobs already downloaded"
                    : "start the \(kind) again"
                try db.execute(
                    sql: "UPDATE jobs SET state = 'interrupted', error = ? WHERE id = ?",
                    arguments: ["the daemon stopped while this job ran; \(hint)", row["id"] as String])
                interrupted.append(row["id"])
            }
            return interrupted
        }
    }

    /// Deletes finished jobs (succeeded, failed, interrupted) created more than `age` seconds ago,
    /// so the table does not grow without end; returns how many went.
    @discardableResult
    public func prune(olderThan age: TimeInterval, now: Date = Date()) throws -> Int {
        let cutoff = Int64(now.timeIntervalSince1970 - age)
        return try CatalogDatabase.shared(home).write { db in
            try db.execute(sql: "DELETE FROM jobs WHERE state != 'running' AND created_at_unix < ?", arguments: [cutoff])
            return db.changesCount
        }
    }

    private static func job(_ row: Row) -> JobRecord {
        JobRecord(
            id: row["id"], kind: row["kind"], state: row["state"], step: row["step"], done: row["done"], total: row["total"],
            error: row["error"], result: row["result"], createdAtUnix: row["created_at_unix"])
    }
}
