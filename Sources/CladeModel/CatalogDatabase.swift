import CladeStore
import Foundation
import GRDB

/// The store's SQLite catalog (`state/catalog.sqlite`, WAL): an index of images, snapshots,
/// sandboxes and their lineage, plus the daemon's jobs and the journal of operations in flight.
///
/// Every clade process on a host (CLI commands and the daemon) opens the same file; SQLite's
/// locking makes their writes safe, and write transactions begin `IMMEDIATE` with a busy timeout
/// so that two processes queue instead of failing. The directories under the home stay the
/// content (a snapshot directory is self-contained and portable); the catalog is written in the
/// same step as they are, and ``CatalogReconciler`` rebuilds it from them when it is new, lost
/// or behind (a process killed between the two writes).
public final class CatalogDatabase: Sendable {
    public let path: String
    let pool: DatabasePool

    public static func url(in home: CladeHome) -> URL { home.state.appendingPathComponent("catalog.sqlite") }

    private static let openCatalogs = OpenCatalogs()

    /// The process-wide handle for `home`'s catalog, opened (and migrated) on first use.
    public static func shared(_ home: CladeHome) throws -> CatalogDatabase {
        try openCatalogs.catalog(for: home)
    }

    /// Opens a separate handle (tests use two to act like two processes).
    public static func openUncached(_ home: CladeHome) throws -> CatalogDatabase {
        try home.prepare()
        let url = url(in: home)
        let isNew = !((try? FileSystem.exists(url)) ?? false)
        let database = try CatalogDatabase(path: url.path)
        let reconciledBefore = try database.read {
            try Int.fetchOne($0, sql: "SELECT COUNT(*) FROM catalog_state WHERE key = 'reconciled'") ?? 0
        }
        if isNew || reconciledBefore == 0 {
            try CatalogReconciler(home: home, database: database).reconcile()
        }
        return database
    }

    private init(path: String) throws {
        self.path = path
        var configuration = Configuration()
        configuration.busyMode = .timeout(30)
        // GRDB opens a pool's write transactions IMMEDIATE: the write lock is taken first and a
        // second process waits its turn (up to the busy timeout) instead of failing mid-transaction.
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            try CatalogSchema.migrator.migrate(pool)
        } catch {
            throw ModelError.catalog(path: path, reason: "\(error)")
        }
    }

    /// Runs `body` in a read transaction; database failures become ``ModelError/catalog(path:reason:)``.
    public func read<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            return try pool.read(body)
        } catch let error as DatabaseError {
            throw ModelError.catalog(path: path, reason: error.description)
        }
    }

    /// Runs `body` in one write transaction (all of it or nothing).
    public func write<T>(_ body: (Database) throws -> T) throws -> T {
        do {
            return try pool.write(body)
        } catch let error as DatabaseError {
            throw ModelError.catalog(path: path, reason: error.description)
        }
    }

    /// `wal` when the catalog is in write-ahead-log mode (it always should be).
    public func journalMode() throws -> String {
        try read { try String.fetchOne($0, sql: "PRAGMA journal_mode") ?? "" }
    }

    /// What `clade doctor` reports about the catalog.
    public struct Health: Sendable {
        public var journalMode: String
        /// `ok`, or SQLite's `PRAGMA quick_check` findings.
        public var integrity: String
        public var snapshots: Int
        public var sandboxes: Int
    }

    public func health() throws -> Health {
        try read { db in
            Health(
                journalMode: try String.fetchOne(db, sql: "PRAGMA journal_mode") ?? "",
                integrity: try String.fetchAll(db, sql: "PRAGMA quick_check").joined(separator: "; "),
                snapshots: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM snapshots") ?? 0,
                sandboxes: try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sandboxes") ?? 0)
        }
    }
}

/// One open catalog per home per process, so every component shares one connection pool.
private struct OpenCatalogs: Sendable {
    private let byPath = Locked<[String: CatalogDatabase]>([:])

    func catalog(for home: CladeHome) throws -> CatalogDatabase {
        try byPath.withLock { byPath in
            let key = CatalogDatabase.url(in: home).path
            if let open = byPath[key], (try? FileSystem.exists(URL(fileURLWithPath: key))) == true { return open }
            let database = try CatalogDatabase.openUncached(home)
            byPath[key] = database
            return database
        }
    }
}
