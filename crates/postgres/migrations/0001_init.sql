-- locksmith PostgreSQL store, schema version 1. Never edit after release:
-- add a new numbered file instead. Runs inside the store's own schema
-- (search_path is set to it); every key column sorts bytewise (COLLATE "C"),
-- so that the range scans of tree locks and prefixes find every key below.

-- Store-wide values: store_id, schema_version, history_retention_ms.
CREATE TABLE meta (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);

-- Fences: unique across the store and never reused. A sequence is not
-- rolled back and is logged ahead of its use; CACHE 1 keeps every session
-- drawing from the same counter, so a later draw is always a larger number.
-- Numbers drawn for a request that is not granted are left unused.
CREATE SEQUENCE fences AS BIGINT MINVALUE 1 CACHE 1 NO CYCLE;

-- One row per held key. A grant of several keys has several rows sharing
-- grant_id (the first key's fence), grant_keys and secret.
CREATE TABLE holds (
    key            TEXT COLLATE "C" NOT NULL,
    fence          BIGINT  NOT NULL,
    grant_id       BIGINT  NOT NULL,
    grant_keys     INTEGER NOT NULL,
    secret         TEXT    NOT NULL,
    mode           TEXT    NOT NULL,
    slots          BIGINT,
    scope          TEXT    NOT NULL,
    owner          TEXT    NOT NULL,
    task           TEXT,
    metadata       TEXT,
    hostname       TEXT    NOT NULL,
    boot_id        TEXT    NOT NULL,
    pid            BIGINT  NOT NULL,
    pid_start      BIGINT,
    acquired_mono  BIGINT  NOT NULL,
    acquired_wall  BIGINT  NOT NULL,
    seen_mono      BIGINT  NOT NULL,
    expires_mono   BIGINT,
    ttl_ms         BIGINT,
    max_hold_ms    BIGINT,
    request_id     TEXT,
    renew_logged   BIGINT  NOT NULL DEFAULT 0,
    bind_pid       BIGINT,
    bind_start     BIGINT,
    bind_file      TEXT,
    stale_after_ms BIGINT,
    PRIMARY KEY (key, fence)
);
CREATE INDEX holds_by_grant ON holds (grant_id);
CREATE INDEX holds_by_owner ON holds (owner);
CREATE INDEX holds_by_request ON holds (request_id) WHERE request_id IS NOT NULL;

-- One row per queued request; seq is the arrival order.
CREATE TABLE queue (
    seq         BIGSERIAL PRIMARY KEY,
    priority    INTEGER NOT NULL,
    mode        TEXT    NOT NULL,
    slots       BIGINT,
    scope       TEXT    NOT NULL,
    owner       TEXT    NOT NULL,
    task        TEXT,
    hostname    TEXT    NOT NULL,
    boot_id     TEXT    NOT NULL,
    pid         BIGINT  NOT NULL,
    pid_start   BIGINT,
    since_mono  BIGINT  NOT NULL,
    since_wall  BIGINT  NOT NULL,
    alive_until BIGINT  NOT NULL,
    wake        TEXT    NOT NULL
);

-- The keys of each queued request.
CREATE TABLE queue_keys (
    key   TEXT COLLATE "C" NOT NULL,
    seq   BIGINT NOT NULL REFERENCES queue (seq) ON DELETE CASCADE,
    scope TEXT   NOT NULL,
    PRIMARY KEY (key, seq)
);
CREATE INDEX queue_keys_by_seq ON queue_keys (seq);

-- The audit history.
CREATE TABLE events (
    id       BIGSERIAL PRIMARY KEY,
    at_wall  BIGINT NOT NULL,
    key      TEXT COLLATE "C" NOT NULL,
    kind     TEXT   NOT NULL,
    owner    TEXT   NOT NULL,
    task     TEXT,
    fence    BIGINT,
    grant_id BIGINT,
    reason   TEXT,
    detail   TEXT
);
CREATE INDEX events_by_key ON events (key, id);
CREATE INDEX events_by_grant ON events (grant_id) WHERE grant_id IS NOT NULL;
-- The last fence issued (the sequence also counts numbers drawn for
-- requests that were not granted).
CREATE INDEX events_fences ON events (fence) WHERE kind = 'acquired';
