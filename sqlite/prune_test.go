package sqlite_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/sqlite"
)

// jumpClock is a wall clock that can jump and a monotonic one that cannot.
type jumpClock struct {
	mu      sync.Mutex
	wall    time.Time
	elapsed time.Duration
}

func (c *jumpClock) Now() time.Time         { c.mu.Lock(); defer c.mu.Unlock(); return c.wall }
func (c *jumpClock) Elapsed() time.Duration { c.mu.Lock(); defer c.mu.Unlock(); return c.elapsed }
func (c *jumpClock) jump(d time.Duration)   { c.mu.Lock(); c.wall = c.wall.Add(d); c.mu.Unlock() }
func (c *jumpClock) pass(d time.Duration) {
	c.mu.Lock()
	c.wall, c.elapsed = c.wall.Add(d), c.elapsed+d
	c.mu.Unlock()
}
func (c *jumpClock) set(w time.Time, e time.Duration) {
	c.mu.Lock()
	c.wall, c.elapsed = w, e
	c.mu.Unlock()
}

// A wall clock that jumps 15 minutes forward while the pruners run, and is
// then set right, does not make them forget the revocation of a mandate
// that is live again: not in memory (RunPruner), not in the table
// (PruneMandates, as `mandate serve` calls it every minute, 10 minutes
// behind), so not after a restart either. Once the mandate has truly
// expired, both forget it.
func TestPruneAfterClockJump(t *testing.T) {
	t0 := time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)
	clk := &jumpClock{wall: t0}
	path := filepath.Join(t.TempDir(), "m.db")
	cfg := sqlite.Config{Path: path, Now: clk.Now, Elapsed: clk.Elapsed}
	ctx := context.Background()
	s, err := sqlite.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	const id = "m_revoked"
	exp := t0.Add(2 * time.Minute)
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: id, ExpiresAt: exp, RevokedAt: t0}, nil); err != nil {
		t.Fatal(err)
	}

	clk.pass(time.Second)
	clk.jump(15 * time.Minute)
	if n := s.PruneOnce(); n != 0 {
		t.Errorf("the pruner forgot %d revocations 15 minutes ahead of time", n)
	}
	// `mandate serve` prunes 10 minutes behind its clock: with the jump,
	// after this mandate's expiry. The store refuses to go that far.
	if _, err := s.PruneMandates(ctx, clk.Now().Add(-10*time.Minute)); mandate.ErrorCode(err) != mandate.EINVALID {
		t.Errorf("pruning 5 minutes after a jumped clock's start: %v, want EINVALID", err)
	}
	clk.jump(-15 * time.Minute) // set right: the mandate is live
	if ok, _ := s.IsRevoked(ctx, id); !ok {
		t.Fatal("after the clock jumped and came back, a live mandate's revocation was forgotten")
	}
	s.Close()
	if s, err = sqlite.Open(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.IsRevoked(ctx, id); !ok {
		t.Fatal("after a restart, a live mandate's revocation was forgotten")
	}

	// Time truly passes: past the expiry, both prune it.
	clk.set(exp.Add(11*time.Minute), 13*time.Minute+time.Second)
	if n := s.PruneOnce(); n != 1 {
		t.Errorf("the pruner forgot %d revocations after the mandate expired, want 1", n)
	}
	if n, err := s.PruneMandates(ctx, clk.Now().Add(-10*time.Minute)); err != nil || n != 1 {
		t.Errorf("PruneMandates after the expiry: %d rows, %v; want 1", n, err)
	}
}
