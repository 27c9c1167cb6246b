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

// A task's state lives as long as the task can (TaskLife from its start,
// and a minute), never less: past a bound new tasks are refused, and at a
// restart with more live tasks than the bound the oldest are dropped and
// the tasks begun before them refused (their state may be gone) until they
// have ended.
func TestTaskStateLifeAndBounds(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	task := func(d time.Duration) string { return mandate.NewID(mandate.TaskIDPrefix, t0.Add(d)) }
	call := func(task, agent string, labels ...string) mandate.LoggedEvent {
		return mandate.LoggedEvent{Event: &mandate.Event{Type: mandate.EventToolCall, Task: task, Action: "tools/call",
			Resource: "mcp:crm:x", Chain: []string{"spiffe://example.org/agent/" + agent},
			Details: map[string]any{"tool_labels": labels}}}
	}
	ts := newTaskStates(2, 2, time.Hour)
	old, mid, young := task(0), task(time.Minute), task(2*time.Minute)
	now := t0.Add(30 * time.Minute)
	for _, id := range []string{old, mid, young} {
		ts.replay(call(id, "a", "data:confidential"), now)
	}
	if l, h := ts.get(young, now); len(l) != 1 || h["calls"] != 1 {
		t.Fatalf("the youngest task's state: %v %v", l, h)
	}
	status := func(err error) int {
		if err == nil {
			return 0
		}
		return err.(*taskError).status
	}
	// old was dropped at the bound: it, and any task begun before it that
	// has no state, are refused; mid and young go on.
	for name, c := range map[string]*mandate.Claims{"old": claimsOf(old, "a"), "older": claimsOf(task(-time.Second), "b")} {
		if got := status(ts.admit(c, now)); got != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, got)
		}
	}
	if err := ts.admit(claimsOf(mid, "a"), now); err != nil {
		t.Errorf("mid: %v", err)
	}
	// Full: a new task is refused, for its agent's bound or the gateway's.
	if got := status(ts.admit(claimsOf(task(3*time.Minute), "a"), now)); got != http.StatusTooManyRequests {
		t.Errorf("a third task of agent a: %d, want 429", got)
	}
	if got := status(ts.admit(claimsOf(task(3*time.Minute), "b"), now)); got != http.StatusServiceUnavailable {
		t.Errorf("a task of agent b, the gateway full: %d, want 503", got)
	}
	// Once mid ended (its start, an hour, a minute), there is room again.
	now = t0.Add(time.Hour + 2*time.Minute)
	if err := ts.admit(claimsOf(task(3*time.Minute), "b"), now); err != nil {
		t.Errorf("after mid ended: %v", err)
	}
	if l, _ := ts.get(mid, now); l != nil {
		t.Errorf("an ended task's state is kept: %v", l)
	}
	if l, _ := ts.get(young, now); len(l) != 1 {
		t.Errorf("a live task's state is gone: %v", l)
	}
	// Once every task begun before the drop has ended, none is refused.
	now = t0.Add(2 * time.Hour)
	if err := ts.admit(claimsOf(task(-time.Second), "c"), now); err != nil {
		t.Errorf("an (ended) task begun before the drop, once all have ended: %v", err)
	}
}
