package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
)

// The event index answers audit queries (by task, mandate, agent, type and
// time) without taxing the write path. The committer writes only the log
// entries; it hands each committed entry's query fields to the index,
// which a goroutine of its own writes into a separate database
// (events-index.db: its own write lock, so it runs beside the committer,
// and no fsync: it is rebuilt from the log if lost). Queries read the
// indexed part from that database and the not-yet-indexed tail from
// memory, so they never miss a committed event.

// evMeta is what the index keeps of an entry.
type evMeta struct {
	idx                         int64
	time                        int64
	typ, task, mandateID, agent string
}

func metaOf(idx int64, e *mandate.Event) evMeta {
	return evMeta{idx: idx, time: e.Time, typ: e.Type, task: e.Task, mandateID: e.Mandate, agent: e.Agent}
}

func (m *evMeta) matches(f *mandate.EventFilter) bool {
	return (f.Task == "" || m.task == f.Task) && (f.Mandate == "" || m.mandateID == f.Mandate) &&
		(f.Agent == "" || m.agent == f.Agent) && (f.Type == "" || m.typ == f.Type) &&
		(f.Since.IsZero() || m.time >= f.Since.UnixNano()) && (f.Until.IsZero() || m.time < f.Until.UnixNano()) &&
		m.idx >= f.After
}

const indexSchema = `
CREATE TABLE IF NOT EXISTS ev (
	idx     INTEGER PRIMARY KEY,
	time    INTEGER NOT NULL,
	type    TEXT NOT NULL,
	task    TEXT NOT NULL,
	mandate TEXT NOT NULL,
	agent   TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS ev_task ON ev(task, idx) WHERE task != '';
CREATE INDEX IF NOT EXISTS ev_mandate ON ev(mandate, idx) WHERE mandate != '';
CREATE INDEX IF NOT EXISTS ev_agent ON ev(agent, idx) WHERE agent != '';
`

type eventIndex struct {
	db     *sql.DB
	log    *slog.Logger
	notify chan struct{}
	stop   chan struct{}
	done   chan struct{}

	// wconn is the connection flush writes on, with its insert
	// statements by row count; flush only (run, or openIndex before run).
	wconn *sql.Conn
	stmts map[int]*sql.Stmt

	mu      sync.Mutex
	pending []evMeta // committed, not yet in db, in log order
	next    int64    // every entry below next is in db
}

// openIndex opens (or creates) the index beside the database at path and
// catches it up with the log's size entries.
func (s *Store) openIndex(ctx context.Context, path string, size int64) error {
	ix, err := openIndexDB(ctx, path, size)
	if err != nil && ctx.Err() != nil {
		return err // interrupted, not unusable
	}
	if err != nil {
		// The index holds nothing the log does not: start it over.
		s.log.Warn("store: event index unusable, rebuilding it from the log", "err", err)
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			os.Remove(p)
		}
		if ix, err = openIndexDB(ctx, path, size); err != nil {
			return err
		}
	}
	ix.log = s.log
	// Catch up with the entries committed but not indexed before the last
	// stop, a chunk at a time.
	for start := ix.next; start < size; start += 4096 {
		entries, err := s.ReadEntries(ctx, start, min(4096, size-start))
		if err != nil {
			ix.closeDB()
			return fmt.Errorf("sqlite: event index catch-up: %w", err)
		}
		for i, data := range entries {
			ev, err := mandate.ParseEvent(data)
			if err != nil {
				ix.closeDB()
				return fmt.Errorf("sqlite: audit log entry %d does not parse: %w", start+int64(i), err)
			}
			ix.pending = append(ix.pending, metaOf(start+int64(i), ev))
		}
		if err := ix.flush(ctx); err != nil {
			ix.closeDB()
			return fmt.Errorf("sqlite: event index catch-up: %w", err)
		}
	}
	s.index = ix
	go ix.run()
	return nil
}

// openIndexDB opens the index database and checks that it is a whole
// prefix of a log of size entries.
func openIndexDB(ctx context.Context, path string, size int64) (*eventIndex, error) {
	if f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600); err == nil {
		f.Close()
	}
	// synchronous(NORMAL) in WAL mode: no fsync per transaction, and no
	// corruption on power loss (at worst the last batches are lost, and
	// caught up again from the log).
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*eventIndex, error) {
		db.Close()
		return nil, fmt.Errorf("sqlite: event index %s: %w", path, err)
	}
	if _, err := db.ExecContext(ctx, indexSchema); err != nil {
		return fail(err)
	}
	var n sql.NullInt64
	var count int64
	if err := db.QueryRowContext(ctx, "SELECT max(idx), count(*) FROM ev").Scan(&n, &count); err != nil {
		return fail(err)
	}
	ix := &eventIndex{db: db, notify: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if n.Valid {
		ix.next = n.Int64 + 1
	}
	switch {
	case ix.next > size:
		return fail(fmt.Errorf("it indexes %d entries, the log has %d", ix.next, size))
	case count != ix.next:
		return fail(fmt.Errorf("it has %d entries below %d: a hole", count, ix.next))
	}
	return ix, nil
}

// add hands committed entries to the index. The committer calls it.
func (ix *eventIndex) add(metas []evMeta) {
	ix.mu.Lock()
	ix.pending = append(ix.pending, metas...)
	ix.mu.Unlock()
	select {
	case ix.notify <- struct{}{}:
	default:
	}
}

// indexInterval paces the index: it is written in batches of what
// arrived in the interval, which costs far less per event than following
// every commit. Queries read the pending tail from memory meanwhile.
const indexInterval = 100 * time.Millisecond

func (ix *eventIndex) run() {
	defer close(ix.done)
	for {
		select {
		case <-ix.stop:
			ix.flush(context.Background())
			return
		case <-ix.notify:
		}
		select {
		case <-ix.stop:
		case <-time.After(indexInterval):
		}
		if err := ix.flush(context.Background()); err != nil {
			ix.mu.Lock()
			n := len(ix.pending)
			ix.mu.Unlock()
			// Queries still answer from the pending tail, which grows
			// meanwhile: say so loudly.
			ix.log.Error("store: event index write failed; retrying", "err", err, "pending", n)
			select {
			case ix.notify <- struct{}{}:
			default:
			}
		}
	}
}

// flush writes the pending entries into the index database, then drops
// them from memory.
func (ix *eventIndex) flush(ctx context.Context) error {
	ix.mu.Lock()
	batch := ix.pending[:len(ix.pending):len(ix.pending)]
	ix.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := ix.write(ctx, batch); err != nil {
		return err
	}
	ix.mu.Lock()
	ix.pending = slices.Clone(ix.pending[len(batch):])
	ix.next = batch[len(batch)-1].idx + 1
	ix.mu.Unlock()
	return nil
}

// insertShapes are the row counts of the index's insert statements: a
// flush of n rows uses the largest that fit, so that a handful of
// statements, each prepared once, carry any number of rows (parsing a
// statement of thousands of rows at every flush cost more than the
// inserts).
var insertShapes = [...]int{512, 64, 8, 1}

// write inserts batch in one transaction on the index's writer connection.
func (ix *eventIndex) write(ctx context.Context, batch []evMeta) error {
	if ix.wconn == nil {
		c, err := ix.db.Conn(ctx)
		if err != nil {
			return err
		}
		ix.wconn, ix.stmts = c, map[int]*sql.Stmt{}
	}
	if _, err := ix.wconn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	const cols = 6
	args := make([]any, 0, cols*insertShapes[0])
	for len(batch) > 0 {
		n := insertShapes[len(insertShapes)-1]
		for _, k := range insertShapes {
			if k <= len(batch) {
				n = k
				break
			}
		}
		stmt := ix.stmts[n]
		if stmt == nil {
			var err error
			q := "INSERT OR IGNORE INTO ev(idx, time, type, task, mandate, agent) VALUES " +
				strings.TrimSuffix(strings.Repeat("(?,?,?,?,?,?),", n), ",")
			if stmt, err = ix.wconn.PrepareContext(ctx, q); err != nil {
				ix.wconn.ExecContext(ctx, "ROLLBACK")
				return err
			}
			ix.stmts[n] = stmt
		}
		args = args[:0]
		for _, m := range batch[:n] {
			args = append(args, m.idx, m.time, m.typ, m.task, m.mandateID, m.agent)
		}
		if _, err := stmt.ExecContext(ctx, args...); err != nil {
			ix.wconn.ExecContext(ctx, "ROLLBACK")
			return err
		}
		batch = batch[n:]
	}
	if _, err := ix.wconn.ExecContext(ctx, "COMMIT"); err != nil {
		ix.wconn.ExecContext(ctx, "ROLLBACK")
		return err
	}
	return nil
}

func (ix *eventIndex) close() error {
	close(ix.stop)
	<-ix.done
	return ix.closeDB()
}

// closeDB closes the index database and what flush prepared on it.
func (ix *eventIndex) closeDB() error {
	var err error
	for _, st := range ix.stmts {
		err = errors.Join(err, st.Close())
	}
	if ix.wconn != nil {
		err = errors.Join(err, ix.wconn.Close())
	}
	return errors.Join(err, ix.db.Close())
}

// query returns the positions of the events that match f, in log order,
// at most f.Limit of them (the last ones if f.Last).
func (ix *eventIndex) query(ctx context.Context, f mandate.EventFilter) ([]int64, error) {
	ix.mu.Lock()
	tail := slices.Clone(ix.pending)
	ix.mu.Unlock()
	var where []string
	var args []any
	add := func(cond string, v any) { where = append(where, cond); args = append(args, v) }
	if f.Task != "" {
		add("task = ?", f.Task)
	}
	if f.Mandate != "" {
		add("mandate = ?", f.Mandate)
	}
	if f.Agent != "" {
		add("agent = ?", f.Agent)
	}
	if f.Type != "" {
		add("type = ?", f.Type)
	}
	if !f.Since.IsZero() {
		add("time >= ?", f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		add("time < ?", f.Until.UnixNano())
	}
	if f.After > 0 {
		add("idx >= ?", f.After)
	}
	q := "SELECT idx FROM ev"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	if f.Last {
		q += " ORDER BY idx DESC LIMIT ?"
	} else {
		q += " ORDER BY idx LIMIT ?"
	}
	args = append(args, f.Limit)
	rows, err := ix.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, mandate.Errorf(mandate.EUNAVAILABLE, "event index unavailable: %w", err)
	}
	defer rows.Close()
	seen := map[int64]bool{}
	var out []int64
	for rows.Next() {
		var idx int64
		if err := rows.Scan(&idx); err != nil {
			return nil, mandate.Errorf(mandate.EUNAVAILABLE, "event index unavailable: %w", err)
		}
		seen[idx] = true
		out = append(out, idx)
	}
	if err := rows.Err(); err != nil {
		return nil, mandate.Errorf(mandate.EUNAVAILABLE, "event index unavailable: %w", err)
	}
	for i := range tail {
		if tail[i].matches(&f) && !seen[tail[i].idx] {
			out = append(out, tail[i].idx)
		}
	}
	slices.Sort(out)
	if len(out) > f.Limit {
		if f.Last {
			out = out[len(out)-f.Limit:]
		} else {
			out = out[:f.Limit]
		}
	}
	return out, nil
}

// Events implements mandate.EventQuerier: the events that match f, in log
// order, with their positions.
func (s *Store) Events(ctx context.Context, f mandate.EventFilter) ([]mandate.LoggedEvent, error) {
	if f.Limit <= 0 || f.Limit > mandate.MaxEventsPerQuery {
		f.Limit = mandate.MaxEventsPerQuery
	}
	idxs, err := s.index.query(ctx, f)
	if err != nil {
		return nil, err
	}
	out := make([]mandate.LoggedEvent, 0, len(idxs))
	const chunk = 500
	for start := 0; start < len(idxs); start += chunk {
		part := idxs[start:min(start+chunk, len(idxs))]
		args := make([]any, len(part))
		for i, x := range part {
			args[i] = x
		}
		rows, err := s.db.QueryContext(ctx, "SELECT idx, data FROM log_entries WHERE idx IN ("+
			strings.TrimSuffix(strings.Repeat("?,", len(part)), ",")+") ORDER BY idx", args...)
		if err != nil {
			return nil, mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
		}
		for rows.Next() {
			var idx int64
			var data []byte
			if err := rows.Scan(&idx, &data); err != nil {
				rows.Close()
				return nil, mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
			}
			ev, err := mandate.ParseEvent(data)
			if err != nil {
				rows.Close()
				return nil, mandate.Errorf(mandate.EINTERNAL, "audit log entry %d does not parse: %w", idx, err)
			}
			out = append(out, mandate.LoggedEvent{Index: idx, Event: ev})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
		}
	}
	if len(out) != len(idxs) {
		return nil, mandate.Errorf(mandate.EINTERNAL, "the event index names entries the log does not have")
	}
	return out, nil
}
