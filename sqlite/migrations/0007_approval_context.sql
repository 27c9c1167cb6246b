-- Approvals: what the person deciding sees (the kind of request, the
-- chain, the task's purpose and risk, a held call's server, tool and
-- arguments with secrets masked), and the registered agent that asked, by
-- which pending approvals are counted against their limit
-- (mandate.ApprovalLimits). Rows written before keep what they had: their
-- action is derived as the code derived it, their registered agent from
-- their agent's ID, the rest is empty.
ALTER TABLE approvals ADD COLUMN action              TEXT NOT NULL DEFAULT '';  -- mint, delegate or tools/call
ALTER TABLE approvals ADD COLUMN registered          TEXT NOT NULL DEFAULT '';  -- the asking agent's registered agent
ALTER TABLE approvals ADD COLUMN chain               TEXT NOT NULL DEFAULT '';  -- space-separated, the asking agent first
ALTER TABLE approvals ADD COLUMN purpose             TEXT NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN risk                INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN server              TEXT NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN tool                TEXT NOT NULL DEFAULT '';
ALTER TABLE approvals ADD COLUMN arguments           TEXT NOT NULL DEFAULT '';  -- masked and bounded: never the arguments as sent
ALTER TABLE approvals ADD COLUMN arguments_bytes     INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN arguments_shortened INTEGER NOT NULL DEFAULT 0;
ALTER TABLE approvals ADD COLUMN secrets             TEXT NOT NULL DEFAULT '';  -- space-separated detector names
UPDATE approvals SET
	action = CASE WHEN parent_mandate = '' THEN 'mint' WHEN actor = agent THEN 'tools/call' ELSE 'delegate' END,
	registered = CASE WHEN instr(agent, '/sub/') > 0 THEN substr(agent, 1, instr(agent, '/sub/') - 1) ELSE agent END;
-- Counting the pending approvals of an agent and of a task.
CREATE INDEX approvals_registered ON approvals(registered, status, expires_at);
CREATE INDEX approvals_task_status ON approvals(task, status, expires_at);

-- Approvers can be disabled: their credential is refused from then on,
-- and so are their decisions.
ALTER TABLE approvers ADD COLUMN disabled_at INTEGER NOT NULL DEFAULT 0;  -- Unix ms; 0 while active
