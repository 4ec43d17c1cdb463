-- Staged releases: a staged release goes to nodes labelled `staging` only, until promoted.
ALTER TABLE releases ADD COLUMN staged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE releases ADD COLUMN promoted_at_ms INTEGER;

-- Purges fanned out to every node through the Watch stream. Ids increase by one, in log order;
-- only the newest are kept (a node that missed older ones is sent a purge of everything).
CREATE TABLE purges (
    id INTEGER PRIMARY KEY,
    created_at_ms INTEGER NOT NULL,
    -- The request in the JSON form the API takes: {"url": ...} / {"prefix"|"tag": ...} /
    -- {"all": true}, with "soft".
    request_json TEXT NOT NULL
);
