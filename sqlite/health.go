package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/evindex"
	"github.com/mandatehq/mandate/internal/logfile"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// The store's states (Health.State).
//
//   - ok: writes are accepted.
//   - degraded: a write of the disk failed (ENOSPC, EIO from a write, not
//     from an fsync): nothing of it was called durable, so nothing was
//     lost, and the store recovers by itself. Until then writes are
//     refused at once (EUNAVAILABLE) while the committer retries, with
//     backoff, what Open does after a crash.
//   - failed: an fsync failed. Linux reports a writeback error once and may
//     drop the pages it could not write, so a later fsync that succeeds
//     proves nothing (PostgreSQL panics on it for the same reason): every
//     write is refused for good, and Failed is closed so that the owner
//     stops the process; Open recovers from the files at the next start.
//   - closed: Close was called.
const (
	StateOK       = "ok"
	StateDegraded = "degraded"
	StateFailed   = "failed"
	StateClosed   = "closed"
)

// Health is the store's state, for health and readiness probes.
type Health struct {
	State string
	// Reason says, in a few words and without internal detail, why the
	// state is not ok.
	Reason string
}

// Backoff of the recovery from a degraded state.
const (
	recoverFirst = 100 * time.Millisecond
	recoverMax   = 2 * time.Second
)

// probeSize is how much a recovery writes and syncs, beside the log, to
// see that the disk takes writes again: about a batch of events.
const probeSize = 256 << 10

// Health returns the store's state.
func (s *Store) Health() Health {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	h := Health{State: s.state, Reason: s.reason}
	if s.state == StateOK && s.closing.Load() {
		h = Health{State: StateClosed, Reason: "shutting down"}
	}
	return h
}

// Failed is closed when the store has failed for good (an fsync failed):
// the process should exit and be restarted, since nothing it writes can be
// trusted after that, and Open recovers from the files.
func (s *Store) Failed() <-chan struct{} { return s.failedCh }

// Err returns what made the store fail for good, with its cause, for the
// operator's log; nil while it has not.
func (s *Store) Err() error {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if s.state != StateFailed {
		return nil
	}
	return s.cause
}

// refusal returns the error refused writes get, or nil if writes are
// accepted.
func (s *Store) refusal() error {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	return s.refuse
}

// refuseNew is refusal for a write that a caller asks for, counted.
func (s *Store) refuseNew() error {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if s.refuse != nil {
		s.refused++
	}
	return s.refuse
}

// failed returns the error writes get after the store failed for good.
func (s *Store) failed() error {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if s.state != StateFailed {
		return nil
	}
	return s.refuse
}

// fsyncError is a failed fsync: the store fails for good on it.
type fsyncError struct {
	what string
	err  error
}

func (e *fsyncError) Error() string { return e.what + ": " + e.err.Error() }
func (e *fsyncError) Unwrap() error { return e.err }

// isDiskError reports whether err is the disk refusing a write: SQLite's
// "database or disk is full" or "disk I/O error", or ENOSPC, EDQUOT, EIO.
func isDiskError(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR:
			return true
		}
	}
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EIO)
}

// setFailed makes the store fail for good, once, logging it once and
// closing Failed.
func (s *Store) setFailed(what string, err error) {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if s.state == StateFailed {
		return
	}
	s.state, s.reason, s.since = StateFailed, what, time.Now()
	s.cause = fmt.Errorf("%s: %w", what, err)
	s.refuse = mandate.Wrapf(s.cause, mandate.EUNAVAILABLE, "store unavailable: the disk did not confirm a write; the server must be restarted")
	s.log.Error("store: failed for good: the disk did not confirm a write, and nothing written after that can be trusted in this process; refusing every write",
		"fault", what, "err", err, "hint", "restart mandate (a supervisor does so by itself); at start it recovers from its files")
	close(s.failedCh)
}

// degrade makes the store refuse writes until a recovery succeeds, logging
// it once; the committer only.
func (s *Store) degrade(what string, err error) {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	if s.state != StateOK {
		return
	}
	s.state, s.reason, s.since, s.refused = StateDegraded, what, time.Now(), 0
	s.refuse = mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable: a write to the disk failed; retry later")
	s.reconciled = false
	// A store that fails again soon after it recovered keeps its backoff.
	if time.Since(s.recoveredAt) > 10*recoverMax || s.backoff == 0 {
		s.backoff = recoverFirst
	}
	s.log.Error("store: a write to the disk failed: refusing writes until the disk takes them again; nothing acknowledged was lost",
		"fault", what, "err", err, "retry_in", s.backoff)
}

// writeFailed is the error of a write that the disk refused: the store
// degrades, and the write gets the refusal.
func (s *Store) writeFailed(what string, err error) error {
	s.degrade(what, err)
	if r := s.refusal(); r != nil {
		return r
	}
	return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
}

// hold keeps the writes of batch whose database changes committed (their
// events are in log_pending) until a recovery appends those events to the
// log, and answers them then; it refuses the others, of which nothing
// stands. The committer only, while degraded.
func (s *Store) hold(batch []*write, refusal error) {
	for _, w := range batch {
		if w.fn != nil {
			s.held = append(s.held, w)
			continue
		}
		w.done <- refusal
	}
}

// answerHeld answers the held writes with err (nil: their events are
// durable now) and, if nil, runs their post.
func (s *Store) answerHeld(err error) {
	for _, w := range s.held {
		if err == nil && w.post != nil {
			w.post()
		}
		w.done <- err
	}
	s.held = nil
}

// tryRecover tries once to bring a degraded store back; the committer only.
// It returns nil if the store is ok after it.
func (s *Store) tryRecover() error {
	s.healthMu.Lock()
	state := s.state
	s.healthMu.Unlock()
	if state != StateDegraded {
		if state == StateFailed {
			return s.failed()
		}
		return nil
	}
	err := s.reconcile(context.Background())
	var fe *fsyncError
	switch {
	case err == nil:
		s.healthMu.Lock()
		since, refused := s.since, s.refused
		s.state, s.reason, s.refuse, s.recoveredAt = StateOK, "", nil, time.Now()
		s.healthMu.Unlock()
		s.log.Warn("store: recovered: the disk takes writes again, and writes are accepted", "degraded_for", time.Since(since).Round(time.Millisecond), "refused", refused)
		return nil
	case errors.As(err, &fe):
		s.setFailed(fe.what, fe.err)
		s.answerHeld(s.failed())
		return s.failed()
	}
	s.backoff = min(2*s.backoff, recoverMax)
	return err
}

// reconcile does what Open does after a crash, on the running store: the
// log files are cut back to what was synced (the failed write may have
// left some of a batch in them, never released), the events of the
// database changes that committed without reaching the log (log_pending)
// are appended and synced, the committer's frontier and tiles are rebuilt
// from the files, the index and the subscriber get the appended events,
// the held writes are answered, and the caches are loaded again from the
// database. Then a probe write and fsync beside the log must succeed.
func (s *Store) reconcile(ctx context.Context) error {
	// What the syncer holds was written before the failure: it finishes
	// first (and may fail the store, on a failed fsync).
	b := make(chan struct{})
	s.toSync <- committed{barrier: b}
	<-b
	if err := s.failed(); err != nil {
		return &fsyncError{"fsync of the audit log", err}
	}
	if !s.reconciled {
		// A transaction the failure left open (a failed COMMIT, say).
		s.wconn.ExecContext(ctx, "ROLLBACK")
		head, _ := s.LogHead()
		if err := s.files.Cut(max(head, s.appended)); err != nil {
			return err
		}
		if err := s.appendPending(ctx); err != nil {
			return err
		}
		// The appended events are durable: a retry must not cut them.
		s.appended = s.files.Size()
		if err := s.restoreLog(ctx); err != nil {
			return err
		}
		if err := s.releaseAppended(head); err != nil {
			return err
		}
		s.answerHeld(nil)
		if err := s.reload(ctx); err != nil {
			return err
		}
		s.reconciled = true
	}
	return s.probe()
}

// releaseAppended gives the index and the subscriber the events from
// entry from on, which reconcile appended and synced.
func (s *Store) releaseAppended(from int64) error {
	size, _ := s.LogHead()
	if size <= from {
		return nil
	}
	entries, err := s.files.ReadEntries(from, size-from)
	if err != nil {
		return err
	}
	metas := make([]evindex.Meta, 0, len(entries))
	evs := make([]mandate.LoggedEvent, 0, len(entries))
	for i, data := range entries {
		ev, err := mandate.ParseEvent(data)
		if err != nil {
			return fmt.Errorf("audit log entry %d: %w", from+int64(i), err)
		}
		metas = append(metas, evindex.MetaOf(from+int64(i), ev))
		evs = append(evs, mandate.LoggedEvent{Index: from + int64(i), Event: ev})
	}
	if err := s.index.Add(metas); err != nil {
		s.log.Error("store: event index", "err", err)
	}
	if fn := s.subscriber.Load(); fn != nil {
		(*fn)(evs)
	}
	return nil
}

// reload makes the caches what a start would load: the agents are read
// again from the table as they are asked for, the unexpired revocations
// now. Unexpired by the pruners' clock (pruneNow), not the wall clock: a
// wall clock that jumped forward must not make a recovery forget the
// revocation of a mandate that is live again once the clock is corrected.
func (s *Store) reload(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, "SELECT mandate_id, expires_at FROM revocations WHERE expires_at > ?", s.pruneNow().UnixMilli())
	if err != nil {
		return err
	}
	defer rows.Close()
	revoked := map[string]time.Time{}
	for rows.Next() {
		var id string
		var exp int64
		if err := rows.Scan(&id, &exp); err != nil {
			return err
		}
		revoked[id] = time.UnixMilli(exp)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	s.revoked = revoked
	clear(s.agents)
	s.mu.Unlock()
	return nil
}

// probe writes probeSize bytes beside the log and syncs them: the disk
// takes writes again. A failed fsync fails the store.
func (s *Store) probe() error {
	p := filepath.Join(s.files.Dir(), "probe")
	defer os.Remove(p)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, probeSize)); err != nil {
		return err
	}
	if s.syncHook != nil {
		if err := s.syncHook(); err != nil {
			return &fsyncError{"fsync of a probe write", err}
		}
	}
	if err := logfile.Datasync(f); err != nil {
		return &fsyncError{"fsync of a probe write", err}
	}
	return nil
}
