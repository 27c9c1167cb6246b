-- Agents: registered non-human identities.
CREATE TABLE agents (
	id             TEXT PRIMARY KEY,          -- spiffe://<td>/agent/<name>
	name           TEXT NOT NULL UNIQUE,
	owner          TEXT NOT NULL,
	ceiling        TEXT NOT NULL,             -- space-separated scopes
	public_key     BLOB NOT NULL,             -- Ed25519, 32 bytes
	key_thumbprint TEXT NOT NULL,             -- RFC 7638
	status         TEXT NOT NULL,
	created_at     INTEGER NOT NULL,          -- Unix ms
	updated_at     INTEGER NOT NULL
) STRICT;

-- Tasks: the root of one delegation tree.
CREATE TABLE tasks (
	id         TEXT PRIMARY KEY,
	root_agent TEXT NOT NULL,
	subject    TEXT NOT NULL,
	purpose    TEXT NOT NULL,
	created_at INTEGER NOT NULL
) STRICT;

-- Mandates: every issuance, written before the mandate is returned.
CREATE TABLE mandates (
	id            TEXT PRIMARY KEY,
	task_id       TEXT NOT NULL REFERENCES tasks(id),
	parent_id     TEXT NOT NULL,              -- '' for a root mandate
	agent_id      TEXT NOT NULL,
	subject       TEXT NOT NULL,
	scope         TEXT NOT NULL,
	audience      TEXT NOT NULL,              -- space-separated
	key_id        TEXT NOT NULL,
	jkt           TEXT NOT NULL,              -- '' for bearer
	issued_at     INTEGER NOT NULL,           -- Unix ms
	expires_at    INTEGER NOT NULL,           -- Unix ms
	assertion_jti TEXT NOT NULL
) STRICT;
CREATE INDEX mandates_task ON mandates(task_id);
CREATE INDEX mandates_agent ON mandates(agent_id, issued_at);
-- A client assertion is single-use per agent (RFC 7523 §3, item 7), across restarts.
CREATE UNIQUE INDEX mandates_assertion ON mandates(agent_id, assertion_jti) WHERE assertion_jti != '';

-- Revocations of single mandates before their expiry.
CREATE TABLE revocations (
	mandate_id TEXT PRIMARY KEY,
	expires_at INTEGER NOT NULL,
	revoked_at INTEGER NOT NULL,
	revoked_by TEXT NOT NULL,
	reason     TEXT NOT NULL
) STRICT;
CREATE INDEX revocations_expiry ON revocations(expires_at);
