-- Tool definitions the MCP gateway pinned at first sight (docs/gateway.md,
-- "Tool integrity"): a changed or suspicious definition blocks its tool
-- until an operator approves it.
CREATE TABLE tool_pins (
	server             TEXT NOT NULL,
	name               TEXT NOT NULL,
	status             TEXT NOT NULL,
	hash               TEXT NOT NULL,
	definition         BLOB NOT NULL,
	pending_hash       TEXT NOT NULL DEFAULT '',
	pending_definition BLOB,
	findings           TEXT NOT NULL DEFAULT '',  -- one per line
	first_seen         INTEGER NOT NULL,
	updated_at         INTEGER NOT NULL,
	approved_by        TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (server, name)
) STRICT;
