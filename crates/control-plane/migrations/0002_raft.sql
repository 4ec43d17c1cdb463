-- Raft: the replicated log, the node's own Raft state, and the latest snapshot. The tables of
-- 0001 become the state machine: only applied log entries change them.

-- One row per log entry; `entry_json` is openraft's `Entry` (log id and payload) in JSON.
CREATE TABLE raft_log (
    log_index INTEGER PRIMARY KEY,
    entry_json TEXT NOT NULL
);

-- Small named values, each JSON: `vote`, `committed`, `last_purged` (the log store's), and
-- `last_applied`, `last_membership` (the state machine's, written in the transaction that
-- applies the entries they describe).
CREATE TABLE raft_meta (
    key TEXT PRIMARY KEY,
    value_json TEXT NOT NULL
);

-- The latest snapshot, built here or received from the leader.
CREATE TABLE raft_snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    meta_json TEXT NOT NULL,
    data BLOB NOT NULL
);

-- Optimistic concurrency for edits: an edit names the revision it started from, and is refused
-- when another edit was applied in between (the API then retries on fresh state).
ALTER TABLE working_config ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
