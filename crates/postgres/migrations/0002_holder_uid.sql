-- Schema version 2: the OS user (effective uid) of the process that took
-- each grant, on the machine it ran on. By owner name, only that user (or
-- root) may release or renew the lock; NULL for locks granted before, which
-- are not checked.
ALTER TABLE holds ADD COLUMN uid BIGINT;
