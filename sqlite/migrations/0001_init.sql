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

-- Mandates: every issuance, written before the mandate is returned. A task
-- is the tree of mandates under a root mandate (parent_id = ''), whose row
-- carries the task's purpose.
--
-- This table is on the hot path of every mint: each index costs every mint
-- a B-tree insert, so only what the code looks up is indexed.
CREATE TABLE mandates (
	id            TEXT PRIMARY KEY,
	task_id       TEXT NOT NULL,
	parent_id     TEXT NOT NULL,              -- '' for a root mandate
	agent_id      TEXT NOT NULL,
	subject       TEXT NOT NULL,
	scope         TEXT NOT NULL,
	audience      TEXT NOT NULL,              -- space-separated
	key_id        TEXT NOT NULL,
	jkt           TEXT NOT NULL,              -- '' for bearer
	issued_at     INTEGER NOT NULL,           -- Unix ms
	expires_at    INTEGER NOT NULL,           -- Unix ms
	purpose       TEXT NOT NULL,              -- the task's purpose, on the root mandate
	-- The client assertion that asked for the mandate. Assertions are
	-- single-use (RFC 7523 §3, item 7): the issuer's replay set is filled
	-- at start from the recent rows (found by the time-ordered id), so no
	-- unique index taxes every mint with a random B-tree insert.
	assertion_jti TEXT NOT NULL,
	assertion_exp INTEGER NOT NULL            -- Unix ms
) STRICT;
-- The root mandate of each task (its purpose). Task ids are ULIDs, so this
-- index is appended to, not written at random.
CREATE INDEX mandates_task_root ON mandates(task_id) WHERE parent_id = '';

-- Revocations of single mandates before their expiry.
CREATE TABLE revocations (
	mandate_id TEXT PRIMARY KEY,
	expires_at INTEGER NOT NULL,
	revoked_at INTEGER NOT NULL,
	revoked_by TEXT NOT NULL,
	reason     TEXT NOT NULL
) STRICT;
CREATE INDEX revocations_expiry ON revocations(expires_at);

-- Client assertions used without obtaining a mandate (at the revocation
-- endpoint): with the mandates' own, they refill the replay set at start.
CREATE TABLE used_assertions (
	agent_id   TEXT NOT NULL,
	jti        TEXT NOT NULL,
	expires_at INTEGER NOT NULL,               -- Unix ms
	used_at    INTEGER NOT NULL,               -- Unix ms
	PRIMARY KEY (agent_id, jti)
) STRICT;
CREATE INDEX used_assertions_used ON used_assertions(used_at);
