-- Schema version 3: how long a lock without a lease may stay silent before it
-- counts as stale, recorded with the lock when it is granted (milliseconds;
-- NULL for locks granted before: the reading store's setting applies).
ALTER TABLE holds ADD COLUMN stale_after_ms INTEGER;
