package issuer

import (
	"crypto/sha256"
	"sort"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
)

// issuedCache remembers the mandates this issuer signed, by the hash of
// the token, until they expire: a parent presented for delegation that the
// issuer signed itself needs no second signature check or store lookup
// (DESIGN.md, "Performance budget"). It is bounded: expired entries go
// first, and past its capacity the entry nearest its expiry goes, which
// costs only a signature check later.
type issuedCache struct {
	mu   sync.Mutex
	cap  int
	m    map[[32]byte]issued
	heap []issuedEntry // a min-heap on exp
}

// issued is a mandate signed here: its claims, and the IDs of its
// ancestors from the root down (empty for a root mandate), so that a
// revoked ancestor is found without reading the issuance records.
type issued struct {
	claims    *mandate.Claims
	ancestors []string
	purpose   string // the task's purpose, for policy
	refused   string // with an error: the genuine parent's failed check ("exp", "revocation", "dpop-key", ...)
}

type issuedEntry struct {
	exp int64 // Unix nanoseconds
	key [32]byte
}

func newIssuedCache(capacity int) *issuedCache {
	return &issuedCache{cap: capacity, m: make(map[[32]byte]issued)}
}

func (c *issuedCache) add(token string, claims *mandate.Claims, ancestors []string, purpose string, now time.Time) {
	if c.cap == 0 {
		return
	}
	k := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.heap) > 0 && (c.heap[0].exp <= now.UnixNano() || len(c.heap) >= c.cap) {
		c.pop()
	}
	c.m[k] = issued{claims: claims, ancestors: ancestors, purpose: purpose}
	c.heap = append(c.heap, issuedEntry{claims.Expiry.UnixNano(), k})
	for i := len(c.heap) - 1; i > 0; {
		p := (i - 1) / 2
		if c.heap[p].exp <= c.heap[i].exp {
			break
		}
		c.heap[p], c.heap[i] = c.heap[i], c.heap[p]
		i = p
	}
}

func (c *issuedCache) pop() {
	delete(c.m, c.heap[0].key)
	n := len(c.heap) - 1
	c.heap[0] = c.heap[n]
	c.heap = c.heap[:n]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < n && c.heap[l].exp < c.heap[m].exp {
			m = l
		}
		if r < n && c.heap[r].exp < c.heap[m].exp {
			m = r
		}
		if m == i {
			break
		}
		c.heap[i], c.heap[m] = c.heap[m], c.heap[i]
		i = m
	}
	if cap(c.heap) > 1024 && n < cap(c.heap)/4 { // give memory back after a burst
		c.heap = append([]issuedEntry(nil), c.heap...)
	}
}

// get returns the claims of a token this issuer signed; the caller still
// checks expiry and revocation.
func (c *issuedCache) get(token string) (issued, bool) {
	if c.cap == 0 {
		return issued{}, false
	}
	k := sha256.Sum256([]byte(token))
	c.mu.Lock()
	e, ok := c.m[k]
	c.mu.Unlock()
	return e, ok
}

// EphemeralAgent is a live ephemeral agent: one that holds an unexpired
// mandate. Its story, before and after, is in the audit log.
type EphemeralAgent struct {
	ID        string    `json:"id"`
	JKT       string    `json:"key_thumbprint"`
	Task      string    `json:"task"`
	ExpiresAt time.Time `json:"expires_at"` // of its last mandate
}

// ephemeralAgents is the live set of ephemeral agents, bounded: entries
// go when their mandates expire, and when it holds its capacity of live
// agents, new ones are refused (fail closed) rather than old ones dropped.
type ephemeralAgents struct {
	mu    sync.Mutex
	cap   int
	m     map[string]*EphemeralAgent
	sweep time.Time // when expired entries were last removed
}

func newEphemeralAgents(capacity int) *ephemeralAgents {
	return &ephemeralAgents{cap: capacity, m: make(map[string]*EphemeralAgent)}
}

func (e *ephemeralAgents) add(id, jkt, task string, exp, now time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if a, ok := e.m[id]; ok {
		if exp.After(a.ExpiresAt) {
			a.ExpiresAt, a.Task = exp, task
		}
		return nil
	}
	if len(e.m) >= e.cap || now.Sub(e.sweep) > time.Second {
		e.prune(now)
	}
	if len(e.m) >= e.cap {
		return &mandate.Error{Code: mandate.EUNAVAILABLE, OAuth: "temporarily_unavailable",
			Message: "too many live ephemeral agents: try again when some have expired"}
	}
	e.m[id] = &EphemeralAgent{ID: id, JKT: jkt, Task: task, ExpiresAt: exp}
	return nil
}

func (e *ephemeralAgents) prune(now time.Time) {
	for id, a := range e.m {
		if !now.Before(a.ExpiresAt) {
			delete(e.m, id)
		}
	}
	e.sweep = now
}

// Ephemeral returns the live ephemeral agents, by ID.
func (is *Issuer) Ephemeral() []EphemeralAgent {
	e := is.ephemeral
	now := is.cfg.Now()
	e.mu.Lock()
	e.prune(now)
	out := make([]EphemeralAgent, 0, len(e.m))
	for _, a := range e.m {
		out = append(out, *a)
	}
	e.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// LiveEphemeral returns how many ephemeral agents hold unexpired mandates,
// as last pruned (at most a second ago while delegations arrive).
func (is *Issuer) LiveEphemeral() int {
	is.ephemeral.mu.Lock()
	defer is.ephemeral.mu.Unlock()
	return len(is.ephemeral.m)
}
