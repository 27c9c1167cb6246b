package gateway

import (
	"net/http"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
)

// claimsOf is a mandate of task by the root agent named agent.
func claimsOf(task, agent string) *mandate.Claims {
	return &mandate.Claims{Task: task, ClientID: "spiffe://example.org/agent/" + agent,
		Actor: &mandate.Actor{Subject: "spiffe://example.org/agent/" + agent}}
}

// A task's state lives as long as the task (its root mandate) does, never
// less: past a bound new tasks are refused, and at a restart with more
// live tasks than the bound those ending soonest are dropped, and the
// tasks named before them refused while they live (their state may be
// gone).
func TestTaskStateLifeAndBounds(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	task := func(d time.Duration) string { return mandate.NewID(mandate.TaskIDPrefix, t0.Add(d)) }
	root := func(task string, exp time.Time) mandate.LoggedEvent {
		rec := &mandate.Issuance{MandateID: mandate.NewID(mandate.MandateIDPrefix, t0), TaskID: task, AgentID: "spiffe://example.org/agent/a",
			Scope: "mcp:crm:*", KeyID: "k", IssuedAt: t0, ExpiresAt: exp}
		return mandate.LoggedEvent{Event: mandate.NewIssuanceEvent(rec, t0)}
	}
	call := func(task, agent string, labels ...string) mandate.LoggedEvent {
		return mandate.LoggedEvent{Event: &mandate.Event{Type: mandate.EventToolCall, Task: task, Action: "tools/call",
			Resource: "mcp:crm:x", Chain: []string{"spiffe://example.org/agent/" + agent},
			Details: map[string]any{"tool_labels": labels}}}
	}
	ts := newTaskStates(2, 2)
	old, mid, young, over := task(0), task(time.Minute), task(2*time.Minute), task(-2*time.Hour)
	now := t0.Add(30 * time.Minute)
	for i, id := range []string{old, mid, young} {
		ts.replay(root(id, t0.Add(time.Hour+time.Duration(i)*time.Minute)), now)
	}
	ts.replay(root(over, t0.Add(-time.Hour)), now) // expired: over
	for _, id := range []string{old, mid, young, over} {
		ts.replay(call(id, "a", "data:confidential"), now)
	}
	if l, h := ts.get(young, now); len(l) != 1 || h["calls"] != 1 {
		t.Fatalf("the youngest task's state: %v %v", l, h)
	}
	if l, _ := ts.get(over, now); l != nil {
		t.Errorf("a task that ended got a state: %v", l)
	}
	status := func(err error) int {
		if err == nil {
			return 0
		}
		return err.(*taskError).status
	}
	end := t0.Add(2 * time.Hour)
	// old was dropped at the bound: it, and any task named before it that
	// has no state, are refused; mid and young go on.
	for name, c := range map[string]*mandate.Claims{"old": claimsOf(old, "a"), "older": claimsOf(task(-time.Second), "b")} {
		if got := status(ts.admit(c, end, now)); got != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, got)
		}
	}
	if err := ts.admit(claimsOf(mid, "a"), end, now); err != nil {
		t.Errorf("mid: %v", err)
	}
	// Full: a new task is refused, for its agent's bound or the gateway's.
	if got := status(ts.admit(claimsOf(task(3*time.Minute), "a"), end, now)); got != http.StatusTooManyRequests {
		t.Errorf("a third task of agent a: %d, want 429", got)
	}
	if got := status(ts.admit(claimsOf(task(3*time.Minute), "b"), end, now)); got != http.StatusServiceUnavailable {
		t.Errorf("a task of agent b, the gateway full: %d, want 503", got)
	}
	// Once mid's root expired (and a minute), there is room again.
	now = t0.Add(time.Hour + 2*time.Minute)
	late := task(3 * time.Minute)
	if err := ts.admit(claimsOf(late, "b"), t0.Add(5*time.Hour), now); err != nil {
		t.Errorf("after mid ended: %v", err)
	}
	if l, _ := ts.get(mid, now); l != nil {
		t.Errorf("an ended task's state is kept: %v", l)
	}
	if l, _ := ts.get(young, now); len(l) != 1 {
		t.Errorf("a live task's state is gone: %v", l)
	}
	// A task lives as long as its root, however long after it was named
	// (a root mint that waited for approval).
	ts.record(late, []string{"confidential"}, nil, now)
	now = t0.Add(4 * time.Hour)
	if l, _ := ts.get(late, now); !ts.has(late, now) || len(l) != 1 {
		t.Errorf("the state of a task whose root lives on, hours after it was named: %v", l)
	}
}
