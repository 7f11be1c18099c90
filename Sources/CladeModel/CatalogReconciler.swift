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
            let indexedSnapshots = Dictionary(uniqueKeysWithValues: try CatalogRows.snapshots(in: db).map { ($0.tag, $0) })
            for (tag, metadata) in snapshotsOnDisk where indexedSnapshots[tag] != metadata {
                try CatalogRows.putSnapshot(metadata, storedBytes: storedBytes[tag] ?? 0, in: db)
                indexedSnapshots[tag] == nil ? changes.added.append("snapshot \(tag)") : changes.updated.append("snapshot \(tag)")
            }
            for tag in indexedSnapshots.keys where snapshotsOnDisk[tag] == nil {
                try CatalogRows.removeSnapshot(tag, in: db)
                changes.removed.append("snapshot \(tag)")
            }
            let indexedSandboxes = Dictionary(uniqueKeysWithValues: try CatalogRows.sandboxes(in: db).map { ($0.id, $0) })
            for (id, record) in sandboxesOnDisk where indexedSandboxes[id] != record {
                try CatalogRows.putSandbox(record, in: db)
                indexedSandboxes[id] == nil ? changes.added.append("sandbox \(id)") : changes.updated.append("sandbox \(id)")
            }
            for id in indexedSandboxes.keys where sandboxesOnDisk[id] == nil {
                try CatalogRows.removeSandbox(id, in: db)
                changes.removed.append("sandbox \(id)")
            }
            let indexedImages = Dictionary(uniqueKeysWithValues: try CatalogRows.images(in: db).map { ($0.name, $0) })
            for (name, record) in imagesOnDisk where indexedImages[name] != record {
                try CatalogRows.putImage(record, in: db)
                indexedImages[name] == nil ? changes.added.append("image \(name)") : changes.updated.append("image \(name)")
            }
            for name in indexedImages.keys where imagesOnDisk[name] == nil {
                try CatalogRows.removeImage(name, in: db)
                changes.removed.append("image \(name)")
            }
            try db.execute(
                sql: "INSERT OR REPLACE INTO catalog_state (key, value) VALUES ('reconciled', ?)",
                arguments: [ISO8601DateFormatter().string(from: Date())])
            return changes
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
