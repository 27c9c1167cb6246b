package sqlite

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/mandatehq/mandate"
)

// RestoreFilter is what a start reads back of the log to rebuild the
// state kept in memory (the gateway's task state, the monitor's): every
// event of Types at or after Since, and, of the tasks those events name,
// their events of TaskTypes at or after Since. A task's root issuance says
// when it ends, but most tasks of a burst of issuances never call a tool:
// reading the issuances of the tasks that did, and no other, is what
// keeps a start after such a burst short.
type RestoreFilter struct {
	Since     time.Time
	Types     []string
	TaskTypes []string
	// DenialsOnly are types of Types of which only the events whose
	// outcome is deny are wanted (the decisions: what was allowed changes
	// no state, and most decisions are allowed).
	DenialsOnly []string
}

// RestoreStats say how much of the log RestoreEvents read.
type RestoreStats struct {
	Events int64 // passed to fn
	Parsed int64 // decoded whole (ParseEvent)
	Peeked int64 // of which only the type and task were read
}

// restoreChunk is how many entries RestoreEvents reads at once.
const restoreChunk = 512

// RestoreEvents calls fn with the events f names, in log order. The event
// index names the positions of the types and of the tasks without a read;
// an entry's type, task and outcome are read without decoding the rest
// (mandate.PeekEvent, PeekOutcome) to find the tasks, and to skip the
// allowed decisions, the events of those tasks that are of neither kind
// and those the index named by a collision of hashes: only the events
// passed to fn are decoded whole (and any whose first fields are escaped).
func (s *Store) RestoreEvents(ctx context.Context, f RestoreFilter, fn func(mandate.LoggedEvent)) (RestoreStats, error) {
	var st RestoreStats
	size, _ := s.LogHead()
	since := int64(-1 << 63)
	if !f.Since.IsZero() {
		since = f.Since.UnixNano()
	}
	// The positions of the types.
	var typed []int64
	for _, typ := range f.Types {
		err := s.index.Walk(&mandate.EventFilter{Type: typ, Since: f.Since}, 0, size, false, func(idx int64) error {
			typed = append(typed, idx)
			return nil
		})
		if err != nil {
			return st, indexError(err)
		}
	}
	slices.Sort(typed)
	typed = slices.Compact(typed)
	// The wanted ones and their tasks, read from the entries' first
	// fields.
	wanted := make([]int64, 0, len(typed))
	tasks := map[string]bool{}
	err := s.rawAt(ctx, typed, func(idx int64, data []byte) error {
		typ, task, ok := mandate.PeekEvent(data)
		outcome := ""
		if ok && slices.Contains(f.DenialsOnly, typ) {
			outcome, ok = mandate.PeekOutcome(data)
		}
		if ok {
			st.Peeked++
		} else {
			ev, err := parseAt(idx, data)
			if err != nil {
				return err
			}
			st.Parsed++
			typ, task, outcome = ev.Type, ev.Task, ev.Outcome
		}
		if !slices.Contains(f.Types, typ) || (slices.Contains(f.DenialsOnly, typ) && outcome != mandate.OutcomeDeny) {
			return nil // a collision of hashes, or an allowed decision
		}
		wanted = append(wanted, idx)
		if task != "" {
			tasks[task] = true
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	typed = wanted
	// The positions of those tasks' other events.
	var others []int64
	if len(f.TaskTypes) > 0 && len(tasks) > 0 {
		ps, err := s.index.TaskPositions(mapKeys(tasks), since, 0, size)
		if err != nil {
			return st, indexError(err)
		}
		for _, p := range ps {
			if _, found := slices.BinarySearch(typed, p); !found {
				others = append(others, p)
			}
		}
	}
	// Both, in log order, each read once more and decoded whole if it is
	// wanted.
	all := mergeSorted(typed, others)
	err = s.rawAt(ctx, all, func(idx int64, data []byte) error {
		_, isTyped := slices.BinarySearch(typed, idx)
		if typ, task, ok := mandate.PeekEvent(data); ok && !isTyped && (!slices.Contains(f.TaskTypes, typ) || !tasks[task]) {
			return nil // another event of one of the tasks
		}
		ev, err := parseAt(idx, data)
		if err != nil {
			return err
		}
		st.Parsed++
		if ev.Time < since {
			return nil
		}
		if isTyped || (slices.Contains(f.TaskTypes, ev.Type) && tasks[ev.Task]) {
			st.Events++
			fn(mandate.LoggedEvent{Index: idx, Event: ev})
		}
		return nil
	})
	return st, err
}

// rawAt calls fn with the entries at the positions idxs, which are in log
// order, reading up to restoreChunk adjacent ones at once.
func (s *Store) rawAt(ctx context.Context, idxs []int64, fn func(idx int64, data []byte) error) error {
	for i := 0; i < len(idxs); {
		j := i + 1
		for j < len(idxs) && j-i < restoreChunk && idxs[j] == idxs[j-1]+1 {
			j++
		}
		entries, err := s.ReadEntries(ctx, idxs[i], int64(j-i))
		if err != nil {
			return err
		}
		for k, data := range entries {
			if err := fn(idxs[i]+int64(k), data); err != nil {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		i = j
	}
	return nil
}

func parseAt(idx int64, data []byte) (*mandate.Event, error) {
	ev, err := mandate.ParseEvent(data)
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EINTERNAL, "audit log entry %d does not parse", idx)
	}
	return ev, nil
}

// indexError is an error of the event index as walkEvents returns it.
func indexError(err error) error {
	var merr *mandate.Error
	if errors.As(err, &merr) {
		return err
	}
	return mandate.Wrapf(err, mandate.EUNAVAILABLE, "event index unavailable")
}

func mapKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// mergeSorted merges two sorted lists of positions.
func mergeSorted(a, b []int64) []int64 {
	out := make([]int64, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0] < b[0] {
			out, a = append(out, a[0]), a[1:]
		} else {
			out, b = append(out, b[0]), b[1:]
		}
	}
	return append(append(out, a...), b...)
}
