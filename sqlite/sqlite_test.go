package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/sqlite"
	"github.com/mandatehq/mandate/storetest"
)

func TestConformance(t *testing.T) {
	paths := map[storetest.Store]string{}
	open := func(t *testing.T, path string) storetest.Store {
		s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		paths[s] = path
		return s
	}
	storetest.Run(t,
		func(t *testing.T) storetest.Store { return open(t, filepath.Join(t.TempDir(), "m.db")) },
		func(t *testing.T, s storetest.Store) storetest.Store {
			if err := s.(*sqlite.Store).Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, paths[s])
		})
}

func TestDatabaseFileIsPrivate(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755) // a data directory that others may list
	path := filepath.Join(dir, "sub", "m.db")
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Write something so that the WAL and its index exist.
	if err := s.Revoke(context.Background(), &mandate.Revocation{MandateID: "m", ExpiresAt: time.Now().Add(time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", filepath.Base(p), fi.Mode().Perm())
		}
	}
	di, _ := os.Stat(filepath.Dir(path))
	if di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", di.Mode().Perm())
	}
}

func TestClosedStoreRefusesWrites(t *testing.T) {
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "m.db")})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	err = s.RecordIssuance(context.Background(), &mandate.Issuance{MandateID: "m", TaskID: "t"}, nil)
	if mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("write to a closed store: %v", err)
	}
}

func TestPruneRevocations(t *testing.T) {
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "m.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	ctx := context.Background()
	s.Revoke(ctx, &mandate.Revocation{MandateID: "short", ExpiresAt: now.Add(time.Second), RevokedAt: now}, nil)
	s.Revoke(ctx, &mandate.Revocation{MandateID: "long", ExpiresAt: now.Add(time.Hour), RevokedAt: now}, nil)
	if n := s.PruneRevocations(now.Add(2 * time.Second)); n != 1 {
		t.Errorf("pruned %d, want 1", n)
	}
	if ok, _ := s.IsRevoked(ctx, "long"); !ok {
		t.Error("a live revocation was pruned")
	}
}

// The WAL stays bounded under writes that never pause: the committer
// restarts it past the limit (PASSIVE checkpoints alone never can).
func TestWALStaysBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	const limit = 1 << 20
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, WALLimit: limit})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	var maxWAL atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 400 {
				ev := &mandate.Event{V: 1, Time: time.Now().UnixNano(), Type: mandate.EventDecision, Task: fmt.Sprintf("t_%d_%d", w, i),
					Reason: strings.Repeat("x", 2000)}
				if err := s.Append(ctx, ev); err != nil {
					t.Error(err)
					return
				}
				if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > maxWAL.Load() {
					maxWAL.Store(fi.Size())
				}
			}
		}()
	}
	wg.Wait()
	// 3,200 events of ~2 KB: ~7 MB written. The WAL restarts past 1 MB;
	// allow for a transaction's worth beyond the limit.
	if got := maxWAL.Load(); got > 4*limit {
		t.Errorf("WAL reached %d bytes with a %d-byte limit", got, limit)
	}
}

// A damaged or foreign event index is rebuilt from the log at start, and
// queries find every event again.
func TestEventIndexRebuilt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.db")
	ctx := context.Background()
	s, err := sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if err := s.Append(ctx, &mandate.Event{V: 1, Time: int64(i), Type: mandate.EventDecision, Task: "t_1"}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	// Knock a hole in the index, as a power loss without fsync might.
	idx := filepath.Join(dir, "m-events-index.db")
	if err := os.WriteFile(idx, []byte("not a database, not at all, this is garbage of some length"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(idx + "-wal")
	os.Remove(idx + "-shm")
	s, err = sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	evs, err := s.Events(ctx, mandate.EventFilter{Task: "t_1"})
	if err != nil || len(evs) != 50 {
		t.Fatalf("after the rebuild: %d events (%v), want 50", len(evs), err)
	}
}

// When the disk does not confirm a write, the writes of that fsync fail,
// nothing of them is released (not the log head a checkpoint would sign),
// and every later write fails too, even if a later fsync would succeed.
func TestFailedFsyncReleasesNothing(t *testing.T) {
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "m.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	ev := func() *mandate.Event { return &mandate.Event{V: 1, Time: 1, Type: mandate.EventDecision} }
	if err := s.Append(ctx, ev()); err != nil {
		t.Fatal(err)
	}
	size, root := s.LogHead()
	var fail atomic.Bool
	fail.Store(true)
	s.SetSyncHook(func() error {
		if fail.Load() {
			return errors.New("EIO")
		}
		return nil
	})
	if err := s.Append(ctx, ev()); mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("append whose fsync failed: %v", err)
	}
	fail.Store(false) // Linux reports a writeback error once
	if err := s.Append(ctx, ev()); mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("append after a failed fsync: %v", err)
	}
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: "m", ExpiresAt: time.Now().Add(time.Hour)}, nil); err == nil {
		t.Fatal("a revocation was acknowledged after a failed fsync")
	}
	if ok, _ := s.IsRevoked(ctx, "m"); ok {
		t.Error("the cache shows a revocation that was refused")
	}
	if size2, root2 := s.LogHead(); size2 != size || root2 != root {
		t.Errorf("the log head moved to %d after a failed fsync (was %d)", size2, size)
	}
}
