-- The audit log: an RFC 6962 Merkle tree over canonical event entries.
-- Entries and the tree's hash tiles are written in the same transaction as
-- the change they record; entries are never updated or deleted.
CREATE TABLE log_entries (
	idx     INTEGER PRIMARY KEY,   -- position in the log, from 0
	time    INTEGER NOT NULL,      -- the event's Unix ns
	type    TEXT NOT NULL,
	task    TEXT NOT NULL,
	mandate TEXT NOT NULL,
	agent   TEXT NOT NULL,
	data    BLOB NOT NULL          -- the canonical event (mandate.MarshalEvent)
) STRICT;
-- Queries by task, mandate, agent and type; ids are time-ordered, so these
-- indexes are appended to.
CREATE INDEX log_entries_task ON log_entries(task, idx) WHERE task != '';
CREATE INDEX log_entries_mandate ON log_entries(mandate, idx) WHERE mandate != '';
CREATE INDEX log_entries_agent ON log_entries(agent, idx) WHERE agent != '';

-- Hash tiles (C2SP tlog-tiles, height 8): the tree's hashes at every 8th
-- level, 256 to a tile; the right-most tile of each level grows until full
-- and then never changes. The levels between are computed from them.
CREATE TABLE log_tiles (
	id   INTEGER PRIMARY KEY,      -- level << 40 | tile index
	data BLOB NOT NULL             -- up to 256 hashes of 32 bytes
) STRICT;

-- Signed checkpoints (C2SP tlog-checkpoint notes), one per published size.
CREATE TABLE log_checkpoints (
	size       INTEGER PRIMARY KEY,
	note       BLOB NOT NULL,
	created_at INTEGER NOT NULL
) STRICT;
