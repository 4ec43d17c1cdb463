-- An operator can take an edge node out of GSLB answers without stopping it.
ALTER TABLE nodes ADD COLUMN drained INTEGER NOT NULL DEFAULT 0;
