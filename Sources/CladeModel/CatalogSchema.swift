import GRDB

/// The catalog's tables, created and upgraded by numbered migrations (never edit a shipped one;
/// add the next).
enum CatalogSchema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            // Each object's full record is kept as JSON beside the columns queries use, so a
            // listing decodes rows instead of opening one file per object.
            try db.execute(sql: """
                CREATE TABLE images (
                    name TEXT PRIMARY KEY,
                    kernel TEXT NOT NULL,
                    initrd TEXT NOT NULL,
                    rootfs TEXT NOT NULL,
                    record TEXT NOT NULL
                );
                CREATE TABLE snapshots (
                    tag TEXT PRIMARY KEY,
                    id TEXT NOT NULL UNIQUE,
                    parent_tag TEXT,
                    parent_id TEXT,
                    branched_from TEXT,
                    image TEXT,
                    memory_mib INTEGER NOT NULL,
                    stored_bytes INTEGER NOT NULL DEFAULT 0,
                    created_at TEXT NOT NULL,
                    record TEXT NOT NULL
                );
                CREATE INDEX snapshots_by_parent ON snapshots(parent_tag);
                CREATE TABLE sandboxes (
                    id TEXT PRIMARY KEY,
                    snapshot_tag TEXT,
                    snapshot_id TEXT,
                    image TEXT NOT NULL,
                    state TEXT NOT NULL,
                    pid INTEGER,
                    agent_port INTEGER NOT NULL,
                    created_at TEXT NOT NULL,
                    record TEXT NOT NULL
                );
                CREATE INDEX sandboxes_by_snapshot ON sandboxes(snapshot_tag);
                CREATE VIEW lineage AS
                    SELECT 'snapshot' AS kind, tag AS name, parent_tag AS parent, 'layered-on' AS relation
                        FROM snapshots WHERE parent_tag IS NOT NULL
                    UNION ALL
                    SELECT 'sandbox', id, snapshot_tag, 'forked-from'
                        FROM sandboxes WHERE snapshot_tag IS NOT NULL;
                CREATE TABLE jobs (
                    id TEXT PRIMARY KEY,
                    kind TEXT NOT NULL,
                    state TEXT NOT NULL,
                    step TEXT NOT NULL,
                    done INTEGER NOT NULL,
                    total INTEGER NOT NULL,
                    error TEXT,
                    result TEXT,
                    created_at_unix INTEGER NOT NULL,
                    owner_pid INTEGER NOT NULL,
                    owner_start TEXT NOT NULL
                );
                CREATE TABLE operations (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    kind TEXT NOT NULL,
                    subject TEXT NOT NULL,
                    owner_pid INTEGER NOT NULL,
                    owner_start TEXT NOT NULL,
                    started_at_unix INTEGER NOT NULL,
                    paths TEXT NOT NULL
                );
                CREATE TABLE catalog_state (
                    key TEXT PRIMARY KEY,
                    value TEXT NOT NULL
                );
                """)
        }
        migrator.registerMigration("v2-sandbox-end-times") { db in
            // The reaper runs before every command: an indexed column answers "which sandboxes
            // are past their end time" without reading every record.
            try db.execute(sql: """
                ALTER TABLE sandboxes ADD COLUMN expires_at_unix INTEGER;
                UPDATE sandboxes SET expires_at_unix = CAST(strftime('%s', json_extract(record, '$.expires_at')) AS INTEGER)
                    WHERE json_extract(record, '$.expires_at') IS NOT NULL;
                CREATE INDEX sandboxes_by_end_time ON sandboxes(expires_at_unix) WHERE expires_at_unix IS NOT NULL;
                """)
        }
        migrator.registerMigration("v3-snapshot-ids-shared-by-tags") { db in
            // A snapshot pulled into the store that pushed it (or pulled twice, lazily and
            // whole) keeps its id under a second tag. With `id` UNIQUE, recording that tag's row
            // replaced the first tag's: the snapshot vanished from listings while its files
            // stayed. Ids are not keys; tags are. The rebuilt table drops the constraint, and the
            // next open reconciles the rows with the directories, restoring any lost tag.
            try db.execute(sql: """
                DROP VIEW lineage;
                CREATE TABLE snapshots_by_tag (
                    tag TEXT PRIMARY KEY,
                    id TEXT NOT NULL,
                    parent_tag TEXT,
                    parent_id TEXT,
                    branched_from TEXT,
                    image TEXT,
                    memory_mib INTEGER NOT NULL,
                    stored_bytes INTEGER NOT NULL DEFAULT 0,
                    created_at TEXT NOT NULL,
                    record TEXT NOT NULL
                );
                INSERT INTO snapshots_by_tag SELECT tag, id, parent_tag, parent_id, branched_from, image, memory_mib, stored_bytes, created_at, record FROM snapshots;
                DROP TABLE snapshots;
                ALTER TABLE snapshots_by_tag RENAME TO snapshots;
                CREATE INDEX snapshots_by_parent ON snapshots(parent_tag);
                CREATE INDEX snapshots_by_id ON snapshots(id);
                CREATE VIEW lineage AS
                    SELECT 'snapshot' AS kind, tag AS name, parent_tag AS parent, 'layered-on' AS relation
                        FROM snapshots WHERE parent_tag IS NOT NULL
                    UNION ALL
                    SELECT 'sandbox', id, snapshot_tag, 'forked-from'
                        FROM sandboxes WHERE snapshot_tag IS NOT NULL;
                DELETE FROM catalog_state WHERE key = 'reconciled';
                """)
        }
        return migrator
    }
}
