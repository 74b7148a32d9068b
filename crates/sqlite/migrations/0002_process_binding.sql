-- Schema version 2: locks bound to a live process (freed on proof of death).
ALTER TABLE holds ADD COLUMN bind_pid INTEGER;
ALTER TABLE holds ADD COLUMN bind_start INTEGER;
ALTER TABLE holds ADD COLUMN bind_file TEXT;
