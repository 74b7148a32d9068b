-- Schema version 5. A fence is the id of its `acquired` event (at least the
-- wall clock in microseconds and above every earlier id); meta's 'fence' is
-- no longer a counter written by every grant but the floor of the next
-- fence, raised only when pruning removes history. An older locksmith would
-- issue fences from the counter alone, so it must refuse this file (as it
-- refuses any newer schema). Every fence issued so far is below the floor
-- already, so nothing is rewritten.

-- Tree holds, usually none: an acquire looks at its key's ancestors only
-- when this index has a row, so a grant of a nested key reads one probe
-- instead of one per ancestor, and a grant that is not a tree writes
-- nothing here.
CREATE INDEX holds_of_trees ON holds (key) WHERE scope = 'tree';
