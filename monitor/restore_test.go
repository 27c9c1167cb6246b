package monitor_test

import (
	"context"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/monitor"
)

// logQuerier answers event queries from a list, as the store does: by
// time and position, a page at a time.
type logQuerier struct{ evs []mandate.LoggedEvent }

func (q *logQuerier) Events(_ context.Context, f mandate.EventFilter) ([]mandate.LoggedEvent, error) {
	var out []mandate.LoggedEvent
	for _, e := range q.evs {
		if e.Index >= f.After && (f.Since.IsZero() || e.Time >= f.Since.UnixNano()) && len(out) < f.Limit {
			out = append(out, e)
		}
	}
	return out, nil
}

// A restarted monitor does not fail open: it runs its detectors again
// over the recent log, so that a task held for a person is still held, a
// task's and an agent's risk are what they were, a task that read
// sensitive data is still tainted, and a hold set because a response
// failed stays; carrying out nothing again and writing no alert twice.
// Events it restored are not processed again when they reach it live.
func TestRestoreRebuildsState(t *testing.T) {
	ctx := context.Background()
	var log []mandate.LoggedEvent
	_, _, c := setup(nil)
	add := func(e mandate.LoggedEvent) mandate.LoggedEvent {
		e.Index = int64(len(log))
		log = append(log, e)
		return e
	}
	old := ev(c, 0, mandate.EventToolCall, func(e *mandate.Event) { e.Task = "t_old"; e.Time = c.t.Add(-5 * time.Hour).UnixNano() })
	add(old)
	read := labelled(c, 0, agentA, "mcp:crm:list_customers", mandate.OutcomeOK, "read_only", "data:customer-data")
	read.Task = "t_read"
	add(read)
	secret := labelled(c, 0, agentA, "mcp:mail:send", mandate.OutcomeDeny, "external_send")
	secret.Details["arg_secrets"] = map[string]any{"jwt": 1}
	add(secret) // secret-to-sink: t_1 held
	// An alert whose response failed: its task is held (fail closed).
	add(ev(c, 0, mandate.EventAlert, func(e *mandate.Event) {
		e.Task, e.By = "t_failed", "monitor"
		e.Details = map[string]any{"detector": monitor.SpawnStorm, "responses": []any{"alert", "revoke-task"}, "failed": []any{"revoke-task: store unavailable"}}
	}))

	live, _, _ := setup(nil)
	for _, e := range log {
		live.Process(ctx, e)
	}
	var acts []monitor.Action
	m, a, _ := setup(func(cfg *monitor.Config) {
		cfg.Act = func(_ context.Context, act monitor.Action) error { acts = append(acts, act); return nil }
	})
	n, err := m.Restore(ctx, &logQuerier{log}, c.t.Add(-monitor.DefaultRestoreWindow))
	if err != nil || n != 3 {
		t.Fatalf("restored %d events: %v", n, err)
	}
	if len(a.detectors()) != 0 || len(acts) != 0 {
		t.Fatalf("the restore wrote alerts %v, carried out %+v", a.detectors(), acts)
	}
	if got, want := m.Hold("t_1"), live.Hold("t_1"); got == "" || got != want {
		t.Errorf("hold of t_1: %q, want %q", got, want)
	}
	if m.Hold("t_failed") == "" {
		t.Error("a task whose response failed is not held after a restart")
	}
	if got, want := m.Risk("t_1", agentA), live.Risk("t_1", agentA); got == 0 || got != want {
		t.Errorf("risk %d, want %d", got, want)
	}
	// The restored events reach it live too: nothing fires twice.
	for _, e := range log {
		m.Process(ctx, e)
	}
	if len(a.detectors()) != 0 {
		t.Fatalf("restored events processed again: %v", a.detectors())
	}
	// The task that read customer data before the restart is still tainted.
	send := labelled(c, int64(len(log)), agentA+"/sub/x", "mcp:mail:send", mandate.OutcomeOK, "external_send")
	send.Task = "t_read"
	m.Process(ctx, send)
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.Exfiltration {
		t.Errorf("a send out after a read before the restart: %v", d)
	}
}
