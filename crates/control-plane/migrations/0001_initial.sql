-- The control plane's state. Every write is one transaction; with WAL and synchronous=FULL a
-- committed transaction is on disk before the API replies.

-- The working config: one document, edited object by object, released as a whole.
CREATE TABLE working_config (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    config_json TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
INSERT INTO working_config (id, config_json, updated_at_ms) VALUES (1, '{}', 0);

-- Immutable versions. A rollback is a new row carrying an older row's config.
CREATE TABLE releases (
    version INTEGER PRIMARY KEY,
    note TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    config_json TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    rollback_of INTEGER REFERENCES releases (version)
);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'editor', 'viewer')),
    sha256 TEXT NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('edge', 'gslb')),
    region TEXT NOT NULL,
    labels_json TEXT NOT NULL,
    addresses_json TEXT NOT NULL,
    last_heartbeat_ms INTEGER NOT NULL,
    -- The last version the node reported as applied, and the last one it rejected and why.
    applied_version INTEGER,
    rejected_version INTEGER,
    last_error TEXT
);
