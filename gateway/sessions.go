package gateway

import (
	"container/list"
	"sync"
	"time"
)

// sessions remembers which task and agent each MCP session belongs to,
// bounded in number and forgetting idle ones.
type sessions struct {
	mu      sync.Mutex
	max     int
	idle    time.Duration
	m       map[string]*list.Element
	lru     *list.List     // of *binding, most recently used first
	byAgent map[string]int // sessions and reservations per registered agent
}

// maxSessionsPerAgent bounds the sessions one agent holds, so that one
// client cannot push everyone else's out of the bounded set (nor take
// every stdio server process).
const maxSessionsPerAgent = 16

type binding struct {
	id, task, agent string
	route           string // the MCP server it was opened with
	owner           string // the registered agent it counts against
	used            time.Time
}

func newSessions(max int, idle time.Duration) *sessions {
	return &sessions{max: max, idle: idle, m: map[string]*list.Element{}, lru: list.New(), byAgent: map[string]int{}}
}

// reserve counts a session about to be opened against owner (a
// registered agent: its ephemeral sub-agents share its quota), or says it
// may not open one. bind or release follows.
func (s *sessions) reserve(owner string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	if s.byAgent[owner] >= maxSessionsPerAgent {
		return false
	}
	s.byAgent[owner]++
	return true
}

// release gives back a reservation that opened no session.
func (s *sessions) release(owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byAgent[owner]--; s.byAgent[owner] <= 0 {
		delete(s.byAgent, owner)
	}
}

// bind records, for a reservation of owner, that session id belongs to
// task and agent. A session the upstream named again keeps its first
// binding (and the reservation is given back).
func (s *sessions) bind(id, task, agent, owner, route string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[id]; ok {
		e.Value.(*binding).used = now
		s.lru.MoveToFront(e)
		if s.byAgent[owner]--; s.byAgent[owner] <= 0 {
			delete(s.byAgent, owner)
		}
		return
	}
	for s.lru.Len() >= s.max {
		s.remove(s.lru.Back())
	}
	s.m[id] = s.lru.PushFront(&binding{id: id, task: task, agent: agent, owner: owner, route: route, used: now})
}

// expire forgets the idle sessions; the list is in order of use.
func (s *sessions) expire(now time.Time) {
	for e := s.lru.Back(); e != nil && now.Sub(e.Value.(*binding).used) > s.idle; e = s.lru.Back() {
		s.remove(e)
	}
}

// get returns the binding of session id, if it is known and not idle.
func (s *sessions) get(id string, now time.Time) (binding, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	e, ok := s.m[id]
	if !ok {
		return binding{}, false
	}
	b := e.Value.(*binding)
	b.used = now
	s.lru.MoveToFront(e)
	return *b, true
}

func (s *sessions) forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[id]; ok {
		s.remove(e)
	}
}

func (s *sessions) remove(e *list.Element) {
	b := e.Value.(*binding)
	delete(s.m, b.id)
	if s.byAgent[b.owner]--; s.byAgent[b.owner] <= 0 {
		delete(s.byAgent, b.owner)
	}
	s.lru.Remove(e)
}
