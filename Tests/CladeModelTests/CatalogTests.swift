import CladeStore
import Foundation
import GRDB
import Testing

@testable import CladeModel

/// The SQLite catalog: schema, WAL, reconciliation with the directories, lineage queries, the
/// operation journal and jobs, and two handles (as two processes would) writing at once.
@Suite struct CatalogTests {
    static let digest = Digest.of(Data("catalog test".utf8))

    static func temporaryHome() -> CladeHome {
        CladeHome(root: FileManager.default.temporaryDirectory.appendingPathComponent("clade-catalog-\(UUID().uuidString.prefix(8))"))
    }

    static func metadata(_ tag: String, parent: SnapshotMetadata? = nil) -> SnapshotMetadata {
        SnapshotMetadata(
            tag: tag, id: UUID().uuidString.lowercased(), createdAt: Date(timeIntervalSince1970: 1_795_000_000),
            hypervisor: .init(name: "qemu", version: "test"),
            machine: .init(type: "microvm", vcpus: 1, memoryMiB: 64, devices: ["virtio-blk-device"], kernelCommandLine: "console=ttyS0", accelerator: "tcg"),
            image: "default", kernel: digest, initrd: digest, rootfs: digest,
            diskLayers: [.init(file: "layer-0.qcow2", format: "qcow2", backing: digest)],
            memory: .init(file: "memory", logicalSize: 64 << 20, physicalSize: 0),
            deviceState: .init(file: "devices.state", size: 1, sha256: digest, format: "devices"),
            parent: parent.map { .init(tag: $0.tag, id: $0.id) }, agentProtocolVersion: 1)
    }

    /// Writes a snapshot directory the way a publish leaves it, without telling the catalog.
    static func writeSnapshotDirectory(_ metadata: SnapshotMetadata, home: CladeHome) throws {
        let directory = SnapshotCatalog(home: home).directory(metadata.tag)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try JSONFiles.write(metadata, to: directory.appendingPathComponent(SnapshotMetadata.fileName))
    }

    static func writeSandboxDirectory(_ id: String, snapshot: String?, home: CladeHome) throws -> SandboxRecord {
        let record = SandboxRecord(
            id: id, image: "default", state: .running, pid: 1, agentPort: 40000, mac: "52:54:00:00:00:01", memoryMiB: 64, cpus: 1,
            accelerator: "tcg", createdAt: Date(timeIntervalSince1970: 1_795_000_000), snapshot: snapshot)
        let paths = SandboxPaths(home: home, id: id)
        try FileManager.default.createDirectory(at: paths.directory, withIntermediateDirectories: true)
        try JSONFiles.write(record, to: paths.record)
        return record
    }

    /// The pid of a process that has exited (and been reaped), so no live process has it for now.
    static func deadPid() throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/true")
        try process.run()
        process.waitUntilExit()
        return process.processIdentifier
    }

    @Test func anExistingStoreGainsACatalogInWALModeWithEveryObject() throws {
        let home = Self.temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        try home.prepare()
        let base = Self.metadata("base")
        try Self.writeSnapshotDirectory(base, home: home)
        try Self.writeSnapshotDirectory(Self.metadata("child", parent: base), home: home)
        let sandbox = try Self.writeSandboxDirectory("0123456789ab", snapshot: "base", home: home)
        // Hidden directories are staging or being deleted: never catalogued.
        try Self.writeSnapshotDirectory(Self.metadata(".staging-x-1"), home: home)

        let database = try CatalogDatabase.openUncached(home)
        #expect(try database.journalMode() == "wal")
        #expect(try SnapshotCatalog(home: home).list().map(\.tag) == ["base", "child"])
        #expect(try SandboxCatalog(home: home).indexed() == [sandbox])
        let lineage = try database.read { try Row.fetchAll($0, sql: "SELECT kind, name, parent, relation FROM lineage ORDER BY name") }
        #expect(lineage.map { "\($0["kind"] as String) \($0["name"] as String) \($0["parent"] as String) \($0["relation"] as String)" } == [
            "sandbox 0123456789ab base forked-from", "snapshot child base layered-on",
        ])
    }

    @Test func lineageQueriesWalkTheWholeTree() throws {
        let home = Self.temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        try home.prepare()
        let catalog = SnapshotCatalog(home: home)
        let a = Self.metadata("a")
        let b = Self.metadata("b", parent: a)
        let c = Self.metadata("c", parent: b)
        let d = Self.metadata("d", parent: a)
        for snapshot in [a, b, c, d] {
            try Self.writeSnapshotDirectory(snapshot, home: home)
            try catalog.recordPublished(snapshot.tag)
        }
        #expect(try catalog.descendants(of: "a") == ["b", "d", "c"])
        #expect(try catalog.descendants(of: "c") == [])
        #expect(try catalog.ancestors(of: "c") == ["b", "a"])
        #expect(try catalog.ancestors(of: "a") == [])
        try catalog.recordRemoved("b")
        #expect(try catalog.list().map(\.tag) == ["a", "c", "d"])
    }

    /// A snapshot pulled into the store that pushed it keeps its id under a second tag; both
    /// tags stay listed (the UNIQUE id of schema v1 dropped the first tag's row).
    @Test func twoTagsOfOneSnapshotAreBothListed() throws {
        let home = Self.temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        try home.prepare()
        let catalog = SnapshotCatalog(home: home)
        let base = Self.metadata("base")
        var pulled = base
        pulled.tag = "node-0123"
        for snapshot in [base, pulled] {
            try Self.writeSnapshotDirectory(snapshot, home: home)
            try catalog.recordPublished(snapshot.tag)
        }
        #expect(try catalog.list().map(\.tag) == ["base", "node-0123"])
        try catalog.recordRemoved("node-0123")
        #expect(try catalog.list().map(\.tag) == ["base"])
    }

    /// A store whose v1 catalog lost a tag that way gets it back when it is next opened.
    @Test func theUpgradeRestoresATagTheUniqueIdDropped() throws {
        let home = Self.temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        try home.prepare()
        let base = Self.metadata("base")
        var pulled = base
        pulled.tag = "node-0123"
        for snapshot in [base, pulled] { try Self.writeSnapshotDirectory(snapshot, home: home) }
        // A v1 catalog as the bug left it: only the second tag's row.
        let old = try DatabaseQueue(path: CatalogDatabase.url(in: home).path)
        try CatalogSchema.migrator.migrate(old, upTo: "v2-sandbox-end-times")
        try old.write { db in
            try CatalogRows.putSnapshot(base, storedBytes: 0, in: db)
            try CatalogRows.putSnapshot(pulled, storedBytes: 0, in: db)
            try db.execute(sql: "INSERT OR REPLACE INTO catalog_state (key, value) VALUES ('reconciled', 'x')")
        }
        #expect(try old.read { try CatalogRows.snapshots(in: $0).map(\.tag) } == ["node-0123"])
        try old.close()
        _ = try CatalogDatabase.openUncached(home)
        #expect(try SnapshotCatalog(home: home).list().map(\.tag) == ["base", "node-0123"])
    }

    @Test func reconcilingFollowsTheDirectories() throws {
        let home = Self.temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        try home.prepare()
        let database = try CatalogDatabase.openUncached(home)
        let kept = Self.metadata("kept")
        let gone = Self.metadata("gone")
        for snapshot in [kept, gone] {
            try Self.writeSnapshotDirectory(snapshot, home: home)
            try SnapshotCatalog(home: home).recordPublished(snapshot.tag)
        }
        _ = try Self.writeSandboxDirectory("00000000000a", snapshot: "kept", home: home)
        try FileSystem.remove(SnapshotCatalog(home: home).directory("gone"))
        var replaced = Self.metadata("kept")
        replaced.image = "other"
        try Self.writeSnapshotDirectory(replaced, home: home)

        let changes = try CatalogReconciler(home: home, database: database).reconcile()
        #expect(changes.added == ["sandbox 00000000000a"])
        #expect(changes.updated == ["snapshot kept"])
        #expect(changes.removed == ["snapshot gone"])
        #expect(try SnapshotCatalog(home: home).list() == [replaced])
        #expect(try CatalogReconciler(home: home, database: database).reconcile().isEmpty)
    }

    @Test func theJournalFindsOperationsWhoseProcessDied() throws {
        let home = Self.temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        try home.prepare()
        let journal = OperationJournal(home: home)
        let mine = try journal.begin(kind: .fork, subject: "base", paths: [home.sandboxes.appendingPathComponent("00000000000b")])
        try journal.add(home.snapshots.appendingPathComponent(".staging-x-1"), to: mine)
        #expect(try journal.abandoned().isEmpty)
        #expect(try journal.entries().first?.paths == ["sandboxes/00000000000b", "snapshots/.staging-x-1"])

        let dead = try Self.deadPid()
        let database = try CatalogDatabase.shared(home)
        try database.write { db in
            // A dead pid, and this process's pid with another start time (a reused pid).
            try db.execute(
                sql: "INSERT INTO operations (kind, subject, owner_pid, owner_start, started_at_unix, paths) VALUES ('bake', 'x', ?, '1', 0, '[]')",
                arguments: [Int(dead)])
            try db.execute(
                sql: "INSERT INTO operations (kind, subject, owner_pid, owner_start, started_at_unix, paths) VALUES ('unpack', 'y', ?, '1', 0, '[\"../../etc\", \"/etc\", \"tmp/unpack-1\"]')",
                arguments: [Int(getpid())])
        }
        let abandoned = try journal.abandoned()
        #expect(abandoned.map(\.kind) == ["bake", "unpack"])
        // Paths that would leave the home are never handed to a rollback.
        #expect(abandoned.last?.urls(in: home).map(\.path) == [home.root.appendingPathComponent("tmp/unpack-1").path])
        journal.end(mine)
        for entry in abandoned { journal.end(entry) }
        #expect(try journal.entries().isEmpty)
    }

    @Test func jobsOutliveTheirDaemonAndRunningOnesAreMarkedInterrupted() throws {
        let home = Self.temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        try home.prepare()
        let jobs = JobCatalog(home: home)
        var finished = JobRecord(id: "j1", kind: "pack", state: "running", step: "memory", done: 5, total: 10, error: nil, result: nil, createdAtUnix: 1)
        try jobs.put(finished)
        finished.state = "succeeded"
        finished.result = "{}"
        try jobs.put(finished)
        let running = JobRecord(id: "j2", kind: "pull", state: "running", step: "downloading", done: 1, total: 9, error: nil, result: nil, createdAtUnix: 2)
        try jobs.put(running)
        #expect(try jobs.interruptAbandoned().isEmpty)  // this process still owns j2

        let dead = try Self.deadPid()
        try CatalogDatabase.shared(home).write { try $0.execute(sql: "UPDATE jobs SET owner_pid = ?", arguments: [Int(dead)]) }
        #expect(try jobs.interruptAbandoned() == ["j2"])
        let listed = try jobs.list()
        #expect(listed.map(\.state) == ["succeeded", "interrupted"])
        #expect(listed.last?.error?.contains("resumes from the blobs already downloaded") == true)
        #expect(try jobs.get("j1") == finished)
        // Finished jobs older than the retention go; a running one never does.
        try jobs.put(JobRecord(id: "j3", kind: "push", state: "running", step: "", done: 0, total: 0, error: nil, result: nil, createdAtUnix: 3))
        #expect(try jobs.prune(olderThan: 60, now: Date(timeIntervalSince1970: 1000)) == 2)
        #expect(try jobs.list().map(\.id) == ["j3"])
    }

    @Test func twoHandlesWritingAtOnceLoseNothing() async throws {
        let home = Self.temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        try home.prepare()
        // Two pools on one file behave like two processes: SQLite's file locks serialize them.
        let first = try CatalogDatabase.openUncached(home)
        let second = try CatalogDatabase.openUncached(home)
        let perWriter = 150
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (writer, database) in [first, second].enumerated() {
                group.addTask {
                    for index in 0..<perWriter {
                        let id = String(format: "%02x%010x", writer, index)
                        let record = SandboxRecord(
                            id: id, image: "default", state: .running, pid: Int32(index), agentPort: 1, mac: "52:54:00:00:00:02",
                            memoryMiB: 64, cpus: 1, accelerator: "tcg")
                        try database.write { try CatalogRows.putSandbox(record, in: $0) }
                        _ = try database.read { try CatalogRows.sandboxes(in: $0).count }
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(try first.read { try CatalogRows.sandboxes(in: $0).count } == 2 * perWriter)
        #expect(try second.read { try CatalogRows.sandboxCounts(in: $0) } == ["running": 2 * perWriter])
    }

    @Test func aDamagedCatalogFileGivesAnActionableError() throws {
        let home = Self.temporaryHome()
        defer { try? FileSystem.remove(home.root) }
        try home.prepare()
        try Data(repeating: 0x41, count: 8192).write(to: CatalogDatabase.url(in: home))
        do {
            _ = try CatalogDatabase.openUncached(home)
            Issue.record("a catalog of garbage opened")
        } catch let error as ModelError {
            #expect(error.description.contains(CatalogDatabase.url(in: home).path))
            #expect(error.description.contains("move it aside"))
        }
    }
}
