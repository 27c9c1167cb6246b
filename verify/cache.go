package verify

import (
	"crypto/sha256"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
)

// verified remembers mandates whose signature and time-independent claims
// were checked, by the SHA-256 of the token, until they expire: a client
// that presents one mandate for a session's calls costs one signature
// check, not one per call. Bounded: past its size, expired entries are
// dropped, and if none has expired a new mandate is not remembered.
type verified struct {
	mu  sync.Mutex
	max int
	m   map[[32]byte]*mandate.Claims
}

func newVerified(max int) *verified {
	return &verified{max: max, m: make(map[[32]byte]*mandate.Claims)}
}

func (v *verified) get(token string) (*mandate.Claims, bool) {
	k := sha256.Sum256([]byte(token))
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.m[k]
	return c, ok
}

func (v *verified) put(token string, c *mandate.Claims, now time.Time) {
	k := sha256.Sum256([]byte(token))
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.m) >= v.max {
		for key, e := range v.m {
			if !now.Before(e.Expiry.Time) {
				delete(v.m, key)
			}
		}
		if len(v.m) >= v.max {
			return
		}
	}
	v.m[k] = c
}
