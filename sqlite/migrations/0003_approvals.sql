-- Agents: how deep their delegation chains may go, which scopes need a
-- person's approval to be delegated, and who may give it. The defaults are
-- what an agent registered before this migration meant: the issuer's
-- default depth, no approval needed, the owner alone as approver.
ALTER TABLE agents ADD COLUMN max_depth INTEGER NOT NULL DEFAULT 0;  -- 0: the issuer's default
ALTER TABLE agents ADD COLUMN approval  TEXT NOT NULL DEFAULT '';    -- space-separated scopes
ALTER TABLE agents ADD COLUMN approvers TEXT NOT NULL DEFAULT '';    -- space-separated emails; '' is the owner

-- Approvals: requests for a person's approval of one delegation, bound to
-- that request by request_hash. A row moves from pending to approved or
-- denied once (the UPDATE checks status = 'pending'), and from approved to
-- used once, in the transaction that records the issuance it allowed. Rows
-- are few (one per delegation that needs a person), so indexes are cheap.
CREATE TABLE approvals (
	id             TEXT PRIMARY KEY,          -- ap_<ULID>: sorts by creation time
	status         TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
	task           TEXT NOT NULL,
	parent_mandate TEXT NOT NULL,
	agent          TEXT NOT NULL,             -- the delegating agent
	actor          TEXT NOT NULL,             -- the agent that would receive the mandate
	subject        TEXT NOT NULL,             -- the accountable human
	scope          TEXT NOT NULL,
	audience       TEXT NOT NULL,             -- space-separated
	ttl_ms         INTEGER NOT NULL,
	reason         TEXT NOT NULL,             -- which rule asked for the approval
	approvers      TEXT NOT NULL,             -- space-separated emails: who may decide
	request_hash   TEXT NOT NULL,             -- binds the approval to its request
	created_at     INTEGER NOT NULL,          -- Unix ms
	expires_at     INTEGER NOT NULL,          -- Unix ms; undecided by then: denied
	decided_at     INTEGER NOT NULL,          -- Unix ms; 0 while pending
	decided_by     TEXT NOT NULL,             -- user:<email>, or 'system'; '' while pending
	note           TEXT NOT NULL              -- the decider's comment
) STRICT;
-- Listing by status (the pending ones, above all) and by task, newest first.
CREATE INDEX approvals_status ON approvals(status, id);
CREATE INDEX approvals_task ON approvals(task, id);

-- Approvers: people who may decide approvals, each with a bearer
-- credential of their own, of which only the SHA-256 is kept.
CREATE TABLE approvers (
	email      TEXT PRIMARY KEY,
	token_hash BLOB NOT NULL UNIQUE,          -- SHA-256 of the credential, 32 bytes
	created_at INTEGER NOT NULL               -- Unix ms
) STRICT;
