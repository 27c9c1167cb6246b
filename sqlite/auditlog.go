package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditlog"
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

func tileID(L int, n int64) int64 { return int64(L)<<40 | n }

// readTile returns the data of hash tile (L, n): the durable right edge's
// if it is a right-most tile (partial tiles are not written, see
// appendEntries), the stored data otherwise.
func (s *Store) readTile(ctx context.Context, L int, n int64) ([]byte, error) {
	if data, ok := s.edge.get(L, n); ok {
		return data, nil
	}
	return s.storedTile(ctx, L, n)
}

// storedTile returns the stored data of hash tile (L, n).
func (s *Store) storedTile(ctx context.Context, L int, n int64) ([]byte, error) {
	var data []byte
	err := s.db.QueryRowContext(ctx, "SELECT data FROM log_tiles WHERE id = ?", tileID(L, n)).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "no hash tile %d/%d", L, n)
	}
	if err != nil {
		return nil, mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
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

// restoreLog rebuilds the committer's frontier and right-most tiles. Full
// tiles are stored; the right-most tile of each level is recomputed from
// the entries (level 0) or from the full tiles of the level below, since
// it is not written as it grows.
func (s *Store) restoreLog(ctx context.Context) error {
	var n sql.NullInt64
	if err := s.db.QueryRowContext(ctx, "SELECT max(idx) FROM log_entries").Scan(&n); err != nil {
		return fmt.Errorf("sqlite: audit log size: %w", err)
	}
	size := int64(0)
	if n.Valid {
		size = n.Int64 + 1
	}
	edge, err := s.rightEdge(ctx, size)
	if err != nil {
		return fmt.Errorf("sqlite: audit log of %d entries: %w", size, err)
	}
	read := func(L int, n int64) ([]byte, error) {
		if L < len(edge) && edge[L].N == n {
			return edge[L].Data, nil
		}
		return s.storedTile(ctx, L, n)
	}
	tiles, err := auditlog.RestoreTiles(size, read)
	if err != nil {
		return fmt.Errorf("sqlite: audit log of %d entries: %w", size, err)
	}
	f, err := auditlog.Restore(size, auditlog.TileHashReader(read))
	if err != nil {
		return fmt.Errorf("sqlite: audit log of %d entries: %w", size, err)
	}
	s.tree, s.tiles = f, tiles
	s.edge.set(edge)
	s.logHead.size, s.logHead.root = f.Size(), f.Root()
	return nil
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
			entries, err := s.ReadEntries(ctx, n*tileWidth, w)
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

// appendEntries adds entries to the log inside the committer's
// transaction: it assigns their positions, computes the tree's new hashes
// with the frontier, inserts the entries with multi-row statements, and
// writes each hash tile that changed once.
func (s *Store) appendEntries(ctx context.Context, entries []logEntry) error {
	if len(entries) == 0 {
		return nil
	}
	const entryCols = 2
	hashes := s.hashBuf[:0]
	eargs := make([]any, 0, entryCols*len(entries))
	for _, e := range entries {
		idx := s.tree.Size()
		hashes = s.tree.Append(hashes, e.data)
		eargs = append(eargs, idx, e.data)
		s.metaBuf = append(s.metaBuf, evindex.MetaOf(idx, e.ev))
	}
	s.hashBuf = hashes
	if err := s.insertRows(ctx, "log_entries(idx, data)", entryCols, eargs); err != nil {
		return err
	}
	// Only full tiles are written: a partial tile would be written again
	// by every transaction until it fills (two or three pages of WAL each
	// time), and restoreLog recomputes it from the entries. Readers get
	// the durable partial tiles from memory (durableEdge).
	changed, err := s.tiles.Add(hashes)
	if err != nil {
		return mandate.Errorf(mandate.EINTERNAL, "audit log: %w", err)
	}
	for _, t := range changed {
		if len(t.Data) == tileWidth*tlog.HashSize {
			if _, err := s.upsertTile.ExecContext(ctx, tileID(t.L, t.N), t.Data); err != nil {
				return mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
			}
		}
	}
	s.changedTiles = append(s.changedTiles, changed...)
	return nil
}

// maxVarsPerStatement bounds a multi-row insert: SQLite allows 32766
// variables in one statement.
const maxVarsPerStatement = 32000

// insertRows inserts rows of cols values each into table (with its column
// list), many rows per statement, with statements prepared once per shape.
// Only the committer calls it.
func (s *Store) insertRows(ctx context.Context, table string, cols int, args []any) error {
	perStmt := min(maxVarsPerStatement/cols, 256)
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", cols), ",") + "),"
	for len(args) > 0 {
		n := min(len(args)/cols, perStmt)
		key := fmt.Sprintf("%s/%d", table, n)
		stmt := s.stmts[key]
		if stmt == nil {
			var err error
			q := "INSERT INTO " + table + " VALUES " + strings.TrimSuffix(strings.Repeat(row, n), ",")
			if stmt, err = s.wconn.PrepareContext(ctx, q); err != nil {
				return mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
			}
			s.stmts[key] = stmt
		}
		if _, err := stmt.ExecContext(ctx, args[:n*cols]...); err != nil {
			if isUnique(err) {
				return mandate.Errorf(mandate.ECONFLICT, "a row in the batch exists")
			}
			return mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
		}
		args = args[n*cols:]
	}
	return nil
}

// Append implements mandate.EventLog: it appends events that record no
// other change, durably, and returns the position of the first.
func (s *Store) Append(ctx context.Context, evs ...*mandate.Event) error {
	entries, err := encodeEvents(evs)
	if err != nil {
		return err
	}
	return s.queue(ctx, &write{fn: func(context.Context, *writeTx) error { return nil }, entries: entries})
}

// HashReader reads the log's stored hashes (tlog.HashReader), computed
// from its hash tiles, for proofs.
func (s *Store) HashReader(ctx context.Context) tlog.HashReader {
	return auditlog.TileHashReader(func(L int, n int64) ([]byte, error) { return s.readTile(ctx, L, n) })
}

// ReadEntries returns the data of entries [start, start+n), all of which
// must exist.
func (s *Store) ReadEntries(ctx context.Context, start, n int64) ([][]byte, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT idx, data FROM log_entries WHERE idx >= ? AND idx < ? ORDER BY idx", start, start+n)
	if err != nil {
		return nil, mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
	}
	defer rows.Close()
	out := make([][]byte, 0, n)
	for rows.Next() {
		var idx int64
		var data []byte
		if err := rows.Scan(&idx, &data); err != nil {
			return nil, mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
		}
		if idx != start+int64(len(out)) {
			return nil, mandate.Errorf(mandate.EINTERNAL, "audit log entry %d is missing", start+int64(len(out)))
		}
		out = append(out, data)
	}
	if err := rows.Err(); err != nil {
		return nil, mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
	}
	if int64(len(out)) != n {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "audit log entries %d..%d are not all there", start, start+n-1)
	}
	return out, nil
}

// SaveCheckpoint stores a signed checkpoint (auditlog.CheckpointStore).
func (s *Store) SaveCheckpoint(ctx context.Context, size int64, note []byte) error {
	now := s.cfg.Now()
	return s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO log_checkpoints(size, note, created_at) VALUES(?,?,?) ON CONFLICT(size) DO NOTHING", size, note, ms(now))
		if err != nil {
			return mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
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
		return nil, mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
	}
	return note, nil
}
