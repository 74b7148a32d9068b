-- Schema version 3: a release grants the head of the queue in its own
-- transaction (a hand-over). A queued request is kept whole, with the
-- secret its grant will carry (`claim`), the OS user of the waiting
-- process and its `stale_after`; the holds of a handed-over grant name
-- their queue entry, for the waiter to find. Entries queued before have no request and are woken
-- to try themselves, as before.
ALTER TABLE queue ADD COLUMN request TEXT;
ALTER TABLE queue ADD COLUMN claim TEXT;
ALTER TABLE queue ADD COLUMN uid BIGINT;
ALTER TABLE queue ADD COLUMN stale_after_ms BIGINT;
ALTER TABLE holds ADD COLUMN ticket BIGINT;
CREATE INDEX holds_by_ticket ON holds (ticket) WHERE ticket IS NOT NULL;
