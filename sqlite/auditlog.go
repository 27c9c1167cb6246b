package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditlog"
	"github.com/mandatehq/mandate/auditlog/layout"
	"github.com/mandatehq/mandate/internal/evindex"
	"golang.org/x/mod/sumdb/tlog"
)

// logEntry is an event with its canonical encoding, made by the writer's
// goroutine so that the committer only hashes and inserts.
type logEntry struct {
	ev   *mandate.Event
	data []byte
}

func encodeEvents(evs []*mandate.Event) ([]logEntry, error) {
	out := make([]logEntry, 0, len(evs))
	for _, ev := range evs {
		if ev == nil {
			continue
		}
		if ev.V == 0 {
			ev.V = mandate.EventVersion
		}
		data, err := mandate.MarshalEvent(ev)
		if err != nil {
			return nil, mandate.Errorf(mandate.EINVALID, "audit event: %v", err)
		}
		out = append(out, logEntry{ev, data})
	}
	return out, nil
}

// logState is the durable state of the log (committed and fsynced): what
// readers and the checkpoint publisher see. The committer's own frontier
// runs ahead of it, inside transactions and while they wait for the fsync.
type logState struct {
	mu   sync.RWMutex
	size int64
	root tlog.Hash
}

// LogHead returns the size and root of the durable log: a checkpoint of it
// never covers an entry a crash could lose.
func (s *Store) LogHead() (int64, tlog.Hash) {
	s.logHead.mu.RLock()
	defer s.logHead.mu.RUnlock()
	return s.logHead.size, s.logHead.root
}

// readTile returns the data of hash tile (L, n): the durable right edge's
// if it is a right-most tile (partial tiles are not written, see
// appendEntries), the stored data otherwise.
func (s *Store) readTile(ctx context.Context, L int, n int64) ([]byte, error) {
	if data, ok := s.edge.get(L, n); ok {
		return data, nil
	}
	return s.storedTile(ctx, L, n)
}

// storedTile returns the stored data of full hash tile (L, n).
func (s *Store) storedTile(ctx context.Context, L int, n int64) ([]byte, error) {
	data, err := s.files.ReadTile(L, n)
	if errors.Is(err, os.ErrNotExist) {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "no hash tile %d/%d", L, n)
	}
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	return data, nil
}

// ReadTile returns the first width hashes of hash tile (L, n), which must
// be covered by the committed log.
func (s *Store) ReadTile(ctx context.Context, L int, n int64, width int) ([]byte, error) {
	data, err := s.readTile(ctx, L, n)
	if err != nil {
		return nil, err
	}
	if len(data) < width*tlog.HashSize {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "hash tile %d/%d has %d hashes, not %d", L, n, len(data)/tlog.HashSize, width)
	}
	return data[:width*tlog.HashSize], nil
}

// restoreLog rebuilds the committer's frontier and right-most tiles. The
// tiles are trusted up to the files' synced mark, rounded down to a whole
// tile of entries; from there on, the entries are hashed again, their
// full tiles written again, and the partial right-most tiles computed,
// since partial tiles are never stored. So an entry of the newest tile
// that was changed on disk changes the root, and a log that no longer
// matches its last checkpoint is caught at start.
func (s *Store) restoreLog(ctx context.Context) error {
	size, mark := s.files.Size(), s.files.Synced()
	from := mark - mark%tileWidth
	edge, err := s.rightEdge(ctx, from)
	if err != nil {
		return fmt.Errorf("sqlite: audit log of %d entries: %w", size, err)
	}
	read := func(L int, n int64) ([]byte, error) {
		if L < len(edge) && edge[L].N == n {
			return edge[L].Data, nil
		}
		return s.storedTile(ctx, L, n)
	}
	tiles, err := auditlog.RestoreTiles(from, read)
	if err != nil {
		return fmt.Errorf("sqlite: audit log of %d entries: %w", size, err)
	}
	f, err := auditlog.Restore(from, auditlog.TileHashReader(read))
	if err != nil {
		return fmt.Errorf("sqlite: audit log of %d entries: %w", size, err)
	}
	s.tree, s.tiles = f, tiles
	for start := from; start < size; start += 4096 {
		entries, err := s.files.ReadEntries(start, min(4096, size-start))
		if err != nil {
			return fmt.Errorf("sqlite: audit log of %d entries: %w", size, err)
		}
		if _, err := s.extend(entries); err != nil {
			return fmt.Errorf("sqlite: audit log of %d entries: %w", size, err)
		}
	}
	var right []auditlog.Tile
	for L := 0; size>>(auditlog.TileHeight*uint(L)) > 0; L++ {
		right = append(right, s.tiles.Right(L))
	}
	s.edge.set(right)
	// Under the lock: a recovery (health.go) restores the log while
	// readers and the checkpoint publisher read its head.
	s.logHead.mu.Lock()
	s.logHead.size, s.logHead.root = s.tree.Size(), s.tree.Root()
	s.logHead.mu.Unlock()
	return nil
}

// checkTiles checks the stored tiles against the latest stored
// checkpoint: the root of its tree computed from them must be its root.
// If it is not (a tile was damaged: a lost page reads as zeros), the tiles
// are dropped and written again from the entries, which are the truth;
// if the root still differs, the entries changed, which is not for a
// rebuild to hide: the publisher refuses that log at start. It costs a
// few hash reads per level; damage in a tile under a stored higher-level
// tile is not seen here (the higher tile is what proofs read).
func (s *Store) checkTiles(ctx context.Context) error {
	note, err := s.LatestCheckpoint(ctx)
	if err != nil || note == nil {
		return err
	}
	text, _, ok := bytes.Cut(note, []byte("\n\n"))
	if !ok {
		return nil
	}
	_, n, root, err := layout.ParseCheckpoint(append(text, '\n'))
	if err != nil || n == 0 || int64(n) > s.tree.Size() {
		return nil // not the tiles' business: the publisher checks the checkpoint
	}
	matches := func() bool {
		got, err := tlog.TreeHash(int64(n), s.HashReader(ctx))
		return err == nil && got == root
	}
	if matches() {
		return nil
	}
	if err := s.files.DropTiles("tiles"); err != nil {
		return fmt.Errorf("sqlite: audit log: %w", err)
	}
	if err := s.restoreLog(ctx); err != nil {
		return err
	}
	if !matches() {
		s.log.Warn("store: the audit log's tiles were rebuilt from the entries, and the log still does not have the root of its latest checkpoint: its entries changed",
			"checkpoint_size", n)
	}
	return nil
}

// extend adds entries to the tree (the frontier and the right-most
// tiles), writes the tiles that filled, and returns the tiles it changed.
// Partial tiles are never written: readers get them from memory
// (durableEdge), and restoreLog computes them again.
func (s *Store) extend(entries [][]byte) ([]auditlog.Tile, error) {
	hashes := s.hashBuf[:0]
	for _, e := range entries {
		hashes = s.tree.Append(hashes, e)
	}
	s.hashBuf = hashes
	changed, err := s.tiles.Add(hashes)
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EINTERNAL, "audit log")
	}
	for _, t := range changed {
		if len(t.Data) == tileWidth*tlog.HashSize {
			if err := s.files.WriteTile(t.L, t.N, t.Data); err != nil {
				return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
			}
		}
	}
	return changed, nil
}

// rightEdge computes the right-most tile of each tile level of a log of
// size entries, bottom up: level 0 from the entries' leaf hashes, level L
// from the roots of the full tiles of level L-1. A full tile is stored, so
// it is read; a partial one is computed.
func (s *Store) rightEdge(ctx context.Context, size int64) ([]auditlog.Tile, error) {
	var edge []auditlog.Tile
	for L := 0; ; L++ {
		count := size >> (auditlog.TileHeight * uint(L)) // hashes at tile level L
		if count == 0 {
			return edge, nil
		}
		n, w := (count-1)/tileWidth, (count-1)%tileWidth+1
		if w == tileWidth {
			data, err := s.storedTile(ctx, L, n)
			if err != nil {
				return nil, err
			}
			edge = append(edge, auditlog.Tile{L: L, N: n, Data: data})
			continue
		}
		data := make([]byte, 0, tileWidth*tlog.HashSize)
		if L == 0 {
			entries, err := s.files.ReadEntries(n*tileWidth, w)
			if err != nil {
				return nil, err
			}
			for _, e := range entries {
				h := tlog.RecordHash(e)
				data = append(data, h[:]...)
			}
		} else {
			for j := range w {
				below, err := s.storedTile(ctx, L-1, n*tileWidth+j)
				if err != nil {
					return nil, err
				}
				h, err := auditlog.TileRoot(below)
				if err != nil {
					return nil, fmt.Errorf("tile %d/%d: %w", L-1, n*tileWidth+j, err)
				}
				data = append(data, h[:]...)
			}
		}
		edge = append(edge, auditlog.Tile{L: L, N: n, Data: data})
	}
}

const tileWidth = 1 << auditlog.TileHeight

// durableEdge is the right-most tile of each level as of the durable log:
// what readers see of the tiles that are not stored yet. The syncer
// updates it when it releases a transaction.
type durableEdge struct {
	mu    sync.RWMutex
	tiles []auditlog.Tile
}

func (e *durableEdge) get(L int, n int64) ([]byte, bool) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if L < len(e.tiles) && e.tiles[L].N == n && e.tiles[L].Data != nil {
		return e.tiles[L].Data, true
	}
	return nil, false
}

func (e *durableEdge) set(tiles []auditlog.Tile) {
	e.mu.Lock()
	e.tiles = tiles
	e.mu.Unlock()
}

// advance records the tiles a durable transaction changed.
func (e *durableEdge) advance(changed []auditlog.Tile) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, t := range changed {
		for len(e.tiles) <= t.L {
			e.tiles = append(e.tiles, auditlog.Tile{L: len(e.tiles), N: -1})
		}
		if cur := e.tiles[t.L]; cur.N > t.N || (cur.N == t.N && len(cur.Data) >= len(t.Data)) {
			continue // an older state
		}
		e.tiles[t.L] = t
	}
}

// appendEntries adds entries to the log: it assigns their positions,
// computes the tree's new hashes with the frontier, writes the entries in
// one write and each hash tile that filled. The committer calls it; the
// syncer makes the entries durable.
func (s *Store) appendEntries(entries []logEntry) error {
	if len(entries) == 0 {
		return nil
	}
	datas := s.dataBuf[:0]
	for i, e := range entries {
		datas = append(datas, e.data)
		s.metaBuf = append(s.metaBuf, evindex.MetaOf(s.tree.Size()+int64(i), e.ev))
	}
	s.dataBuf = datas[:0]
	if err := s.files.Append(datas); err != nil {
		return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	changed, err := s.extend(datas)
	if err != nil {
		return err
	}
	s.changedTiles = append(s.changedTiles, changed...)
	return nil
}

// Append implements mandate.EventLog: it appends events that record no
// other change, durably, and returns the position of the first.
func (s *Store) Append(ctx context.Context, evs ...*mandate.Event) error {
	entries, err := encodeEvents(evs)
	if err != nil {
		return err
	}
	return s.queue(ctx, &write{entries: entries})
}

// HashReader reads the log's stored hashes (tlog.HashReader), computed
// from its hash tiles, for proofs.
func (s *Store) HashReader(ctx context.Context) tlog.HashReader {
	return auditlog.TileHashReader(func(L int, n int64) ([]byte, error) { return s.readTile(ctx, L, n) })
}

// ReadEntries returns the data of entries [start, start+n), all of which
// must be in the durable log.
func (s *Store) ReadEntries(ctx context.Context, start, n int64) ([][]byte, error) {
	if size, _ := s.LogHead(); start < 0 || n < 0 || start+n > size {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "audit log entries %d..%d are not all there: the log has %d", start, start+n-1, size)
	}
	out, err := s.files.ReadEntries(start, n)
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	return out, nil
}

// SaveCheckpoint stores a signed checkpoint (auditlog.CheckpointStore).
func (s *Store) SaveCheckpoint(ctx context.Context, size int64, note []byte) error {
	now := s.cfg.Now()
	return s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO log_checkpoints(size, note, created_at) VALUES(?,?,?) ON CONFLICT(size) DO NOTHING", size, note, ms(now))
		if err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		return nil
	}, nil)
}

// LatestCheckpoint returns the checkpoint of the largest size, or nil.
func (s *Store) LatestCheckpoint(ctx context.Context) ([]byte, error) {
	var note []byte
	err := s.db.QueryRowContext(ctx, "SELECT note FROM log_checkpoints ORDER BY size DESC LIMIT 1").Scan(&note)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	return note, nil
}

// LogDir is the directory of the audit log's files beside the database
// at path (Config.Path): <name>-log.
func LogDir(path string) string {
	return strings.TrimSuffix(path, filepath.Ext(path)) + "-log"
}

// Inspection is what a database holds that bears on its audit log.
type Inspection struct {
	// Holdings describes what the database holds whose making the log
	// records ("3 agents, 1 revocation"); "" if none. A database that
	// holds any beside an empty log lost its log: the server refuses to
	// start a new one over it.
	Holdings string
	// LogInDatabase: the database keeps its log itself, as versions before
	// the log files did (table log_entries); Open moves it into the files.
	LogInDatabase bool
}

// Inspect looks at the database at path without opening a Store, which
// would make the log's files: for the server to check, before it opens
// the store, that a missing log was never there. A database that does not
// exist holds nothing.
func Inspect(ctx context.Context, path string) (Inspection, error) {
	var in Inspection
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return in, nil
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return in, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, "SELECT name FROM sqlite_master WHERE type = 'table'")
	if err != nil {
		return in, fmt.Errorf("sqlite: %s: %w", path, err)
	}
	tables := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return in, fmt.Errorf("sqlite: %s: %w", path, err)
		}
		tables[name] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return in, fmt.Errorf("sqlite: %s: %w", path, err)
	}
	in.LogInDatabase = tables["log_entries"]
	var parts []string
	for _, t := range []struct{ table, one, many string }{
		{"agents", "agent", "agents"}, {"approvers", "approver", "approvers"}, {"approvals", "approval", "approvals"},
		{"revocations", "revocation", "revocations"}, {"tool_pins", "pinned tool", "pinned tools"},
	} {
		if !tables[t.table] {
			continue // a schema from before the table
		}
		var n int64
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM "+t.table).Scan(&n); err != nil {
			return in, fmt.Errorf("sqlite: %s: %w", path, err)
		}
		switch {
		case n == 1:
			parts = append(parts, "1 "+t.one)
		case n > 1:
			parts = append(parts, fmt.Sprintf("%d %s", n, t.many))
		}
	}
	in.Holdings = strings.Join(parts, ", ")
	return in, nil
}

// validEntry checks an entry's bytes when the log's files are recovered:
// a canonical event, or the tail is cut there.
func validEntry(b []byte) error {
	_, err := mandate.ParseEvent(b)
	return err
}

// moveLogToFiles moves the log of a database written by an earlier
// version (table log_entries) into the log files, makes them durable,
// and drops the old tables. Tiles are computed again from the entries.
func (s *Store) moveLogToFiles(ctx context.Context) error {
	var n int
	if err := s.wconn.QueryRowContext(ctx, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'log_entries'").Scan(&n); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	if n == 0 {
		return nil
	}
	var rows int64
	if err := s.wconn.QueryRowContext(ctx, "SELECT count(*) FROM log_entries").Scan(&rows); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	// A move that a crash interrupted left a prefix in the files: it must
	// be the database's, and the move goes on after it.
	done := s.files.Size()
	if done > rows {
		return fmt.Errorf("sqlite: the log files hold %d entries and the database's old log %d: they are not the same log; move the log files (%s) aside to start the move again",
			done, rows, s.files.Dir())
	}
	const chunk = 4096
	for start := int64(0); start < rows; start += chunk {
		n := min(chunk, rows-start)
		old, err := s.oldEntries(ctx, start, n)
		if err != nil {
			return fmt.Errorf("sqlite: moving the audit log to its files: %w", err)
		}
		// What a move that a crash interrupted wrote must be the same;
		// the rest is appended.
		k := min(max(done-start, 0), n)
		if k > 0 {
			have, err := s.files.ReadEntries(start, k)
			if err != nil {
				return fmt.Errorf("sqlite: moving the audit log to its files: %w", err)
			}
			for i := range have {
				if !bytes.Equal(old[i], have[i]) {
					return fmt.Errorf("sqlite: the log files' entry %d is not the database's: they are not the same log; move the log files (%s) aside to start the move again",
						start+int64(i), s.files.Dir())
				}
			}
		}
		if k < n {
			if err := s.files.Append(old[k:]); err != nil {
				return fmt.Errorf("sqlite: moving the audit log to its files: %w", err)
			}
		}
	}
	if rows > done {
		if err := s.files.Sync(); err != nil {
			return fmt.Errorf("sqlite: moving the audit log to its files: %w", err)
		}
		s.log.Info("store: moved the audit log into its files", "entries", rows, "resumed_at", done)
	}
	if _, err := s.wconn.ExecContext(ctx, "DROP TABLE log_entries; DROP TABLE IF EXISTS log_tiles"); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	return nil
}

// oldEntries reads entries [start, start+n) of an earlier version's log
// table, all of which must be there.
func (s *Store) oldEntries(ctx context.Context, start, n int64) ([][]byte, error) {
	r, err := s.wconn.QueryContext(ctx, "SELECT idx, data FROM log_entries WHERE idx >= ? AND idx < ? ORDER BY idx", start, start+n)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	out := make([][]byte, 0, n)
	for r.Next() {
		var idx int64
		var data []byte
		if err := r.Scan(&idx, &data); err != nil {
			return nil, err
		}
		if idx != start+int64(len(out)) {
			break
		}
		out = append(out, data)
	}
	if err := r.Err(); err != nil {
		return nil, err
	}
	if int64(len(out)) != n {
		return nil, fmt.Errorf("audit log entry %d is missing", start+int64(len(out)))
	}
	return out, nil
}

// appendPending reconciles the log with the database after a crash: the
// events of durable transactions (log_pending) that the log lost are
// appended to it, in order; those it holds must be the same bytes.
func (s *Store) appendPending(ctx context.Context) error {
	rows, err := s.wconn.QueryContext(ctx, "SELECT idx, data FROM log_pending ORDER BY idx")
	if err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	size := s.files.Size()
	var lost [][]byte
	var check []int64
	var checkData [][]byte
	for rows.Next() {
		var idx int64
		var data []byte
		if err := rows.Scan(&idx, &data); err != nil {
			rows.Close()
			return fmt.Errorf("sqlite: %w", err)
		}
		if idx < size {
			check, checkData = append(check, idx), append(checkData, data)
		} else {
			lost = append(lost, data)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	for i, idx := range check {
		got, err := s.files.ReadEntries(idx, 1)
		if err != nil {
			return fmt.Errorf("sqlite: audit log entry %d: %w", idx, err)
		}
		if !bytes.Equal(got[0], checkData[i]) {
			return fmt.Errorf("sqlite: audit log entry %d is not the event its transaction recorded: the log was changed", idx)
		}
	}
	if len(lost) > 0 {
		// Never write at positions a signed checkpoint covers: a log
		// shorter than its last checkpoint is refused at start, and must
		// stay as it was found.
		var signed int64
		if err := s.wconn.QueryRowContext(ctx, "SELECT coalesce(max(size), 0) FROM log_checkpoints").Scan(&signed); err != nil {
			return fmt.Errorf("sqlite: %w", err)
		}
		if signed > size {
			return fmt.Errorf("sqlite: the audit log holds %d entries, fewer than the %d its last signed checkpoint covers: entries were removed", size, signed)
		}
		// First move their rows to the positions they take now, durably,
		// so that a crash in the middle of this finds them where they are.
		err := s.execNow(ctx, func(tx *sql.Conn) error {
			if _, err := tx.ExecContext(ctx, "DELETE FROM log_pending WHERE idx >= ?", size); err != nil {
				return err
			}
			for i, data := range lost {
				if _, err := tx.ExecContext(ctx, "INSERT INTO log_pending(idx, data) VALUES(?, ?)", size+int64(i), data); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("sqlite: %w", err)
		}
		if err := s.files.Append(lost); err != nil {
			return fmt.Errorf("sqlite: %w", err)
		}
		if err := s.syncLog(); err != nil {
			return err
		}
		s.log.Warn("store: appended the events of committed changes that a crash kept from the audit log", "events", len(lost), "at", size)
	}
	if _, err := s.wconn.ExecContext(ctx, "DELETE FROM log_pending"); err != nil {
		return fmt.Errorf("sqlite: %w", err)
	}
	return nil
}

// execNow runs fn in a durable transaction on the writer connection, before
// the committer starts (Open).
func (s *Store) execNow(ctx context.Context, fn func(*sql.Conn) error) error {
	if _, err := s.wconn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return err
	}
	if err := fn(s.wconn); err != nil {
		s.wconn.ExecContext(ctx, "ROLLBACK")
		return err
	}
	if _, err := s.wconn.ExecContext(ctx, "COMMIT"); err != nil {
		s.wconn.ExecContext(ctx, "ROLLBACK")
		return err
	}
	return s.syncWAL()
}
