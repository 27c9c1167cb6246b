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
	byAgent map[string]int // sessions per agent
}

// maxSessionsPerAgent bounds the sessions one agent holds, so that one
// client cannot push everyone else's out of the bounded set (nor take
// every stdio server process).
const maxSessionsPerAgent = 16

type binding struct {
	id, task, agent string
	used            time.Time
}

func newSessions(max int, idle time.Duration) *sessions {
	return &sessions{max: max, idle: idle, m: map[string]*list.Element{}, lru: list.New(), byAgent: map[string]int{}}
}

// bind records that session id belongs to task and agent. A session the
// upstream named again keeps its first binding.
func (s *sessions) bind(id, task, agent string, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[id]; ok {
		e.Value.(*binding).used = now
		s.lru.MoveToFront(e)
		return
	}
	for s.lru.Len() >= s.max {
		s.remove(s.lru.Back())
	}
	s.m[id] = s.lru.PushFront(&binding{id: id, task: task, agent: agent, used: now})
	s.byAgent[agent]++
}

// full reports whether agent holds as many sessions as it may.
func (s *sessions) full(agent string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	return s.byAgent[agent] >= maxSessionsPerAgent
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
	if s.byAgent[b.agent]--; s.byAgent[b.agent] <= 0 {
		delete(s.byAgent, b.agent)
	}
	s.lru.Remove(e)
}
