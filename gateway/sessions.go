package gateway

import (
	"container/list"
	"sync"
	"time"
)

// sessions remembers which task and agent each MCP session belongs to,
// bounded in number and forgetting abandoned ones.
//
// A session is live while a request of it is in flight (a POST being
// answered, the GET stream of server messages open), and idle otherwise.
// An idle session is forgotten once idle for longer than idle: clients
// that end a session without DELETE (the official SDKs' close() sends
// none) leave nothing behind for long. A registered agent holds at most
// maxSessionsPerAgent sessions (its ephemeral sub-agents share them):
// past that, a new one takes the place of the agent's least recently used
// idle session; only an agent whose sessions are all live is refused. The
// whole set holds at most max, taking the place of anyone's least
// recently used idle session when full. A client whose session was
// forgotten is told 404 on its next request and initializes again, as
// MCP Streamable HTTP says it must.
//
// The sessions forgotten for idleness or to make room are handed to
// ended, outside the lock, so that the gateway ends them upstream too.
type sessions struct {
	mu       sync.Mutex
	max      int
	idle     time.Duration
	m        map[string]*binding
	lru      *list.List // of the idle *binding, most recently used first
	byAgent  map[string]*agentSessions
	reserved int             // reservations not bound yet, in all
	ended    func(b binding) // a session forgotten other than by forget
	gone     []binding       // forgotten under the lock, for ended
}

// maxSessionsPerAgent bounds the sessions one agent holds, so that one
// client cannot push everyone else's out of the bounded set (nor take
// every stdio server process).
const maxSessionsPerAgent = 16

// agentSessions is what one registered agent holds.
type agentSessions struct {
	n    int        // sessions and reservations
	idle *list.List // of its idle *binding, most recently used first
}

type binding struct {
	id, task, agent string
	route           string // the MCP server it was opened with
	owner           string // the registered agent it counts against
	used            time.Time
	active          int           // requests in flight
	elem, ownElem   *list.Element // in lru and in its agent's idle list, while idle
}

func newSessions(max int, idle time.Duration, ended func(binding)) *sessions {
	return &sessions{max: max, idle: idle, m: map[string]*binding{}, lru: list.New(), byAgent: map[string]*agentSessions{}, ended: ended}
}

// unlock releases the lock and hands the sessions forgotten meanwhile to
// ended.
func (s *sessions) unlock() {
	gone := s.gone
	s.gone = nil
	s.mu.Unlock()
	if s.ended != nil {
		for _, b := range gone {
			s.ended(b)
		}
	}
}

// Why a session could not be reserved.
const (
	reservedOK  = ""
	agentFull   = "agent"   // the agent's sessions are all live
	gatewayFull = "gateway" // every session is live
)

// reserve counts a session about to be opened against owner (a
// registered agent: its ephemeral sub-agents share its quota), making
// room if it must, or says why it may not open one. bind or release
// follows.
func (s *sessions) reserve(owner string, now time.Time) string {
	s.mu.Lock()
	defer s.unlock()
	s.expire(now)
	a := s.byAgent[owner]
	if a == nil {
		a = &agentSessions{idle: list.New()}
		s.byAgent[owner] = a
	}
	if a.n >= maxSessionsPerAgent {
		if a.idle.Len() == 0 {
			s.dropIfEmpty(owner)
			return agentFull
		}
		s.evict(a.idle.Back().Value.(*binding))
	}
	if len(s.m)+s.reserved >= s.max {
		if s.lru.Len() == 0 {
			s.dropIfEmpty(owner)
			return gatewayFull
		}
		s.evict(s.lru.Back().Value.(*binding))
	}
	a.n++
	s.reserved++
	return reservedOK
}

// release gives back a reservation that opened no session.
func (s *sessions) release(owner string) {
	s.mu.Lock()
	defer s.unlock()
	s.reserved--
	if a := s.byAgent[owner]; a != nil {
		a.n--
		s.dropIfEmpty(owner)
	}
}

// bind records, for a reservation of owner, that session id belongs to
// task and agent: an idle session from now. A session the upstream named
// again keeps its first binding (and the reservation is given back).
func (s *sessions) bind(id, task, agent, owner, route string, now time.Time) {
	s.mu.Lock()
	defer s.unlock()
	s.reserved--
	if b, ok := s.m[id]; ok {
		if b.active == 0 {
			s.setIdle(b, now)
		}
		if a := s.byAgent[owner]; a != nil {
			a.n--
			s.dropIfEmpty(owner)
		}
		return
	}
	b := &binding{id: id, task: task, agent: agent, owner: owner, route: route}
	s.m[id] = b
	s.setIdle(b, now)
}

// acquire returns the binding of session id, if it is known and not
// expired, and counts a request of it in flight until done.
func (s *sessions) acquire(id string, now time.Time) (binding, bool) {
	s.mu.Lock()
	defer s.unlock()
	s.expire(now)
	b, ok := s.m[id]
	if !ok {
		return binding{}, false
	}
	if b.active == 0 {
		s.unsetIdle(b)
	}
	b.active++
	b.used = now
	return *b, true
}

// done ends a request that acquire counted: the session is idle from now
// when it was the last in flight.
func (s *sessions) done(id string, now time.Time) {
	s.mu.Lock()
	defer s.unlock()
	b, ok := s.m[id]
	if !ok || b.active == 0 {
		return // forgotten meanwhile (DELETE)
	}
	if b.active--; b.active == 0 {
		s.setIdle(b, now)
	}
}

// get returns the binding of session id, if it is known and not expired,
// without counting a request.
func (s *sessions) get(id string, now time.Time) (binding, bool) {
	s.mu.Lock()
	defer s.unlock()
	s.expire(now)
	b, ok := s.m[id]
	if !ok {
		return binding{}, false
	}
	return *b, true
}

// forget forgets session id, which its client ended.
func (s *sessions) forget(id string) {
	s.mu.Lock()
	defer s.unlock()
	if b, ok := s.m[id]; ok {
		s.remove(b)
	}
}

// expire forgets the sessions idle for longer than s.idle; the idle list
// is in order of use.
func (s *sessions) expire(now time.Time) {
	for e := s.lru.Back(); e != nil && now.Sub(e.Value.(*binding).used) > s.idle; e = s.lru.Back() {
		s.evict(e.Value.(*binding))
	}
}

// evict forgets b for the gateway's own reasons: its client did not end
// it, so the gateway ends it upstream.
func (s *sessions) evict(b *binding) {
	s.remove(b)
	s.gone = append(s.gone, *b)
}

func (s *sessions) remove(b *binding) {
	if b.active == 0 {
		s.unsetIdle(b)
	}
	delete(s.m, b.id)
	if a := s.byAgent[b.owner]; a != nil {
		a.n--
		s.dropIfEmpty(b.owner)
	}
}

func (s *sessions) setIdle(b *binding, now time.Time) {
	if b.elem != nil {
		s.unsetIdle(b)
	}
	b.used = now
	b.elem = s.lru.PushFront(b)
	a := s.byAgent[b.owner]
	if a == nil { // bound again after its agent's count went (not expected)
		a = &agentSessions{idle: list.New()}
		s.byAgent[b.owner] = a
	}
	b.ownElem = a.idle.PushFront(b)
}

func (s *sessions) unsetIdle(b *binding) {
	if b.elem == nil {
		return
	}
	s.lru.Remove(b.elem)
	if a := s.byAgent[b.owner]; a != nil {
		a.idle.Remove(b.ownElem)
	}
	b.elem, b.ownElem = nil, nil
}

func (s *sessions) dropIfEmpty(owner string) {
	if a := s.byAgent[owner]; a != nil && a.n <= 0 && a.idle.Len() == 0 {
		delete(s.byAgent, owner)
	}
}
