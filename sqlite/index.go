package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"

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
// order, with their positions, at most f.Limit (the last ones if f.Last).
func (s *Store) Events(ctx context.Context, f mandate.EventFilter) ([]mandate.LoggedEvent, error) {
	if f.Limit <= 0 || f.Limit > mandate.MaxEventsPerQuery {
		f.Limit = mandate.MaxEventsPerQuery
	}
	var out []mandate.LoggedEvent
	err := s.walkEvents(ctx, f, f.Last, func(e mandate.LoggedEvent) error {
		out = append(out, e)
		if len(out) == f.Limit {
			return evindex.ErrStop
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if f.Last {
		slices.Reverse(out)
	}
	return out, nil
}

// walkEvents calls fn with every event that matches f, in log order or, if
// desc, backwards, until fn returns an error; ErrStop ends the walk with
// nil. f.Limit does not stop it (fn does): it sizes the reads, so that a
// walk that wants one event reads a few candidates, not hundreds. The
// index names candidates; each is read and kept only if it matches f
// exactly.
func (s *Store) walkEvents(ctx context.Context, f mandate.EventFilter, desc bool, fn func(mandate.LoggedEvent) error) error {
	chunk := 500
	if f.Limit > 0 {
		chunk = min(max(f.Limit, 16), chunk)
	}
	batch := make([]int64, 0, chunk)
	read := func() error {
		if len(batch) == 0 {
			return nil
		}
		if desc {
			slices.Reverse(batch) // entriesAt wants log order
		}
		evs, err := s.entriesAt(ctx, batch)
		if err != nil {
			return err
		}
		if desc {
			slices.Reverse(evs)
		}
		batch = batch[:0]
		for _, e := range evs {
			if evindex.Matches(&f, e.Index, e.Event) {
				if err := fn(e); err != nil {
					return err
				}
			}
		}
		return ctx.Err()
	}
	size, _ := s.LogHead()
	err := s.index.Walk(&f, 0, size, desc, func(idx int64) error {
		batch = append(batch, idx)
		if len(batch) < chunk {
			return nil
		}
		return read()
	})
	if err == nil {
		err = read()
	}
	if err == nil || errors.Is(err, evindex.ErrStop) {
		return nil
	}
	return indexError(err)
}

// entriesAt reads and parses the entries at the positions idxs, which are
// in log order, reading each run of adjacent positions at once.
func (s *Store) entriesAt(ctx context.Context, idxs []int64) ([]mandate.LoggedEvent, error) {
	out := make([]mandate.LoggedEvent, 0, len(idxs))
	for i := 0; i < len(idxs); {
		j := i + 1
		for j < len(idxs) && idxs[j] == idxs[j-1]+1 {
			j++
		}
		entries, err := s.ReadEntries(ctx, idxs[i], int64(j-i))
		if err != nil {
			return nil, err
		}
		for k, data := range entries {
			ev, err := mandate.ParseEvent(data)
			if err != nil {
				return nil, mandate.Wrapf(err, mandate.EINTERNAL, "audit log entry %d does not parse", idxs[i]+int64(k))
			}
			out = append(out, mandate.LoggedEvent{Index: idxs[i] + int64(k), Event: ev})
		}
		i = j
	}
	return out, nil
}

// IndexStats describes the event index.
func (s *Store) IndexStats() evindex.Stats { return s.index.Stats() }
