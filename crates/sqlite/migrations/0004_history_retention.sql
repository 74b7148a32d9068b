-- Schema version 4: the history retention is the store's setting, kept here
-- (milliseconds). Stores made before keep the documented default, 30 days.
INSERT OR IGNORE INTO meta (k, v) VALUES ('history_retention_ms', 2592000000);
