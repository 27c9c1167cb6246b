// Package replay is a bounded, in-memory set of single-use identifiers: the
// jti of DPoP proofs (RFC 9449 §11.1) and of client assertions (RFC 7523
// §3), each remembered until it expires so that a second use is refused.
//
// A [Cache] fails closed. It never forgets an identifier before that
// identifier expires, so when it holds its capacity of unexpired entries it
// refuses new ones with [ErrFull] rather than evicting one. Memory is
// bounded by the capacity, not by the length of the keys: each key is kept
// as a 16-byte SHA-256 digest.
//
// # What it is not for
//
// It is local to one process: resource servers behind a load balancer
// each keep their own set, so an identifier replayed to another instance is
// not caught here (RFC 9449 §11.1 discusses this). Nor does it survive a
// restart by itself: the caller refills it from a durable record (the
// issuer's RestoreReplay, for client assertions and actor tokens), which a
// snapshot (AppendSnapshot, ReadSnapshot, Restore) may shorten but never
// replace, or refuses what it cannot vouch for (verify.Config.ReplaySince,
// for DPoP proofs made before it began). It is not a general cache: it stores no values, and it is not
// a rate limiter.
package replay

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// DefaultCapacity is the capacity of a Cache made with New(0): about
// 70 MB when full.
const DefaultCapacity = 1_000_000

var (
	// ErrReplayed means the key was used before and has not expired.
	ErrReplayed = errors.New("replay: identifier already used")

	// ErrFull means the cache holds its capacity of unexpired entries and
	// refuses new keys until some expire. Callers should treat it like a
	// replay (refuse the request) and alert: it means a flood or a
	// capacity too small for the traffic.
	ErrFull = errors.New("replay: cache full")

	// ErrExpired means expires is not after now, or not after the latest
	// now the cache has seen: the cache may already have forgotten an
	// earlier use of the key, so it cannot vouch for this one. A caller
	// that checks expiry before calling Use sees this only for an
	// identifier within moments of its expiry.
	ErrExpired = errors.New("replay: identifier already expired")
)

// Cache remembers single-use keys until they expire. It is safe for
// concurrent use. The zero value is not usable; call New.
type Cache struct {
	capacity int

	mu    sync.Mutex
	clock int64 // the latest now seen, in Unix nanoseconds; never goes back
	keys  map[digest]struct{}
	queue []entry // a min-heap on exp: the next entry to expire first
}

type digest [16]byte

type entry struct {
	exp int64 // Unix nanoseconds
	key digest
}

// New returns an empty Cache that holds at most capacity unexpired keys;
// capacity <= 0 means DefaultCapacity. Memory grows with use, not up front.
func New(capacity int) *Cache {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	return &Cache{capacity: capacity, keys: make(map[digest]struct{})}
}

// Use records the first use of key, which stays recorded until expires.
// It returns nil the first time, ErrReplayed if key was used before and
// has not expired, ErrFull if the cache holds its capacity of unexpired
// keys, and ErrExpired if expires is not after now (see ErrExpired).
//
// now is the caller's clock; the cache keeps the latest now it has been
// given, so a now earlier than a previous one is taken as that previous
// one. Pass expires no later than the identifier's own validity allows
// (for a client assertion, at most its exp): a key remembered for a long
// time takes a place for that long.
func (c *Cache) Use(key string, expires, now time.Time) error {
	sum := sha256.Sum256([]byte(key)) // outside the lock: the slow part
	d := digest(sum[:16])
	exp, n := unixNano(expires), unixNano(now)

	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.clock {
		c.clock = n
	}
	c.expire()
	if exp <= c.clock {
		return fmt.Errorf("%w: expires %s, which is not after %s", ErrExpired,
			expires.UTC().Format(time.RFC3339Nano), time.Unix(0, c.clock).UTC().Format(time.RFC3339Nano))
	}
	if _, ok := c.keys[d]; ok {
		return ErrReplayed
	}
	if len(c.keys) >= c.capacity {
		return fmt.Errorf("%w: %d unexpired identifiers, the capacity", ErrFull, len(c.keys))
	}
	c.keys[d] = struct{}{}
	c.push(entry{exp: exp, key: d})
	return nil
}

// Len returns the number of keys held, including expired ones that the
// next Use will drop.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.keys)
}

// expire drops every entry that expires at or before the clock. Each entry
// is pushed and popped once, so this costs O(log n) per Use, amortized.
func (c *Cache) expire() {
	for len(c.queue) > 0 && c.queue[0].exp <= c.clock {
		delete(c.keys, c.queue[0].key)
		c.pop()
	}
}

// push and pop keep queue a binary min-heap on exp. Expiry times arrive
// mostly in increasing order, so push usually stops at once.
func (c *Cache) push(e entry) {
	q := append(c.queue, e)
	i := len(q) - 1
	for i > 0 {
		p := (i - 1) / 2
		if q[p].exp <= e.exp {
			break
		}
		q[i] = q[p]
		i = p
	}
	q[i] = e
	c.queue = q
}

func (c *Cache) pop() {
	q := c.queue
	last := q[len(q)-1]
	q = q[:len(q)-1]
	c.queue = q
	if len(q) == 0 {
		return
	}
	i := 0
	for {
		l := 2*i + 1
		if l >= len(q) {
			break
		}
		if r := l + 1; r < len(q) && q[r].exp < q[l].exp {
			l = r
		}
		if last.exp <= q[l].exp {
			break
		}
		q[i] = q[l]
		i = l
	}
	q[i] = last
}

// unixNano is t.UnixNano, clamped instead of overflowing outside the years
// 1678 to 2262.
func unixNano(t time.Time) int64 {
	const maxSec = math.MaxInt64 / int64(time.Second)
	switch s := t.Unix(); {
	case s >= maxSec:
		return math.MaxInt64
	case s <= -maxSec:
		return math.MinInt64
	}
	return t.UnixNano()
}
