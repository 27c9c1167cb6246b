package monitor_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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

// denial is a refused call of tool i, outside the mandate's scope.
func denial(i int64) mandate.LoggedEvent {
	return mandate.LoggedEvent{Index: i, Event: &mandate.Event{Type: mandate.EventDecision, Outcome: mandate.OutcomeDeny,
		Task: "t_1", Agent: "spiffe://example.org/agent/a", Action: "tools/call", Resource: fmt.Sprintf("mcp:crm:tool%d", i),
		Details: map[string]any{"cause": "scope"}}}
}

// Refusals of different requests within the window are probing; the same
// number spread wider is not, nor the same refused call retried.
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
	if d := a.detectors(); len(d) != 1 || d[0] != "repeated-denials" || m.Risk("t_1", "") != 40 {
		t.Fatalf("5 denials in 5 s: %v, risk %d", d, m.Risk("t_1", ""))
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
	m3, a3, _ := setup(nil)
	for range 10 {
		m3.Process(ctx, denial(1))
	}
	m3.Process(ctx, denial(2))
	if len(a3.detectors()) != 0 {
		t.Errorf("one call retried: %v", a3.detectors())
	}
	// Retries between the probes do not hide them.
	m4, a4, _ := setup(nil)
	for i := range 5 {
		m4.Process(ctx, denial(int64(i)))
		for range 100 {
			m4.Process(ctx, denial(99))
		}
	}
	if len(a4.detectors()) != 1 {
		t.Errorf("5 probes among 500 retries: %v", a4.detectors())
	}
}

// Risk halves every HalfLife without detections; the agent's risk is
// raised with the task's, and an ephemeral sub-agent shares its
// registered ancestor's.
func TestRiskDecays(t *testing.T) {
	ctx := context.Background()
	m, _, c := setup(func(c *monitor.Config) { c.Denials = 1 })
	m.Process(ctx, denial(1))
	c.t = c.t.Add(monitor.DefaultHalfLife)
	if r := m.Risk("t_1", ""); r != 20 {
		t.Errorf("risk after a half-life: %d, want 20", r)
	}
	if r := m.Risk("t_other", ""); r != 0 {
		t.Errorf("an unknown task's risk: %d", r)
	}
	if r := m.Risk("t_other", "spiffe://example.org/agent/a/sub/x1"); r != 20 {
		t.Errorf("the agent's risk in another task: %d, want 20", r)
	}
	if r := m.Risk("t_other", "spiffe://example.org/agent/b"); r != 0 {
		t.Errorf("another agent's risk: %d", r)
	}
}

const agentA = "spiffe://example.org/agent/a"

// ev makes a logged event of task t_1 by agent a at the clock's time.
func ev(c *clock, i int64, typ string, mod func(*mandate.Event)) mandate.LoggedEvent {
	e := &mandate.Event{Type: typ, Task: "t_1", Agent: agentA, Mandate: "m_1", Time: c.t.UnixNano(), Details: map[string]any{}}
	if typ == mandate.EventToolCall {
		e.Action, e.Resource = "tools/call", "mcp:crm:list_customers"
	}
	if mod != nil {
		mod(e)
	}
	return mandate.LoggedEvent{Index: i, Event: e}
}

func delegation(c *clock, i int64, parent string, depth int) mandate.LoggedEvent {
	return ev(c, i, mandate.EventMandateDelegated, func(e *mandate.Event) {
		e.Mandate, e.Parent = fmt.Sprintf("m_c%d", i), parent
		for range depth {
			e.Chain = append(e.Chain, agentA)
		}
	})
}

// Delegations beyond the rate within a second are a storm; one fewer is
// not. The storm revokes the task.
func TestSpawnStorm(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{49, 50} {
		var acts []monitor.Action
		m, a, c := setup(func(c *monitor.Config) {
			c.FanOut = 1000
			c.Act = func(_ context.Context, act monitor.Action) error { acts = append(acts, act); return nil }
		})
		for i := range n {
			m.Process(ctx, delegation(c, int64(i), "m_parent", 2))
			c.t = c.t.Add(10 * time.Millisecond)
		}
		if fired := len(a.detectors()) == 1; fired != (n == 50) {
			t.Errorf("%d delegations in %v: %v", n, time.Duration(n)*10*time.Millisecond, a.detectors())
		}
		if got := m.Counters("t_1")["spawns"]; got != int64(n) {
			t.Errorf("spawns for policy: %d, want %d", got, n)
		}
		if n == 50 && (len(acts) != 1 || acts[0].Response != monitor.RevokeTask || acts[0].Task != "t_1" || acts[0].Mandate != "m_parent") {
			t.Errorf("a storm's response: %+v, want the task revoked", acts)
		}
	}
}

// One mandate delegating to FanOut agents fires, at any pace; FanOut-1
// does not, nor FanOut spread over several parents.
func TestFanOut(t *testing.T) {
	ctx := context.Background()
	m, a, c := setup(func(c *monitor.Config) { c.FanOut = 5 })
	for i := range 4 {
		m.Process(ctx, delegation(c, int64(i), "m_p1", 2))
		m.Process(ctx, delegation(c, int64(10+i), "m_p2", 2))
		c.t = c.t.Add(time.Minute)
	}
	if len(a.detectors()) != 0 {
		t.Fatalf("4 children each of two mandates: %v", a.detectors())
	}
	m.Process(ctx, delegation(c, 20, "m_p1", 2))
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.FanOut || a.evs[0].Mandate != "m_p1" {
		t.Fatalf("5 children of one mandate: %v", d)
	}
}

// A delegation whose chain reaches Depth agents fires; one shallower does
// not.
func TestDeepDelegation(t *testing.T) {
	ctx := context.Background()
	m, a, c := setup(nil)
	m.Process(ctx, delegation(c, 1, "m_1", monitor.DefaultDepth-1))
	if len(a.detectors()) != 0 {
		t.Fatalf("depth %d: %v", monitor.DefaultDepth-1, a.detectors())
	}
	m.Process(ctx, delegation(c, 2, "m_2", monitor.DefaultDepth))
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.DeepDelegation {
		t.Fatalf("depth %d: %v", monitor.DefaultDepth, d)
	}
}

// calls makes n tool calls of tool by agent a over d, evenly.
func calls(m *monitor.Monitor, c *clock, from int64, n int, d time.Duration, tool string) {
	for i := range n {
		m.Process(context.Background(), ev(c, from+int64(i), mandate.EventToolCall, func(e *mandate.Event) { e.Resource = tool }))
		c.t = c.t.Add(d / time.Duration(n))
	}
}

// An agent that makes 10 calls every 10 s for two minutes, then 100 in
// ten seconds, spikes; one that goes to 40 (4 times its baseline) does
// not, nor does a new agent's first burst.
func TestRateSpike(t *testing.T) {
	for _, tt := range []struct {
		name         string
		warm, burst  int
		warmDuration time.Duration
		fires        bool
	}{
		{"10x the baseline", 10, 100, 2 * time.Minute, true},
		{"4x the baseline", 10, 40, 2 * time.Minute, false},
		{"a new agent's burst", 10, 100, 20 * time.Second, false},
	} {
		m, a, c := setup(func(c *monitor.Config) { c.RateMin = 30 })
		calls(m, c, 0, tt.warm*int(tt.warmDuration/(10*time.Second)), tt.warmDuration, "mcp:crm:list_customers")
		calls(m, c, 10_000, tt.burst, 9*time.Second, "mcp:crm:list_customers")
		if got := slices.Contains(a.detectors(), monitor.RateSpike); got != tt.fires {
			t.Errorf("%s: fired %v", tt.name, a.detectors())
		}
	}
}

// A tool an agent never called, after it made NewToolAfter calls over
// NewToolLearn, fires; while it learns, every tool is new and none fires;
// a tool it used before does not.
func TestNewTool(t *testing.T) {
	m, a, c := setup(nil)
	for i := range 2 * monitor.DefaultNewToolAfter {
		tool := []string{"mcp:crm:list_customers", "mcp:crm:get_customer", "mcp:mail:send"}[i%3]
		calls(m, c, int64(i), 1, time.Second, tool)
	}
	calls(m, c, 50, 1, time.Second, "mcp:crm:export") // new, but still learning
	c.t = c.t.Add(monitor.DefaultNewToolLearn)
	calls(m, c, 100, 5, 5*time.Second, "mcp:mail:send")
	calls(m, c, 110, 1, time.Second, "mcp:crm:export")
	if len(a.detectors()) != 0 {
		t.Fatalf("known tools: %v", a.detectors())
	}
	calls(m, c, 200, 1, time.Second, "mcp:crm:delete_customer")
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.NewTool {
		t.Fatalf("a new tool: %v", d)
	}
	calls(m, c, 300, 1, time.Second, "mcp:crm:delete_customer")
	if len(a.detectors()) != 1 {
		t.Errorf("the same tool again: %v", a.detectors())
	}
}

func labelled(c *clock, i int64, agent, tool string, outcome string, labels ...string) mandate.LoggedEvent {
	typ := mandate.EventToolCall
	if outcome == mandate.OutcomeDeny {
		typ = mandate.EventDecision
	}
	return ev(c, i, typ, func(e *mandate.Event) {
		e.Action, e.Resource, e.Agent, e.Outcome = "tools/call", tool, agent, outcome
		e.Details["tool_labels"] = labels
	})
}

// A sensitive read then a send out in the same task fires, even when
// another agent of the task sends, and even when policy refused the send;
// the response revokes the task. A send with no read before, or a read in
// another task, does not.
func TestExfiltration(t *testing.T) {
	ctx := context.Background()
	var acts []monitor.Action
	m, a, c := setup(func(c *monitor.Config) {
		c.Act = func(_ context.Context, act monitor.Action) error { acts = append(acts, act); return nil }
	})
	sibling := agentA + "/sub/x2"
	m.Process(ctx, labelled(c, 1, sibling, "mcp:mail:send", mandate.OutcomeOK, "external_send"))
	other := labelled(c, 2, "spiffe://example.org/agent/b", "mcp:crm:list_customers", mandate.OutcomeOK, "data:customer-data")
	other.Task = "t_2"
	m.Process(ctx, other)
	m.Process(ctx, labelled(c, 3, sibling, "mcp:mail:send", mandate.OutcomeOK, "external_send"))
	if len(a.detectors()) != 0 {
		t.Fatalf("sends without a read in the task: %v", a.detectors())
	}
	m.Process(ctx, labelled(c, 4, agentA+"/sub/x1", "mcp:crm:list_customers", mandate.OutcomeOK, "data:customer-data"))
	m.Process(ctx, labelled(c, 5, sibling, "mcp:mail:send", mandate.OutcomeDeny, "external_send"))
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.Exfiltration {
		t.Fatalf("a sibling's refused send after a read: %v", d)
	}
	if fmt.Sprint(a.evs[0].Details["evidence"]) != "[4 5]" {
		t.Errorf("evidence %v, want the read and the send", a.evs[0].Details["evidence"])
	}
	if len(acts) != 1 || acts[0].Response != monitor.RevokeTask || acts[0].Task != "t_1" {
		t.Errorf("responses %+v, want the task revoked", acts)
	}
}

// An agent that read sensitive data in one task and sends out in another
// within CrossTask is held for approval: a new task does not wash the data
// clean. Past CrossTask, or by another agent, it is not.
func TestCrossTaskSend(t *testing.T) {
	ctx := context.Background()
	m, a, c := setup(nil)
	read := labelled(c, 1, agentA+"/sub/r", "mcp:crm:list_customers", mandate.OutcomeOK, "data:customer-data")
	read.Task = "t_2"
	m.Process(ctx, read)
	other := labelled(c, 2, "spiffe://example.org/agent/b", "mcp:mail:send", mandate.OutcomeOK, "external_send")
	other.Task = "t_3"
	m.Process(ctx, other)
	if len(a.detectors()) != 0 {
		t.Fatalf("another agent's send: %v", a.detectors())
	}
	c.t = c.t.Add(monitor.DefaultCrossTask - time.Second)
	m.Process(ctx, labelled(c, 3, agentA, "mcp:mail:send", mandate.OutcomeOK, "external_send"))
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.CrossTaskSend || m.Hold("t_1") == "" || m.Hold("t_2") != "" {
		t.Fatalf("a send in t_1 after a read in t_2: %v, hold %q", d, m.Hold("t_1"))
	}
	if m.Risk("t_3", "spiffe://example.org/agent/b") != 0 {
		t.Error("agent b's risk was raised")
	}
	late := labelled(c, 4, agentA, "mcp:mail:send", mandate.OutcomeOK, "external_send")
	late.Task, late.Time = "t_4", c.t.Add(2*time.Second).UnixNano()
	m.Process(ctx, late)
	if len(a.detectors()) != 1 {
		t.Errorf("a send %v after the read: %v", monitor.DefaultCrossTask+time.Second, a.detectors())
	}
}

// A secret in the arguments of a call to a sink fires and holds the rest
// of the task for approval; a secret to a tool that sends nothing out does
// not. With RevokeAt, the risk it raises revokes the task, once.
func TestSecretToSink(t *testing.T) {
	ctx := context.Background()
	var acts []monitor.Action
	m, a, c := setup(func(c *monitor.Config) {
		c.RevokeAt = 50
		c.Act = func(_ context.Context, act monitor.Action) error { acts = append(acts, act); return nil }
	})
	call := func(i int64, labels ...string) mandate.LoggedEvent {
		e := labelled(c, i, agentA, "mcp:mail:send", mandate.OutcomeOK, labels...)
		e.Details["arg_secrets"] = map[string]any{"aws_access_key_id": 1}
		return e
	}
	m.Process(ctx, call(1, "read_only"))
	if len(a.detectors()) != 0 || m.Hold("t_1") != "" {
		t.Fatalf("a secret to a tool that sends nothing out: %v", a.detectors())
	}
	m.Process(ctx, call(2, "external_send"))
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.SecretToSink || m.Hold("t_1") == "" {
		t.Fatalf("a secret to a sink: %v, hold %q", d, m.Hold("t_1"))
	}
	if len(acts) != 1 || acts[0].Response != monitor.RevokeTask || acts[0].Detector != monitor.HighRisk {
		t.Fatalf("risk 60 past RevokeAt 50: %+v", acts)
	}
	m.Process(ctx, call(3, "external_send"))
	if len(acts) != 1 || m.Hold("t_2") != "" {
		t.Errorf("the task was revoked %d times", len(acts))
	}
}

func refused(c *clock, i int64, check string, expiredMS int64) mandate.LoggedEvent {
	return ev(c, i, mandate.EventDecision, func(e *mandate.Event) {
		e.Action, e.Outcome = "authenticate", mandate.OutcomeDeny
		e.Details["refused"] = check
		if check == "exp" {
			e.Details["expired_ms"] = expiredMS
		}
	})
}

// A revoked mandate in use fires, once per mandate; an expired one fires
// only when used long after its expiry (a replay), not a few milliseconds
// late.
func TestDeadMandateUse(t *testing.T) {
	ctx := context.Background()
	m, a, c := setup(nil)
	m.Process(ctx, refused(c, 1, "exp", 40))
	m.Process(ctx, refused(c, 2, "exp", 4999))
	m.Process(ctx, refused(c, 3, "aud", 0))
	if len(a.detectors()) != 0 {
		t.Fatalf("late mandates: %v", a.detectors())
	}
	m.Process(ctx, refused(c, 4, "exp", 60_000))
	m.Process(ctx, refused(c, 5, "revocation", 0))
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.DeadMandateUse {
		t.Fatalf("a replayed and a revoked mandate, both m_1: %v", d)
	}
	r := refused(c, 6, "revocation", 0)
	r.Mandate = "m_2"
	m.Process(ctx, r)
	if len(a.detectors()) != 2 {
		t.Errorf("another revoked mandate: %v", a.detectors())
	}
	// Someone else may hold the dead mandates: the agent's other tasks go on.
	if r := m.Risk("t_other", agentA); r != 0 {
		t.Errorf("the agent's risk in another task: %d", r)
	}
}

// A key-bound mandate presented by someone without the key fires and
// revokes it; a denial of the call itself does not count as one.
func TestDPoPMismatch(t *testing.T) {
	ctx := context.Background()
	var acts []monitor.Action
	m, a, c := setup(func(c *monitor.Config) {
		c.Act = func(_ context.Context, act monitor.Action) error { acts = append(acts, act); return nil }
	})
	m.Process(ctx, refused(c, 1, "dpop", 0)) // a stale proof: not a stolen key
	m.Process(ctx, denial(2))
	if len(a.detectors()) != 0 {
		t.Fatalf("%v", a.detectors())
	}
	m.Process(ctx, refused(c, 3, "dpop-key", 0))
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.DPoPMismatch || len(acts) != 1 || acts[0].Mandate != "m_1" {
		t.Fatalf("a proof by another key: %v, %+v", d, acts)
	}
}

// Each check a refusal of a genuine mandate may name (verify.Error, and
// the token endpoint's refusals of a parent) reaches the detectors: those
// that show someone without the key, or a dead mandate, fire; a holder's
// own mistake and a store that could not answer do not.
func TestRefusalChecks(t *testing.T) {
	ctx := context.Background()
	for check, want := range map[string]string{
		"dpop-bearer": monitor.DPoPMismatch, "dpop-key": monitor.DPoPMismatch, "revocation": monitor.DeadMandateUse,
		"dpop-proof": "", "dpop-replay": "", "dpop": "", "revocation-unknown": "", "nbf": "", "iat": "", "act": "", "online": "",
	} {
		for _, action := range []string{"authenticate", "delegate"} { // the gateway's, the token endpoint's
			m, a, c := setup(nil)
			r := refused(c, 1, check, 0)
			r.Action = action
			m.Process(ctx, r)
			if got := strings.Join(a.detectors(), " "); got != want {
				t.Errorf("%s refused for %s: detections %q, want %q", action, check, got, want)
			}
		}
	}
}

// A response that fails is said so in the alert (what a caller would be
// told, not the cause: the alert is an audit event, which the public may
// read), and tried again on the next detection.
func TestFailedResponseIsRetried(t *testing.T) {
	ctx := context.Background()
	tries := 0
	m, a, c := setup(func(cfg *monitor.Config) {
		cfg.Responses = map[string][]monitor.Response{monitor.DeadMandateUse: {monitor.RevokeTask}}
		cfg.Act = func(context.Context, monitor.Action) error {
			if tries++; tries == 1 {
				return mandate.Wrapf(errors.New("SQL logic error: no such table: revocations"), mandate.EUNAVAILABLE, "store unavailable")
			}
			return nil
		}
	})
	m.Process(ctx, refused(c, 1, "revocation", 0))
	if fmt.Sprint(a.evs[0].Details["failed"]) != "[revoke-task: store unavailable]" {
		t.Fatalf("the alert of a failed response: %v", a.evs[0].Details)
	}
	if m.Hold("t_1") == "" {
		t.Error("a task that could not be revoked is not held: it fails open")
	}
	r := refused(c, 2, "revocation", 0)
	r.Mandate = "m_2"
	m.Process(ctx, r)
	if tries != 2 || a.evs[1].Details["failed"] != nil {
		t.Errorf("retried %d times; second alert %v", tries, a.evs[1].Details)
	}
	r.Mandate, r.Index = "m_3", 3
	m.Process(ctx, r)
	if tries != 2 {
		t.Errorf("a revoked task revoked again: %d tries", tries)
	}
}

// Responses can be set per detector, and a bad name is refused clearly.
func TestResponsesConfigured(t *testing.T) {
	ctx := context.Background()
	var acts []monitor.Action
	m, a, _ := setup(func(c *monitor.Config) {
		c.Denials = 1
		c.Responses = map[string][]monitor.Response{monitor.RepeatedDenials: {monitor.Quarantine, monitor.Approve}}
		c.Act = func(_ context.Context, act monitor.Action) error { acts = append(acts, act); return nil }
	})
	e := denial(1)
	e.Agent = agentA + "/sub/x1"
	m.Process(ctx, e)
	if len(acts) != 1 || acts[0].Response != monitor.Quarantine || acts[0].Agent != agentA || m.Hold("t_1") == "" {
		t.Fatalf("quarantine and approve: %+v, hold %q", acts, m.Hold("t_1"))
	}
	if got := fmt.Sprint(a.evs[0].Details["responses"]); got != "[alert quarantine approve]" {
		t.Errorf("the alert names responses %s", got)
	}
	if err := monitor.CheckResponses(map[string][]monitor.Response{"probing": {monitor.Alert}}); err == nil {
		t.Error("an unknown detector passed")
	}
	if err := monitor.CheckResponses(map[string][]monitor.Response{monitor.NewTool: {"shout"}}); err == nil {
		t.Error("an unknown response passed")
	}
	// Whoever presents a stolen mandate may not be its agent.
	if err := monitor.CheckResponses(map[string][]monitor.Response{monitor.DPoPMismatch: {monitor.Quarantine}}); err == nil {
		t.Error("quarantine for a stolen-mandate detector passed")
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
