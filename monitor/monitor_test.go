package monitor_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/monitor"
)

type alerts struct {
	mu  sync.Mutex
	evs []*mandate.Event
}

func (a *alerts) Append(_ context.Context, evs ...*mandate.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.evs = append(a.evs, evs...)
	return nil
}

func (a *alerts) detectors() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, e := range a.evs {
		out = append(out, fmt.Sprint(e.Details["detector"]))
	}
	return out
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func setup(mod func(*monitor.Config)) (*monitor.Monitor, *alerts, *clock) {
	a, c := &alerts{}, &clock{t: time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)}
	cfg := monitor.Config{Alerts: a, Now: c.now}
	if mod != nil {
		mod(&cfg)
	}
	return monitor.New(cfg), a, c
}

func denial(i int64) mandate.LoggedEvent {
	return mandate.LoggedEvent{Index: i, Event: &mandate.Event{Type: mandate.EventDecision, Outcome: mandate.OutcomeDeny,
		Task: "t_1", Agent: "spiffe://example.org/agent/a", Action: "tools/call", Resource: "mcp:crm:delete_customer"}}
}

// Repeated denials within the window are probing; the same number spread
// wider is not.
func TestRepeatedDenials(t *testing.T) {
	ctx := context.Background()
	m, a, c := setup(nil)
	for i := range 4 {
		m.Process(ctx, denial(int64(i)))
		c.t = c.t.Add(time.Second)
	}
	if len(a.detectors()) != 0 {
		t.Fatalf("4 denials fired %v", a.detectors())
	}
	m.Process(ctx, denial(4))
	if d := a.detectors(); len(d) != 1 || d[0] != "repeated-denials" || m.Risk("t_1") != 40 {
		t.Fatalf("5 denials in 5 s: %v, risk %d", d, m.Risk("t_1"))
	}
	a.evs[0].Details["evidence"] = fmt.Sprint(a.evs[0].Details["evidence"])
	if a.evs[0].Details["evidence"] != "[4]" || a.evs[0].Task != "t_1" || a.evs[0].By != "monitor" {
		t.Errorf("alert %+v", a.evs[0])
	}
	// Near miss: 5 denials, one every 10 s, never 5 within 30 s.
	m2, a2, c2 := setup(nil)
	for i := range 5 {
		m2.Process(ctx, denial(int64(i)))
		c2.t = c2.t.Add(10 * time.Second)
	}
	if len(a2.detectors()) != 0 {
		t.Errorf("denials spread over 50 s fired %v", a2.detectors())
	}
}

// Risk halves every HalfLife without detections.
func TestRiskDecays(t *testing.T) {
	ctx := context.Background()
	m, _, c := setup(func(c *monitor.Config) { c.Denials = 1 })
	m.Process(ctx, denial(1))
	c.t = c.t.Add(monitor.DefaultHalfLife)
	if r := m.Risk("t_1"); r != 20 {
		t.Errorf("risk after a half-life: %d, want 20", r)
	}
	if r := m.Risk("t_other"); r != 0 {
		t.Errorf("an unknown task's risk: %d", r)
	}
}

// Delegations beyond the rate within a second are a storm; one fewer is not.
func TestSpawnStorm(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{49, 50} {
		m, a, c := setup(nil)
		for i := range n {
			m.Process(ctx, mandate.LoggedEvent{Index: int64(i), Event: &mandate.Event{Type: mandate.EventMandateDelegated, Task: "t_1"}})
			c.t = c.t.Add(10 * time.Millisecond)
		}
		if fired := len(a.detectors()) == 1; fired != (n == 50) {
			t.Errorf("%d delegations in %v: %v", n, time.Duration(n)*10*time.Millisecond, a.detectors())
		}
	}
}

// A secret in the arguments of a call to a sink fires, and revokes the
// task where configured; a secret to a tool that sends nothing out does
// not.
func TestSecretToSink(t *testing.T) {
	ctx := context.Background()
	var revoked []string
	m, a, _ := setup(func(c *monitor.Config) {
		c.RevokeAt = 50
		c.Revoke = func(_ context.Context, task, reason string) error {
			revoked = append(revoked, task+": "+reason)
			return nil
		}
	})
	call := func(i int64, labels []string) mandate.LoggedEvent {
		return mandate.LoggedEvent{Index: i, Event: &mandate.Event{Type: mandate.EventToolCall, Task: "t_1", Resource: "mcp:mail:send",
			Details: map[string]any{"arg_secrets": map[string]any{"aws_access_key_id": 1}, "tool_labels": labels}}}
	}
	m.Process(ctx, call(1, []string{"read_only"}))
	if len(a.detectors()) != 0 || len(revoked) != 0 {
		t.Fatalf("a secret to a tool that sends nothing out: %v %v", a.detectors(), revoked)
	}
	m.Process(ctx, call(2, []string{"external_send"}))
	if d := a.detectors(); len(d) != 1 || d[0] != "secret-to-sink" || len(revoked) != 1 {
		t.Fatalf("a secret to a sink: %v, revoked %v", d, revoked)
	}
	m.Process(ctx, call(3, []string{"external_send"}))
	if len(revoked) != 1 {
		t.Errorf("the task was revoked %d times", len(revoked))
	}
}

// Observe never blocks the store: past the queue, events are counted as
// dropped.
func TestObserveNeverBlocks(t *testing.T) {
	m, _, _ := setup(nil)
	for range 5000 {
		m.Observe([]mandate.LoggedEvent{denial(1)})
	}
	if m.Dropped() == 0 {
		t.Error("a full queue dropped nothing")
	}
}
