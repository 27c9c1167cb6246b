package monitor_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/monitor"
)

// With the default responses, an agent whose requests keep being refused
// for what they ask (outside its scope, or by policy) is quarantined: its
// registered agent, for an ephemeral sub-agent.
func TestProbingQuarantinesByDefault(t *testing.T) {
	ctx := context.Background()
	var acts []monitor.Action
	m, a, c := setup(func(cfg *monitor.Config) {
		cfg.Act = func(_ context.Context, act monitor.Action) error { acts = append(acts, act); return nil }
	})
	for i := range 5 {
		e := denial(int64(i))
		e.Agent = agentA + "/sub/x1"
		if i%2 == 1 {
			e.Agent = agentA + "/sub/x2" // its sibling: the same registered agent
			e.Details["cause"] = "policy"
		}
		e.Time = c.t.UnixNano()
		m.Process(ctx, e)
		c.t = c.t.Add(time.Second)
	}
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.RepeatedDenials {
		t.Fatalf("alerts %v", d)
	}
	if len(acts) != 1 || acts[0].Response != monitor.Quarantine || acts[0].Agent != agentA || acts[0].Detector != monitor.RepeatedDenials {
		t.Fatalf("responses %+v", acts)
	}
}

// What a benign agent does, or what others do to it, is not probing: a
// refusal it did not cause (the gateway's store unavailable, a tool
// whose definition changed, a method the gateway does not pass, a
// person's no, a task stopped for its risk, which a thief with the
// task's stolen mandates can raise) counts for nothing, nor do refusals
// by different registered agents of one task add up.
func TestRefusalsThatAreNotProbing(t *testing.T) {
	ctx := context.Background()
	for name, mod := range map[string]func(i int, e *mandate.Event){
		"no cause": func(_ int, e *mandate.Event) { delete(e.Details, "cause") },
		"risk":     func(_ int, e *mandate.Event) { e.Details["cause"] = "risk" },
		"unknown":  func(_ int, e *mandate.Event) { e.Details["cause"] = "tool" },
		"by a person": func(_ int, e *mandate.Event) {
			e.By = "user:bob@example.org"
		},
		"five agents": func(i int, e *mandate.Event) { e.Agent = fmt.Sprintf("spiffe://example.org/agent/a%d/sub/x", i) },
	} {
		var acts []monitor.Action
		m, a, c := setup(func(cfg *monitor.Config) {
			cfg.Act = func(_ context.Context, act monitor.Action) error { acts = append(acts, act); return nil }
		})
		for i := range 10 {
			e := denial(int64(i))
			e.Time = c.t.UnixNano()
			mod(i%5, e.Event)
			m.Process(ctx, e)
			c.t = c.t.Add(time.Second)
		}
		if len(a.detectors()) != 0 || len(acts) != 0 {
			t.Errorf("%s: alerts %v, responses %+v", name, a.detectors(), acts)
		}
	}
}

// An HTTP request is a call like a tool's: refused or not, a send out
// (a route labelled external_send) after a sensitive read in the task
// is exfiltration.
func TestHTTPSendAfterARead(t *testing.T) {
	ctx := context.Background()
	m, a, c := setup(nil)
	m.Process(ctx, labelled(c, 1, agentA, "mcp:crm:list_customers", mandate.OutcomeOK, "read_only", "data:customer-data"))
	e := ev(c, 2, mandate.EventDecision, func(e *mandate.Event) {
		e.Action, e.Resource, e.Outcome = "POST", "http:hooks:POST:/in", mandate.OutcomeDeny
		e.Details = map[string]any{"tool_labels": []string{"external_send"}, "cause": "policy"}
	})
	m.Process(ctx, e)
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.Exfiltration {
		t.Fatalf("alerts %v", d)
	}
}
