package monitor_test

import (
	"context"
	"testing"

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
