package replay

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2025, 11, 29, 12, 0, 0, 0, time.UTC)

func TestReplayRefused(t *testing.T) {
	c := New(10)
	exp := t0.Add(time.Minute)
	if err := c.Use("jti-1", exp, t0); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := c.Use("jti-1", exp, t0.Add(time.Second)); !errors.Is(err, ErrReplayed) {
		t.Errorf("second use = %v, want ErrReplayed", err)
	}
	// A later expiry does not make a replay new.
	if err := c.Use("jti-1", exp.Add(time.Hour), t0.Add(time.Second)); !errors.Is(err, ErrReplayed) {
		t.Errorf("second use with later expiry = %v, want ErrReplayed", err)
	}
	if err := c.Use("jti-2", exp, t0); err != nil {
		t.Errorf("other key: %v", err)
	}
	if got := c.Len(); got != 2 {
		t.Errorf("Len() = %d, want 2", got)
	}
	// Long keys are kept as digests: they are distinct, and a replay.
	long := strings.Repeat("x", 1<<20)
	if err := c.Use(long, exp, t0); err != nil {
		t.Fatal(err)
	}
	if err := c.Use(long+"y", exp, t0); err != nil {
		t.Error(err)
	}
	if err := c.Use(long, exp, t0); !errors.Is(err, ErrReplayed) {
		t.Errorf("long key replay = %v, want ErrReplayed", err)
	}
}

func TestExpiryFreesKey(t *testing.T) {
	c := New(10)
	exp := t0.Add(500 * time.Millisecond) // a mandate-like lifetime
	if err := c.Use("k", exp, t0); err != nil {
		t.Fatal(err)
	}
	if err := c.Use("k", exp, exp.Add(-time.Nanosecond)); !errors.Is(err, ErrReplayed) {
		t.Errorf("use 1ns before expiry = %v, want ErrReplayed", err)
	}
	// At its expiry the entry is dropped, and the key is new again.
	if err := c.Use("k", exp.Add(time.Second), exp); err != nil {
		t.Errorf("use after expiry: %v", err)
	}
	if got := c.Len(); got != 1 {
		t.Errorf("Len() = %d, want 1", got)
	}
}

func TestExpired(t *testing.T) {
	c := New(10)
	if err := c.Use("a", t0, t0); !errors.Is(err, ErrExpired) {
		t.Errorf("expires == now: %v, want ErrExpired", err)
	}
	if err := c.Use("b", t0.Add(-time.Second), t0); !errors.Is(err, ErrExpired) {
		t.Errorf("expires before now: %v, want ErrExpired", err)
	}
	// The clock never goes back: once the cache has seen t0+10s, an
	// entry expiring at t0+5s may have been forgotten already.
	if err := c.Use("c", t0.Add(5*time.Second), t0); err != nil {
		t.Fatal(err)
	}
	if err := c.Use("d", t0.Add(time.Minute), t0.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := c.Use("c", t0.Add(5*time.Second), t0.Add(time.Second)); !errors.Is(err, ErrExpired) {
		t.Errorf("use with an earlier now, after the entry was dropped = %v, want ErrExpired", err)
	}
	if c.Len() != 1 {
		t.Errorf("Len() = %d, want 1", c.Len())
	}
	// Extreme times do not overflow.
	far := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := c.Use("far", far, t0); err != nil {
		t.Errorf("year 9999: %v", err)
	}
	if err := c.Use("far", far, t0); !errors.Is(err, ErrReplayed) {
		t.Errorf("year 9999 replay: %v", err)
	}
	if err := c.Use("old", time.Time{}, t0); !errors.Is(err, ErrExpired) {
		t.Errorf("zero expiry: %v, want ErrExpired", err)
	}
}

func TestCapacity(t *testing.T) {
	c := New(3)
	for i := range 3 {
		if err := c.Use(fmt.Sprint(i), t0.Add(time.Duration(i+1)*time.Second), t0); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Use("new", t0.Add(time.Minute), t0); !errors.Is(err, ErrFull) {
		t.Errorf("use when full = %v, want ErrFull", err)
	}
	if err := c.Use("1", t0.Add(time.Minute), t0); !errors.Is(err, ErrReplayed) {
		t.Errorf("replay when full = %v, want ErrReplayed", err)
	}
	// Fail closed: no unexpired entry was evicted.
	for i := range 3 {
		if err := c.Use(fmt.Sprint(i), t0.Add(time.Minute), t0.Add(time.Millisecond)); !errors.Is(err, ErrReplayed) {
			t.Errorf("key %d after ErrFull = %v, want ErrReplayed", i, err)
		}
	}
	// Once the first entry expires there is room for one.
	now := t0.Add(time.Second)
	if err := c.Use("new", t0.Add(time.Minute), now); err != nil {
		t.Errorf("use after one expiry: %v", err)
	}
	if err := c.Use("newer", t0.Add(time.Minute), now); !errors.Is(err, ErrFull) {
		t.Errorf("use when full again = %v, want ErrFull", err)
	}
	if got := New(0).capacity; got != DefaultCapacity {
		t.Errorf("New(0) capacity = %d, want %d", got, DefaultCapacity)
	}
}

// TestMemoryBound fills the cache with entries that then expire, and keeps
// using new keys: the expired entries make room, and the cache never holds
// more than its capacity.
func TestMemoryBound(t *testing.T) {
	const capacity = 1000
	c := New(capacity)
	now := t0
	for round := range 5 {
		for i := range capacity {
			key := fmt.Sprintf("round-%d-%d", round, i)
			if err := c.Use(key, now.Add(time.Millisecond), now); err != nil {
				t.Fatalf("round %d key %d: %v", round, i, err)
			}
			if c.Len() > capacity || len(c.queue) > capacity {
				t.Fatalf("Len() = %d, queue %d, capacity %d", c.Len(), len(c.queue), capacity)
			}
		}
		now = now.Add(time.Millisecond) // everything from this round expires
	}
	if cap(c.queue) > 2*capacity {
		t.Errorf("queue capacity %d grew past twice the cache capacity", cap(c.queue))
	}
}

// TestModel compares the cache with a plain map of expiry times, under
// random keys, expiries and clock steps.
func TestModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const capacity = 50
	c := New(capacity)
	model := map[string]time.Time{}
	now := t0
	for i := range 20000 {
		now = now.Add(time.Duration(r.IntN(3)) * time.Millisecond)
		key := fmt.Sprint(r.IntN(120))
		exp := now.Add(time.Duration(r.IntN(200)-10) * time.Millisecond)

		live := 0
		for k, e := range model {
			if !e.After(now) {
				delete(model, k)
			} else {
				live++
			}
		}
		var want error
		switch _, used := model[key]; {
		case !exp.After(now):
			want = ErrExpired
		case used:
			want = ErrReplayed
		case live >= capacity:
			want = ErrFull
		default:
			model[key] = exp
		}
		if err := c.Use(key, exp, now); !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Fatalf("step %d: Use(%s) = %v, want %v", i, key, err, want)
		}
		if c.Len() != len(model) {
			t.Fatalf("step %d: Len() = %d, model has %d", i, c.Len(), len(model))
		}
	}
}

// TestConcurrent runs many goroutines using overlapping keys: each key is
// accepted exactly once. Run it with -race.
func TestConcurrent(t *testing.T) {
	const keys, workers = 2000, 8
	c := New(keys)
	var accepted [keys]atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range keys {
				k := (i + w*keys/workers) % keys
				err := c.Use(fmt.Sprint("jti-", k), t0.Add(time.Hour), t0.Add(time.Duration(i)))
				switch {
				case err == nil:
					accepted[k].Add(1)
				case !errors.Is(err, ErrReplayed):
					t.Errorf("Use: %v", err)
				}
				if i%100 == 0 {
					c.Len()
				}
			}
		})
	}
	wg.Wait()
	for k := range accepted {
		if n := accepted[k].Load(); n != 1 {
			t.Errorf("key %d accepted %d times", k, n)
		}
	}
}

func ExampleCache_Use() {
	cache := New(0)
	now := time.Date(2025, 11, 29, 12, 0, 0, 0, time.UTC)
	expires := now.Add(time.Minute) // when the proof stops being acceptable

	fmt.Println(cache.Use("proof-jti", expires, now))
	fmt.Println(cache.Use("proof-jti", expires, now.Add(time.Second)))
	fmt.Println(cache.Use("proof-jti", expires.Add(time.Minute), now.Add(time.Minute)))
	// Output:
	// <nil>
	// replay: identifier already used
	// <nil>
}
