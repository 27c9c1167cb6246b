-- The audit log: an RFC 6962 Merkle tree over canonical event entries.
-- Entries and the tree's hash tiles are written in the same transaction as
-- the change they record; entries are never updated or deleted.
CREATE TABLE log_entries (
	idx     INTEGER PRIMARY KEY,   -- position in the log, from 0
	data    BLOB NOT NULL          -- the canonical event (mandate.MarshalEvent)
) STRICT;
-- Queries (by task, mandate, agent, type, time) use an index kept beside
-- this database (events-index.db), built off the write path; see index.go.

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
