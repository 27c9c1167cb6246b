-- The audit log's entries and hash tiles move to files of their own
-- (internal/logfile): the store moves the rows of log_entries there and
-- then drops log_entries and log_tiles (sqlite.moveLogToFiles).
--
-- An issuance is recorded once, as its mandate.issued or mandate.delegated
-- event, which carries the whole record (mandate.Issuance.PutDetails): the
-- mandates table is no longer written or read. Events written before this
-- version do not name the client assertion that asked for the mandate, so
-- the assertions that have not expired yet move to used_assertions first:
-- a restarted issuer still refuses their replay.
INSERT OR IGNORE INTO used_assertions(agent_id, jti, expires_at, used_at)
	SELECT agent_id, assertion_jti, assertion_exp, issued_at FROM mandates
	WHERE assertion_jti != '' AND assertion_exp > CAST(strftime('%s', 'now') AS INTEGER) * 1000;
DROP TABLE mandates;

-- The events of a transaction that changes this database (an agent
-- registered, a revocation, an approval decided), with the log positions
-- they will take. The transaction is made durable before its events are
-- written to the log: if a crash loses the log's write, Open appends them
-- from here, so that no change stands without its event. Rows are deleted
-- once the log holds their events durably.
CREATE TABLE log_pending (
	idx  INTEGER PRIMARY KEY,
	data BLOB NOT NULL
) STRICT;
