-- locksmith embedded store, schema version 1. Never edit after release:
-- add a new numbered file instead.

-- Store-wide values: store_id, boot_id, fence (last fence issued).
CREATE TABLE meta (
    k TEXT PRIMARY KEY,
    v ANY
) STRICT, WITHOUT ROWID;

-- One row per held key, clustered by key: a grant reads and writes one
-- b-tree (indexes are few on purpose, every one is written on every grant).
-- A grant of several keys has several rows with consecutive fences sharing
-- grant_id (the first key's fence), grant_keys and secret.
CREATE TABLE holds (
    key           TEXT    NOT NULL,
    fence         INTEGER NOT NULL,
    grant_id      INTEGER NOT NULL,
    grant_keys    INTEGER NOT NULL,
    secret        TEXT    NOT NULL,
    mode          TEXT    NOT NULL,
    slots         INTEGER,
    scope         TEXT    NOT NULL,
    owner         TEXT    NOT NULL,
    task          TEXT,
    metadata      TEXT,
    hostname      TEXT    NOT NULL,
    boot_id       TEXT    NOT NULL,
    pid           INTEGER NOT NULL,
    pid_start     INTEGER,
    acquired_mono INTEGER NOT NULL,
    acquired_wall INTEGER NOT NULL,
    seen_mono     INTEGER NOT NULL,
    expires_mono  INTEGER,
    ttl_ms        INTEGER,
    max_hold_ms   INTEGER,
    request_id    TEXT,
    renew_logged  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (key, fence)
) STRICT, WITHOUT ROWID;
-- Finds the other keys of a multi-key grant (single-key grants stay out of it).
CREATE INDEX holds_of_multi_key_grants ON holds (grant_id) WHERE grant_keys > 1;
CREATE INDEX holds_by_request ON holds (request_id) WHERE request_id IS NOT NULL;

-- One row per queued request; seq is the arrival order.
CREATE TABLE queue (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    priority    INTEGER NOT NULL,
    mode        TEXT    NOT NULL,
    slots       INTEGER,
    scope       TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    task        TEXT,
    hostname    TEXT    NOT NULL,
    boot_id     TEXT    NOT NULL,
    pid         INTEGER NOT NULL,
    pid_start   INTEGER,
    since_mono  INTEGER NOT NULL,
    since_wall  INTEGER NOT NULL,
    alive_until INTEGER NOT NULL,
    wake        TEXT    NOT NULL
) STRICT;

-- The keys of each queued request.
CREATE TABLE queue_keys (
    key   TEXT    NOT NULL,
    seq   INTEGER NOT NULL REFERENCES queue (seq) ON DELETE CASCADE,
    scope TEXT    NOT NULL,
    PRIMARY KEY (key, seq)
) STRICT, WITHOUT ROWID;
CREATE INDEX queue_keys_by_seq ON queue_keys (seq);

-- The audit history.
CREATE TABLE events (
    id       INTEGER PRIMARY KEY,
    at_wall  INTEGER NOT NULL,
    key      TEXT    NOT NULL,
    kind     TEXT    NOT NULL,
    owner    TEXT    NOT NULL,
    task     TEXT,
    fence    INTEGER,
    grant_id INTEGER,
    reason   TEXT,
    detail   TEXT
) STRICT;
CREATE INDEX events_by_key ON events (key, id);
