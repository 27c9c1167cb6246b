package bucket

import (
	"testing"
	"time"
)

func TestBucket(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	b := New(10, 3)
	for i := range 3 {
		if !b.Allow(t0) {
			t.Fatalf("burst: event %d refused", i)
		}
	}
	if b.Allow(t0) {
		t.Fatal("past the burst: allowed")
	}
	if !b.Allow(t0.Add(100*time.Millisecond)) || b.Allow(t0.Add(100*time.Millisecond)) {
		t.Fatal("100 ms at 10/s refills exactly one token")
	}
	if b.Allow(t0) { // a clock going back refills nothing
		t.Fatal("the past refilled the bucket")
	}
	if !b.Allow(t0.Add(time.Hour)) || !b.Allow(t0.Add(time.Hour)) || !b.Allow(t0.Add(time.Hour)) || b.Allow(t0.Add(time.Hour)) {
		t.Fatal("an hour refills to the burst, no more")
	}
	if b.Dropped() != 4 {
		t.Errorf("dropped %d, want 4", b.Dropped())
	}
	var zero Bucket
	if zero.Allow(t0) {
		t.Error("the zero bucket allowed")
	}
}

// An event allowed after a flood says how many were refused since the
// last one allowed.
func TestAllowDropped(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	b := New(1, 1)
	if ok, n := b.AllowDropped(t0); !ok || n != 0 {
		t.Fatalf("first: %v %d", ok, n)
	}
	for range 5 {
		if ok, _ := b.AllowDropped(t0); ok {
			t.Fatal("past the burst: allowed")
		}
	}
	if ok, n := b.AllowDropped(t0.Add(time.Second)); !ok || n != 5 {
		t.Errorf("after the flood: %v, %d dropped, want 5", ok, n)
	}
	if ok, n := b.AllowDropped(t0.Add(2 * time.Second)); !ok || n != 0 {
		t.Errorf("the next: %v, %d dropped, want 0", ok, n)
	}
}
