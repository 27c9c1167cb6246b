package gateway

import (
	"container/list"
	"sync"
	"time"
)

// sessions remembers which task and agent each MCP session belongs to,
// bounded in number and forgetting idle ones.
type sessions struct {
	mu   sync.Mutex
	max  int
	idle time.Duration
	m    map[string]*list.Element
	lru  *list.List // of *binding, most recently used first
}

type binding struct {
	id, task, agent string
	used            time.Time
}

func newSessions(max int, idle time.Duration) *sessions {
	return &sessions{max: max, idle: idle, m: map[string]*list.Element{}, lru: list.New()}
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
}

// get returns the binding of session id, if it is known and not idle.
func (s *sessions) get(id string, now time.Time) (binding, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Forget the idle ones first: the list is in order of use.
	for e := s.lru.Back(); e != nil && now.Sub(e.Value.(*binding).used) > s.idle; e = s.lru.Back() {
		s.remove(e)
	}
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
	delete(s.m, e.Value.(*binding).id)
	s.lru.Remove(e)
}
