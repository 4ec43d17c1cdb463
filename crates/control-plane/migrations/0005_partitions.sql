-- Partitions: groups of nodes (by their `partition` label) with their own working config and
-- their own line of releases. Everything made before belongs to `default`.
CREATE TABLE partitions (
    name TEXT PRIMARY KEY,
    created_at_ms INTEGER NOT NULL
);
INSERT INTO partitions (name, created_at_ms) VALUES ('default', 0);

CREATE TABLE working_config_p (
    partition TEXT PRIMARY KEY REFERENCES partitions (name) ON DELETE CASCADE,
    config_json TEXT NOT NULL,
    revision INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL
);
INSERT INTO working_config_p (partition, config_json, revision, updated_at_ms)
    SELECT 'default', config_json, revision, updated_at_ms FROM working_config;
DROP TABLE working_config;
ALTER TABLE working_config_p RENAME TO working_config;

-- Versions count per partition. A rollback names an earlier version of the same partition.
CREATE TABLE releases_p (
    partition TEXT NOT NULL REFERENCES partitions (name) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    note TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    config_json TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    rollback_of INTEGER,
    staged INTEGER NOT NULL DEFAULT 0,
    promoted_at_ms INTEGER,
    PRIMARY KEY (partition, version)
);
INSERT INTO releases_p (partition, version, note, created_at_ms, config_json, sha256,
                        rollback_of, staged, promoted_at_ms)
    SELECT 'default', version, note, created_at_ms, config_json, sha256, rollback_of, staged,
           promoted_at_ms
    FROM releases;
DROP TABLE releases;
ALTER TABLE releases_p RENAME TO releases;
