-- The cluster's PKI, replicated like everything else (and carried by snapshots): the CA that
-- signs every node's certificate, and join tokens known only by the sha256 of their secret.

CREATE TABLE cluster_ca (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    cert_pem TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);

CREATE TABLE join_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL CHECK (role IN ('control-plane', 'edge', 'gslb')),
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
