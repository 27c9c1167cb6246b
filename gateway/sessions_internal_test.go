package gateway

import (
	"fmt"
	"testing"
	"time"
)

// The session set's bounds: an agent's quota makes room from its own idle
// sessions only, the whole set from anyone's, never from a live one; and
// nothing is left behind for an agent that holds nothing.
func TestSessionBounds(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	var ended []string
	s := newSessions(20, time.Minute, func(b binding) { ended = append(ended, b.id) })
	open := func(owner, id string, at time.Time) string {
		t.Helper()
		if why := s.reserve(owner, at); why != reservedOK {
			return why
		}
		s.bind(id, "t", owner, owner, "crm", at)
		return reservedOK
	}
	for i := range maxSessionsPerAgent {
		if why := open("a", fmt.Sprint("a", i), t0.Add(time.Duration(i)*time.Millisecond)); why != reservedOK {
			t.Fatalf("a's session %d: %s", i, why)
		}
	}
	// a0 is live (a request in flight): a's next session takes a1's place.
	if _, ok := s.acquire("a0", t0.Add(time.Second)); !ok {
		t.Fatal("a0 unknown")
	}
	if why := open("a", "a16", t0.Add(time.Second)); why != reservedOK || len(ended) != 1 || ended[0] != "a1" {
		t.Fatalf("over a's quota: %s, ended %v", why, ended)
	}
	// Four of b's fill the set (20): the fifth takes the place of the
	// least recently used idle session of anyone (a2).
	for i := range 5 {
		if why := open("b", fmt.Sprint("b", i), t0.Add(2*time.Second)); why != reservedOK {
			t.Fatalf("b's session %d: %s", i, why)
		}
	}
	if len(s.m) != 20 || ended[len(ended)-1] != "a2" {
		t.Fatalf("%d sessions, ended %v", len(s.m), ended)
	}
	// Past the idle timeout every idle session goes; the live one stays.
	ended = nil
	if _, ok := s.get("a0", t0.Add(time.Hour)); !ok {
		t.Fatal("the live session was forgotten")
	}
	if len(s.m) != 1 || len(ended) != 19 {
		t.Fatalf("after the idle timeout: %d sessions, %d ended", len(s.m), len(ended))
	}
	// Its end makes it idle from then on; a forgotten session's end is a
	// no-op.
	s.done("a0", t0.Add(time.Hour))
	s.forget("a0")
	s.done("a0", t0.Add(time.Hour))
	if len(s.m) != 0 || len(s.byAgent) != 0 || s.lru.Len() != 0 || s.reserved != 0 {
		t.Errorf("an empty set holds %d sessions, %d agents, %d idle, %d reservations", len(s.m), len(s.byAgent), s.lru.Len(), s.reserved)
	}
	// An agent whose sessions are all live is refused; so is anyone when
	// every session is live.
	for i := range maxSessionsPerAgent {
		open("c", fmt.Sprint("c", i), t0)
		s.acquire(fmt.Sprint("c", i), t0)
	}
	if why := open("c", "c16", t0); why != agentFull {
		t.Errorf("c with all its sessions live: %q", why)
	}
	for i := range 4 {
		open("d", fmt.Sprint("d", i), t0)
		s.acquire(fmt.Sprint("d", i), t0)
	}
	if why := open("e", "e0", t0); why != gatewayFull {
		t.Errorf("a full set of live sessions: %q", why)
	}
	if s.byAgent["e"] != nil {
		t.Error("a refused agent is left in the set")
	}
}
