// Package bucket is a token bucket: what rate-limits the audit events
// that someone other than an authenticated client can cause (refusals of
// garbage, of replayed assertions, of stolen or expired mandates), so that
// they cannot fill the log.
package bucket

import (
	"sync"
	"time"
)

// Bucket allows Rate events per second, in bursts of up to Burst. Its zero
// value allows nothing; it is safe for concurrent use.
type Bucket struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	tokens  float64
	last    time.Time
	dropped uint64
	told    uint64 // dropped when AllowDropped last allowed
}

// New returns a full bucket of burst tokens, refilled at rate a second.
func New(rate, burst float64) *Bucket { return &Bucket{rate: rate, burst: burst, tokens: burst} }

// Allow takes a token, if there is one, at now.
func (b *Bucket) Allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.last.IsZero() && now.After(b.last) {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	if now.After(b.last) {
		b.last = now
	}
	if b.tokens < 1 {
		b.dropped++
		return false
	}
	b.tokens--
	return true
}

// AllowDropped is Allow that also says, when it allows, how many events
// were refused since the last one AllowDropped allowed: what an audit
// event recorded after a flood says of the flood.
func (b *Bucket) AllowDropped(now time.Time) (bool, uint64) {
	if !b.Allow(now) {
		return false, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	n := b.dropped - b.told
	b.told = b.dropped
	return true, n
}

// Dropped is how many events Allow refused.
func (b *Bucket) Dropped() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped
}
