import CladeStore
import Foundation
import GRDB

/// Brings the catalog's object tables in line with the store's directories, which hold the
/// content: a snapshot or sandbox directory with a readable record gets (or updates) its row,
/// a row whose directory is gone is dropped. Runs when a catalog is created (an existing store
/// gains one), when the daemon starts, and after rolling back an interrupted operation.
public struct CatalogReconciler: Sendable {
    public let home: CladeHome
    let database: CatalogDatabase

    public init(home: CladeHome, database: CatalogDatabase) {
        self.home = home
        self.database = database
    }

    /// What a reconciliation changed.
    public struct Changes: Sendable, Equatable {
        public var added: [String] = []
        public var updated: [String] = []
        public var removed: [String] = []
        public var isEmpty: Bool { added.isEmpty && updated.isEmpty && removed.isEmpty }
        public init() {}
    }

    /// The directories are read inside the write transaction: a writer (file first, then row)
    /// whose file this pass read either wrote its row already or waits for this transaction and
    /// writes it afterwards, so a reconciliation never replaces a newer row with older data.
    @discardableResult
    public func reconcile() throws -> Changes {
        try database.write { db in
            let snapshotsOnDisk = try directoryRecords(under: home.snapshots, file: SnapshotMetadata.fileName, as: SnapshotMetadata.self)
            let sandboxesOnDisk = try directoryRecords(under: home.sandboxes, file: "sandbox.json", as: SandboxRecord.self)
            let imagesOnDisk = try imageRecords()
            var storedBytes: [String: Int64] = [:]
            for tag in snapshotsOnDisk.keys { storedBytes[tag] = SnapshotCatalog(home: home).storedBytes(tag) }
            var changes = Changes()
            try Self.sync(
                "snapshot", onDisk: snapshotsOnDisk, indexed: try CatalogRows.snapshots(in: db), key: \.tag, changes: &changes,
                put: { try CatalogRows.putSnapshot($0, storedBytes: storedBytes[$0.tag] ?? 0, in: db) },
                remove: { try CatalogRows.removeSnapshot($0, in: db) })
            try Self.sync(
                "sandbox", onDisk: sandboxesOnDisk, indexed: try CatalogRows.sandboxes(in: db), key: \.id, changes: &changes,
                put: { try CatalogRows.putSandbox($0, in: db) }, remove: { try CatalogRows.removeSandbox($0, in: db) })
            try Self.sync(
                "image", onDisk: imagesOnDisk, indexed: try CatalogRows.images(in: db), key: \.name, changes: &changes,
                put: { try CatalogRows.putImage($0, in: db) }, remove: { try CatalogRows.removeImage($0, in: db) })
            try db.execute(
                sql: "INSERT OR REPLACE INTO catalog_state (key, value) VALUES ('reconciled', ?)",
                arguments: [ISO8601DateFormatter().string(from: Date())])
            return changes
        }
    }

    /// Writes the rows that differ from what is on disk and removes the rows with nothing on disk.
    private static func sync<Record: Equatable>(
        _ kind: String, onDisk: [String: Record], indexed rows: [Record], key: (Record) -> String, changes: inout Changes,
        put: (Record) throws -> Void, remove: (String) throws -> Void
    ) throws {
        let indexed = Dictionary(rows.map { (key($0), $0) }, uniquingKeysWith: { first, _ in first })
        for (name, record) in onDisk.sorted(by: { $0.key < $1.key }) where indexed[name] != record {
            try put(record)
            indexed[name] == nil ? changes.added.append("\(kind) \(name)") : changes.updated.append("\(kind) \(name)")
        }
        for name in indexed.keys.sorted() where onDisk[name] == nil {
            try remove(name)
            changes.removed.append("\(kind) \(name)")
        }
    }

    /// Records of the visible directories under `parent` (names starting with `.` are staging or
    /// being deleted); a directory whose record is missing or unreadable is left out.
    private func directoryRecords<T: Decodable>(under parent: URL, file: String, as type: T.Type) throws -> [String: T] {
        guard try FileSystem.exists(parent) else { return [:] }
        var result: [String: T] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: parent.path) where !name.hasPrefix(".") {
            let url = parent.appendingPathComponent(name).appendingPathComponent(file)
            if let record = try? JSONFiles.read(type, from: url) { result[name] = record }
        }
        return result
    }

    private func imageRecords() throws -> [String: ImageRecord] {
        guard try FileSystem.exists(home.images) else { return [:] }
        var result: [String: ImageRecord] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: home.images.path)
        where name.hasSuffix(".json") && !name.hasPrefix(".") {
            if let record = try? JSONFiles.read(ImageRecord.self, from: home.images.appendingPathComponent(name)) {
                result[record.name] = record
            }
        }
        return result
    }
}
