package replay

import (
	"errors"
	"strconv"
	"testing"
	"time"
)

// A snapshot restores the unexpired keys into a new cache, with what it
// covers; expired ones are not written.
func TestSnapshotRoundTrip(t *testing.T) {
	c := New(100)
	for i := range 10 {
		if err := c.Use("k"+strconv.Itoa(i), t0.Add(time.Duration(i+1)*time.Second), t0); err != nil {
			t.Fatal(err)
		}
	}
	now := t0.Add(5 * time.Second) // k0 … k4 have expired
	data := c.AppendSnapshot(nil, []byte("log 42"), now)
	s, err := ReadSnapshot(data, 100)
	if err != nil {
		t.Fatal(err)
	}
	if string(s.Cover) != "log 42" || s.Len() != 5 || !s.Taken.Equal(now) {
		t.Fatalf("cover %q, %d entries, taken %v; want \"log 42\", 5, %v", s.Cover, s.Len(), s.Taken, now)
	}
	d := New(100)
	if n, err := d.Restore(s, now); err != nil || n != 5 {
		t.Fatalf("Restore: %d, %v; want 5", n, err)
	}
	for i := range 10 {
		err := d.Use("k"+strconv.Itoa(i), now.Add(time.Hour), now)
		if want := i >= 5; errors.Is(err, ErrReplayed) != want {
			t.Errorf("k%d after the restore: %v, replayed want %v", i, err, want)
		}
	}
	// Restoring into a smaller cache stops when it is full.
	if _, err := New(3).Restore(s, now); !errors.Is(err, ErrFull) {
		t.Errorf("Restore into a cache of 3: %v, want ErrFull", err)
	}
}

// Every damage is refused: a torn, altered or oversized snapshot.
func TestSnapshotDamaged(t *testing.T) {
	c := New(100)
	for i := range 10 {
		c.Use("k"+strconv.Itoa(i), t0.Add(time.Hour), t0)
	}
	data := c.AppendSnapshot(nil, []byte("cover"), t0)
	flipped := append([]byte(nil), data...)
	flipped[len(flipped)/2] ^= 1
	for name, d := range map[string][]byte{
		"empty":     nil,
		"torn":      data[:len(data)-7],
		"bit flip":  flipped,
		"not one":   []byte("mandate replay snapshot v2\n and something after it, long enough to pass"),
		"too large": nil, // below, with a smaller bound
	} {
		max := 100
		if name == "too large" {
			d, max = data, 9
		}
		if _, err := ReadSnapshot(d, max); !errors.Is(err, ErrSnapshot) {
			t.Errorf("%s: %v, want ErrSnapshot", name, err)
		}
	}
}

// FuzzReadSnapshot: no input makes ReadSnapshot panic, and what it
// accepts restores into a cache of the same bound.
func FuzzReadSnapshot(f *testing.F) {
	c := New(10)
	c.Use("a", t0.Add(time.Hour), t0)
	f.Add(c.AppendSnapshot(nil, []byte("x"), t0))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ReadSnapshot(data, 10)
		if err != nil {
			return
		}
		d := New(10)
		if _, err := d.Restore(s, time.Unix(0, 0)); err != nil {
			t.Fatal(err)
		}
	})
}
