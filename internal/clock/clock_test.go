package clock_test

import (
	"testing"
	"time"

	"github.com/mandatehq/mandate/internal/clock"
)

// A wall clock that jumps forward is not followed until the elapsed time
// catches up; one that jumps back is followed at once.
func TestNotAhead(t *testing.T) {
	t0 := time.Date(2026, 12, 8, 1, 0, 0, 0, time.UTC)
	wall, up := t0, time.Duration(0)
	now := clock.NotAhead(func() time.Time { return wall }, func() time.Duration { return up })
	for _, step := range []struct {
		name string
		wall time.Time
		up   time.Duration
		want time.Time
	}{
		{"start", t0, 0, t0},
		{"time passes", t0.Add(time.Minute), time.Minute, t0.Add(time.Minute)},
		{"jump forward", t0.Add(16 * time.Minute), time.Minute, t0.Add(time.Minute)},
		{"still ahead", t0.Add(17 * time.Minute), 2 * time.Minute, t0.Add(2 * time.Minute)},
		{"corrected", t0.Add(3 * time.Minute), 3 * time.Minute, t0.Add(3 * time.Minute)},
		{"jump back", t0.Add(-time.Hour), 4 * time.Minute, t0.Add(-time.Hour)},
	} {
		wall, up = step.wall, step.up
		if got := now(); !got.Equal(step.want) {
			t.Errorf("%s: now() = %v, want %v", step.name, got, step.want)
		}
	}
}

// With no elapsed given, the monotonic clock bounds it.
func TestNotAheadMonotonic(t *testing.T) {
	ahead := time.Now().Add(time.Hour)
	first := true
	now := clock.NotAhead(func() time.Time {
		if first {
			first = false
			return time.Now()
		}
		return ahead
	}, nil)
	if got := now(); !got.Before(ahead.Add(-50 * time.Minute)) {
		t.Errorf("now() = %v: followed a wall clock an hour ahead", got)
	}
}
