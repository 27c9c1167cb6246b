package policy

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cedar-policy/cedar-go/types"
)

// maxCached bounds each map of a buildCache; a full map is emptied.
const maxCached = 4096

// buildCache keeps the Cedar values built for recent requests' agents,
// tasks, targets, times and history counters: an agent calls many tools
// within one task, and building a Cedar record costs more than finding it.
// Cedar values are immutable, so sharing them between decisions is safe.
// Every key holds every input of the value, so a hit is the value that
// would have been built. A nil *buildCache builds every time.
type buildCache struct {
	mu      sync.RWMutex
	agents  map[string]*agentValues
	tasks   map[string]types.Entity
	targets map[string]*targetValues
	hist    map[[len(historyCounters)]int64]types.Record
	clock   atomic.Pointer[timeValue]
}

type timeValue struct {
	unix int64
	loc  *time.Location
	rec  types.Record
}

func newBuildCache() *buildCache {
	return &buildCache{
		agents:  map[string]*agentValues{},
		tasks:   map[string]types.Entity{},
		targets: map[string]*targetValues{},
		hist:    map[[len(historyCounters)]int64]types.Record{},
	}
}

// lookup finds key in m under the read lock, or builds the value and
// stores it under the write lock.
func lookup[K comparable, V any](c *buildCache, m *map[K]V, key K, mk func() V) V {
	c.mu.RLock()
	v, ok := (*m)[key]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = mk()
	c.mu.Lock()
	if len(*m) >= maxCached {
		*m = make(map[K]V)
	}
	(*m)[key] = v
	c.mu.Unlock()
	return v
}

// lookupBytes is lookup for a key built in a byte slice: the string
// conversion in the map index does not allocate.
func lookupBytes[V any](c *buildCache, m *map[string]V, key []byte, mk func() V) V {
	c.mu.RLock()
	v, ok := (*m)[string(key)]
	c.mu.RUnlock()
	if ok {
		return v
	}
	v = mk()
	c.mu.Lock()
	if len(*m) >= maxCached {
		*m = make(map[string]V)
	}
	(*m)[string(key)] = v
	c.mu.Unlock()
	return v
}

func appendKey(b []byte, ss ...string) []byte {
	for _, s := range ss {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

func appendKeyList(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	return appendKey(b, ss...)
}

func (c *buildCache) agent(r *Request, kb []byte) *agentValues {
	if c == nil {
		return buildAgent(r)
	}
	a := &r.Agent
	kb = appendKey(kb, a.ID, a.Name, a.Owner, a.Registered)
	if a.Ephemeral {
		kb = append(kb, 1)
	} else {
		kb = append(kb, 0)
	}
	kb = appendKeyList(kb, a.Labels)
	kb = appendKeyList(kb, r.Chain)
	return lookupBytes(c, &c.agents, kb, func() *agentValues { return buildAgent(r) })
}

func (c *buildCache) task(r *Request, subject types.EntityUID, kb []byte) types.Entity {
	if c == nil {
		return buildTask(r, subject)
	}
	kb = appendKey(kb, r.Task, r.Purpose, string(subject.ID))
	return lookupBytes(c, &c.tasks, kb, func() types.Entity { return buildTask(r, subject) })
}

func (c *buildCache) target(r *Request, kb []byte) *targetValues {
	if c == nil {
		return buildTarget(r)
	}
	kb = appendKey(kb, r.Action, r.Server, r.Tool, r.Resource)
	kb = appendKeyList(kb, r.ToolLabels)
	return lookupBytes(c, &c.targets, kb, func() *targetValues { return buildTarget(r) })
}

func (c *buildCache) time(t time.Time) types.Record {
	if c == nil {
		return buildTime(t)
	}
	if v := c.clock.Load(); v != nil && v.unix == t.Unix() && v.loc == t.Location() {
		return v.rec
	}
	v := &timeValue{unix: t.Unix(), loc: t.Location(), rec: buildTime(t)}
	c.clock.Store(v)
	return v.rec
}

func (c *buildCache) history(h map[string]int64) types.Record {
	if c == nil {
		return buildHistory(h)
	}
	var key [len(historyCounters)]int64
	for i, k := range historyCounters {
		key[i] = h[k]
	}
	return lookup(c, &c.hist, key, func() types.Record { return buildHistory(h) })
}
