package monitor_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/monitor"
)

// Restore rebuilds the monitor's state from the log without answering
// again what the log shows answered: a task that read before the restart
// is exfiltrating when it sends after it. A detection the log holds no
// alert for (the server stopped before writing it) is alerted and
// answered at RestoreDone,.
func TestRestore(t *testing.T) {
	ctx := context.Background()
	var acts []monitor.Action
	m, a, c := setup(func(c *monitor.Config) {
		c.Act = func(_ context.Context, act monitor.Action) error { acts = append(acts, act); return nil }
	})
	read := labelled(c, 1, agentA+"/sub/x1", "mcp:crm:list_customers", mandate.OutcomeOK, "data:customer-data")
	send := labelled(c, 2, agentA+"/sub/x2", "mcp:mail:send", mandate.OutcomeDeny, "external_send")
	other := labelled(c, 3, agentA, "mcp:crm:list_customers", mandate.OutcomeOK, "data:customer-data")
	other.Task = "t_2"
	// The first send was alerted before the restart: its alert is in the log.
	alert := mandate.LoggedEvent{Index: 4, Event: &mandate.Event{Type: mandate.EventAlert, Task: "t_1", By: "monitor",
		Details: map[string]any{"detector": monitor.Exfiltration, "evidence": []any{int64(1), int64(2)}}}}
	for _, e := range []mandate.LoggedEvent{read, send, other, alert} {
		m.Restore(e)
	}
	m.RestoreDone(ctx)
	if len(a.evs) != 0 || len(acts) != 0 {
		t.Fatalf("detections the log shows answered were answered again: %v %+v", a.detectors(), acts)
	}
	if m.Risk("t_1", "") < 60 {
		t.Errorf("the task's risk after the restart: %d", m.Risk("t_1", ""))
	}
	// A send of the other task, after the restart: it read before.
	send2 := labelled(c, 5, agentA+"/sub/x3", "mcp:mail:send", mandate.OutcomeDeny, "external_send")
	send2.Task = "t_2"
	m.Process(ctx, send2)
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.Exfiltration {
		t.Fatalf("a send after the restart, in a task that read before it: %v", d)
	}

	// No alert in the log for a detection: answered at RestoreDone.
	m2, a2, c2 := setup(func(c *monitor.Config) {
		c.Act = func(_ context.Context, act monitor.Action) error { acts = append(acts, act); return nil }
	})
	acts = nil
	m2.Restore(labelled(c2, 1, agentA, "mcp:crm:list_customers", mandate.OutcomeOK, "data:customer-data"))
	m2.Restore(labelled(c2, 2, agentA, "mcp:mail:send", mandate.OutcomeOK, "external_send"))
	m2.RestoreDone(ctx)
	if d := a2.detectors(); len(d) != 1 || d[0] != monitor.Exfiltration || a2.evs[0].Details["found_at_start"] != true {
		t.Errorf("a detection with no alert in the log: %v %+v", d, a2.evs)
	}
	if len(acts) != 1 || acts[0].Response != monitor.RevokeTask {
		t.Errorf("its responses: %+v", acts)
	}
}

// A restarted monitor does not fail open: it runs its detectors again
// over the recent log (the live monitor's alerts in it), so that a task
// held for a person is still held, a task's and an agent's risk are what
// they were, a task that read sensitive data is still tainted, and a hold
// set because a response failed stays; carrying out nothing again and
// writing no alert twice.
func TestRestoreRebuildsState(t *testing.T) {
	ctx := context.Background()
	var log []mandate.LoggedEvent
	live, liveAlerts, c := setup(nil)
	// add writes e to the log and has the live monitor process it, its
	// alerts following it in the log, as they do in the server's.
	add := func(e mandate.LoggedEvent) {
		e.Index = int64(len(log))
		log = append(log, e)
		n := len(liveAlerts.evs)
		live.Process(ctx, e)
		for _, al := range liveAlerts.evs[n:] {
			log = append(log, mandate.LoggedEvent{Index: int64(len(log)), Event: al})
		}
	}
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
	if len(liveAlerts.evs) == 0 {
		t.Fatal("the live monitor raised no alert: the test proves nothing")
	}

	var acts []monitor.Action
	m, a, _ := setup(func(cfg *monitor.Config) {
		cfg.Act = func(_ context.Context, act monitor.Action) error { acts = append(acts, act); return nil }
	})
	for _, e := range log {
		m.Restore(e)
	}
	m.RestoreDone(ctx)
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
	// The task that read customer data before the restart is still tainted.
	c.t = c.t.Add(time.Second)
	send := labelled(c, int64(len(log)), agentA+"/sub/x", "mcp:mail:send", mandate.OutcomeOK, "external_send")
	send.Task = "t_read"
	m.Process(ctx, send)
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.Exfiltration {
		t.Errorf("a send out after a read before the restart: %v", d)
	}
}

// A task held for a person (the approve response) is still held after a
// restart even when the events that made the detection are older than
// what the start reads back: the alert in the log says the hold was set.
// A cross-task send holds a task for a read in another task up to
// CrossTask before, so the read may fall before the restored window while
// the held task is still live.
func TestRestoreHoldFromAlert(t *testing.T) {
	m, a, c := setup(nil)
	alert := ev(c, 7, mandate.EventAlert, func(e *mandate.Event) {
		e.Task, e.By, e.Reason = "t_held", "monitor", "a send out by an agent that read sensitive data in task t_old"
		e.Details = map[string]any{"detector": monitor.CrossTaskSend, "evidence": []any{json.Number("2"), json.Number("6")},
			"responses": []any{"alert", "approve"}}
	})
	m.Restore(alert)
	m.RestoreDone(context.Background())
	if m.Hold("t_held") == "" {
		t.Error("a task the log shows held is released by a restart")
	}
	if len(a.evs) != 0 {
		t.Errorf("the restore wrote alerts %v", a.detectors())
	}
	// An alert without the approve response holds nothing.
	m2, _, c2 := setup(nil)
	m2.Restore(ev(c2, 7, mandate.EventAlert, func(e *mandate.Event) {
		e.Task, e.By = "t_free", "monitor"
		e.Details = map[string]any{"detector": monitor.FanOut, "responses": []any{"alert"}}
	}))
	m2.RestoreDone(context.Background())
	if h := m2.Hold("t_free"); h != "" {
		t.Errorf("an alert without approve held its task: %q", h)
	}
}
