package sqlite

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/evindex"
)

// The event index answers audit queries (by task, mandate, agent, type and
// time) without taxing the write path: the syncer hands each durable
// entry's query fields to it (package evindex), which keeps them in memory
// and writes them, sorted, as run files of its own in the background. It
// is never fsynced on the write path: what a crash loses of it is rebuilt
// from the log at Open.

// openIndex opens (or creates) the index in dir and catches it up with the
// log's size entries. An index database of an earlier version beside the
// store (path-events-index.db) is removed: the runs replace it.
func (s *Store) openIndex(ctx context.Context, dir, oldDB string, size int64) error {
	for _, p := range []string{oldDB, oldDB + "-wal", oldDB + "-shm"} {
		os.Remove(p)
	}
	read := func(start, n int64) ([]evindex.Meta, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		entries, err := s.ReadEntries(ctx, start, n)
		if err != nil {
			return nil, err
		}
		metas := make([]evindex.Meta, len(entries))
		for i, data := range entries {
			ev, err := mandate.ParseEvent(data)
			if err != nil {
				return nil, fmt.Errorf("audit log entry %d does not parse: %w", start+int64(i), err)
			}
			metas[i] = evindex.MetaOf(start+int64(i), ev)
		}
		return metas, nil
	}
	ix, err := evindex.Open(evindex.Config{Dir: dir, FlushEntries: s.cfg.IndexFlushEntries, Logger: s.log}, size, read)
	if err != nil {
		return fmt.Errorf("sqlite: event index: %w", err)
	}
	s.index = ix
	return nil
}

// Events implements mandate.EventQuerier: the events that match f, in log
// order, with their positions. The index names candidates; each is read
// and kept only if it matches f exactly.
func (s *Store) Events(ctx context.Context, f mandate.EventFilter) ([]mandate.LoggedEvent, error) {
	if f.Limit <= 0 || f.Limit > mandate.MaxEventsPerQuery {
		f.Limit = mandate.MaxEventsPerQuery
	}
	chunk := min(max(f.Limit, 16), 500)
	var out []mandate.LoggedEvent
	batch := make([]int64, 0, chunk)
	read := func() error {
		if len(batch) == 0 {
			return nil
		}
		evs, err := s.entriesAt(ctx, batch)
		if err != nil {
			return err
		}
		if f.Last { // the walk goes backwards; the rows come in log order
			slices.Reverse(evs)
		}
		for _, e := range evs {
			if evindex.Matches(&f, e.Index, e.Event) {
				out = append(out, e)
			}
		}
		batch = batch[:0]
		return nil
	}
	err := s.index.Walk(&f, 0, math.MaxInt64, f.Last, func(idx int64) error {
		batch = append(batch, idx)
		if len(batch) < chunk {
			return nil
		}
		if err := read(); err != nil {
			return err
		}
		if len(out) >= f.Limit {
			return evindex.ErrStop
		}
		return ctx.Err()
	})
	if err == nil {
		err = read()
	}
	if err != nil {
		var merr *mandate.Error
		if errors.As(err, &merr) {
			return nil, err
		}
		return nil, mandate.Errorf(mandate.EUNAVAILABLE, "event index unavailable: %w", err)
	}
	if len(out) > f.Limit {
		out = out[:f.Limit]
	}
	if f.Last {
		slices.Reverse(out)
	}
	return out, nil
}

// entriesAt reads and parses the entries at the positions idxs, in log
// order.
func (s *Store) entriesAt(ctx context.Context, idxs []int64) ([]mandate.LoggedEvent, error) {
	args := make([]any, len(idxs))
	for i, x := range idxs {
		args[i] = x
	}
	rows, err := s.db.QueryContext(ctx, "SELECT idx, data FROM log_entries WHERE idx IN ("+
		strings.TrimSuffix(strings.Repeat("?,", len(idxs)), ",")+") ORDER BY idx", args...)
	if err != nil {
		return nil, mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
	}
	defer rows.Close()
	out := make([]mandate.LoggedEvent, 0, len(idxs))
	for rows.Next() {
		var idx int64
		var data []byte
		if err := rows.Scan(&idx, &data); err != nil {
			return nil, mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
		}
		ev, err := mandate.ParseEvent(data)
		if err != nil {
			return nil, mandate.Errorf(mandate.EINTERNAL, "audit log entry %d does not parse: %w", idx, err)
		}
		out = append(out, mandate.LoggedEvent{Index: idx, Event: ev})
	}
	if err := rows.Err(); err != nil {
		return nil, mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: %w", err)
	}
	if len(out) != len(idxs) {
		return nil, mandate.Errorf(mandate.EINTERNAL, "the event index names entries the log does not have")
	}
	return out, nil
}
