-- Schema version 5: a fence is the id of its `acquired` event (at least the
-- wall clock in microseconds and above every earlier id); meta's 'fence' is
-- no longer a counter written by every grant but the floor of the next
-- fence, raised only when pruning removes history. An older locksmith would
-- issue fences from the counter alone, so it must refuse this file: the
-- version number alone says so. Every fence issued so far is below the
-- floor already.
UPDATE meta SET v = v WHERE k = 'fence';
