package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mandatehq/mandate/internal/atomicfile"
	"github.com/mandatehq/mandate/replay"
	"golang.org/x/mod/sumdb/tlog"
)

// The replay snapshot (docs/reliability.md, "Start after a burst"): the
// issuer's replay set, written every replaySnapshotInterval while the log
// grows and at Close, so that a start restores it and reads only the
// issuance events after it, instead of every one of the last minutes.
const (
	replaySnapshotFile     = "replay.snapshot"
	replaySnapshotInterval = 5 * time.Second
	// replayCoverSize is the size of a snapshot's cover: the durable log's
	// size (uint64) and root hash when the snapshot was taken.
	replayCoverSize = 8 + tlog.HashSize
)

// replayRestore is what restoreReplay did, for the start's log line and
// for tests.
type replayRestore struct {
	fromSnapshot int    // entries restored from the snapshot
	from         int64  // the log position the events were read from
	events       int64  // issuance events read from the log
	fromLog      int    // assertions restored from the log and the used_assertions rows
	fallback     string // why the snapshot was not used, if it was not
	took         time.Duration
}

// restoreReplay fills the issuer's replay set before serving: from the
// snapshot if there is a good one, then from the issuance events after the
// log position it covers and the recorded assertions. The log is the
// truth: a snapshot that is missing, damaged, or does not match the log
// (it covers more than the log holds, or another history) is set aside,
// saying so, and the set is rebuilt from the log's last minutes as if
// there were none.
func (m *Main) restoreReplay(ctx context.Context) error {
	r := &m.replayRestored
	start := time.Now()
	defer func() { r.took = time.Since(start) }()
	snap, from, why := m.loadReplaySnapshot(ctx)
	if snap != nil {
		n, err := m.replay.Restore(snap, m.Now())
		if err != nil {
			return fmt.Errorf("restore the replay set from %s: %w", replaySnapshotFile, err)
		}
		r.fromSnapshot, r.from = n, from
	} else if why != "" {
		r.fallback = why
		m.Logger.Warn("replay snapshot not used: reading the replay set from the audit log's last minutes",
			"reason", why, "hint", "nothing is lost: the snapshot only makes the start faster, and the next one is written within seconds")
	}
	used := m.Store.UsedAssertionsFrom(r.from)
	n, err := m.Issuer.RestoreReplay(ctx, used)
	r.events, r.fromLog = used.Events(), n
	if err != nil {
		return fmt.Errorf("restore the replay set: %w", err)
	}
	if r.fromSnapshot+r.fromLog > 0 || r.events > 0 {
		m.Logger.Info("client assertions still live at restart marked as used", "count", r.fromSnapshot+r.fromLog,
			"from_snapshot", r.fromSnapshot, "issuance_events_read", r.events, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// loadReplaySnapshot reads and checks the replay snapshot: it returns it
// and the log position it covers, or nil and why it is not used ("" if
// there is none).
func (m *Main) loadReplaySnapshot(ctx context.Context) (*replay.Snapshot, int64, string) {
	path := filepath.Join(m.DataDir, replaySnapshotFile)
	limit := int64(m.replay.Capacity())*(16+8) + 4096
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, ""
	} else if err != nil {
		return nil, 0, err.Error()
	}
	if fi.Size() > limit {
		return nil, 0, fmt.Sprintf("%s is %d bytes, more than a full replay set takes", path, fi.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err.Error()
	}
	snap, err := replay.ReadSnapshot(data, m.replay.Capacity())
	if err != nil {
		return nil, 0, fmt.Sprintf("%s: %v", path, err)
	}
	if len(snap.Cover) != replayCoverSize {
		return nil, 0, fmt.Sprintf("%s: a cover of %d bytes, not %d", path, len(snap.Cover), replayCoverSize)
	}
	if now := m.Now(); now.Before(snap.Taken) {
		// What expired by the snapshot's clock was left out; by ours,
		// some of it has not expired.
		return nil, 0, fmt.Sprintf("%s was taken at %s, after now (%s): the clock went back",
			path, snap.Taken.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	n := int64(binary.BigEndian.Uint64(snap.Cover))
	var root tlog.Hash
	copy(root[:], snap.Cover[8:])
	size, head := m.Store.LogHead()
	switch {
	case n < 0 || n > size:
		return nil, 0, fmt.Sprintf("%s covers %d log entries, the log holds %d", path, n, size)
	case n == size:
		if root != head {
			return nil, 0, fmt.Sprintf("%s is of another history of the log: its root at %d entries differs", path, n)
		}
	case n > 0:
		h, err := tlog.TreeHash(n, m.Store.HashReader(ctx))
		if err != nil {
			return nil, 0, fmt.Sprintf("the log's root at %d entries, to check %s: %v", n, path, err)
		}
		if h != root {
			return nil, 0, fmt.Sprintf("%s is of another history of the log: its root at %d entries differs", path, n)
		}
	}
	return snap, n, ""
}

// snapshotReplay writes the replay snapshot every replaySnapshotInterval
// while the log grows, off the requests' path, until ctx ends (Close
// writes the last one).
func (m *Main) snapshotReplay(ctx context.Context) error {
	t := time.NewTicker(replaySnapshotInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := m.writeReplaySnapshot(false); err != nil {
			m.Logger.Warn("replay snapshot not written: the next start reads more of the audit log", "err", err)
		}
	}
}

// writeReplaySnapshot writes the replay snapshot if the log has grown
// since the last one (or always, if force), atomically and 0600. Its
// cover is the durable log's head, taken before the set is copied: every
// issuance at a position before it used its assertion up in the set before
// it was appended, so the snapshot holds every assertion the covered log
// names that is still live.
func (m *Main) writeReplaySnapshot(force bool) error {
	size, root := m.Store.LogHead()
	if !force && size == m.replaySnapshotAt {
		return nil
	}
	cover := binary.BigEndian.AppendUint64(make([]byte, 0, replayCoverSize), uint64(size))
	cover = append(cover, root[:]...)
	data := m.replay.AppendSnapshot(nil, cover, m.Now())
	if err := atomicfile.Write(filepath.Join(m.DataDir, replaySnapshotFile), data, 0o600); err != nil {
		return err
	}
	m.replaySnapshotAt = size
	return nil
}
