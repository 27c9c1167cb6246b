package monitor_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/monitor"
)

// workload generates the events of a benign day: agents with their usual
// tools start tasks for their owners, delegate to one to three sub-agents
// (some two hops down), read and write through the gateway; reporting
// tasks read customer data and send nothing out, notifying tasks send
// and read nothing sensitive. Now and then a call is refused (a scope too
// narrow), a mandate arrives a few milliseconds after it expired, a task
// fans out to a dozen sub-agents, and work comes in bursts of two or
// three times the usual rate. It is deterministic for a seed.
type workload struct {
	Agents, Tasks int
	Span          time.Duration // over which the tasks start
	Seed          uint64
}

type agentProfile struct {
	id     string
	tools  []string
	labels map[string][]string
	sends  bool // a notifier: sends, reads nothing sensitive
}

func (w workload) events() []mandate.LoggedEvent {
	r := rand.New(rand.NewPCG(w.Seed, 1))
	start := time.Date(2026, 12, 4, 8, 0, 0, 0, time.UTC).UnixNano()
	var profiles []agentProfile
	for i := range w.Agents {
		p := agentProfile{id: fmt.Sprintf("spiffe://example.org/agent/a%d", i), labels: map[string][]string{}, sends: i%3 == 0}
		for j := range 3 + r.IntN(4) {
			tool := fmt.Sprintf("mcp:srv%d:tool%d", i%5, j)
			p.tools = append(p.tools, tool)
			switch {
			case p.sends && j == 0:
				p.labels[tool] = []string{"external_send"}
			case !p.sends && j == 0:
				p.labels[tool] = []string{"read_only", "data:customer-data"}
			default:
				p.labels[tool] = []string{"read_only"}
			}
		}
		profiles = append(profiles, p)
	}
	var evs []*mandate.Event
	for ti := range w.Tasks {
		p := profiles[r.IntN(len(profiles))]
		// Bursts: a third of the tasks start in the busy hours, packed.
		at := start + r.Int64N(int64(w.Span))
		if ti%3 == 0 {
			at = start + int64(w.Span)/2 + r.Int64N(int64(w.Span)/8)
		}
		task := fmt.Sprintf("t_%06d", ti)
		narrow := p.tools[r.IntN(len(p.tools))] // out of this task's scope
		root := task + "/m0"
		evs = append(evs, &mandate.Event{Type: mandate.EventMandateIssued, Time: at, Task: task, Mandate: root, Agent: p.id, Chain: []string{p.id}})
		holders := []struct{ agent, mandate string }{{p.id, root}}
		subs := r.IntN(4)
		if ti%50 == 0 {
			subs = 12 // a fan-out, below the detector's 20
		}
		for k := range subs {
			at += int64(time.Millisecond) * (1 + r.Int64N(50))
			parent := holders[r.IntN(len(holders))]
			if len(holders) > 2 {
				parent = holders[0]
			}
			sub := fmt.Sprintf("%s/sub/%s%d", p.id, task[2:], k)
			m := fmt.Sprintf("%s/m%d", task, k+1)
			chain := []string{sub, p.id}
			if parent.mandate != root {
				chain = []string{sub, parent.agent, p.id}
			}
			evs = append(evs, &mandate.Event{Type: mandate.EventMandateDelegated, Time: at, Task: task, Mandate: m, Parent: parent.mandate, Agent: sub, Chain: chain})
			holders = append(holders, struct{ agent, mandate string }{sub, m})
		}
		for range 5 + r.IntN(35) {
			at += int64(100*time.Millisecond) + r.Int64N(int64(2*time.Second))
			h := holders[r.IntN(len(holders))]
			tool := p.tools[r.IntN(len(p.tools))]
			e := &mandate.Event{Type: mandate.EventToolCall, Time: at, Task: task, Mandate: h.mandate, Agent: h.agent,
				Action: "tools/call", Resource: tool, Outcome: mandate.OutcomeOK, Details: map[string]any{"tool_labels": p.labels[tool]}}
			switch x := r.IntN(100); {
			case x < 3: // a call out of the task's scope, refused
				e.Type, e.Outcome, e.Resource = mandate.EventDecision, mandate.OutcomeDeny, narrow
				e.Details = map[string]any{"rpc_error": int64(-32001), "cause": "scope", "tool_labels": p.labels[tool]}
			case x < 5: // a mandate a few milliseconds late
				e.Type, e.Outcome, e.Action = mandate.EventDecision, mandate.OutcomeDeny, "authenticate"
				e.Details = map[string]any{"refused": "exp", "expired_ms": 1 + r.Int64N(800)}
			}
			evs = append(evs, e)
			if e.Type == mandate.EventToolCall {
				res := *e
				res.Type, res.Time = mandate.EventToolResult, at+int64(time.Millisecond)*(1+r.Int64N(30))
				evs = append(evs, &res)
			}
		}
	}
	slices.SortStableFunc(evs, func(a, b *mandate.Event) int { return int(min(max(a.Time-b.Time, -1), 1)) })
	out := make([]mandate.LoggedEvent, len(evs))
	for i, e := range evs {
		e.V = mandate.EventVersion
		out[i] = mandate.LoggedEvent{Index: int64(i), Event: e}
	}
	return out
}

// A benign day of 3,000 tasks raises no alert. The false-positive count
// is reported (docs/monitor.md); the test fails on any.
func TestBenignWorkload(t *testing.T) {
	evs := workload{Agents: 40, Tasks: 3000, Span: 8 * time.Hour, Seed: 7}.events()
	a := &alerts{}
	last := time.Unix(0, evs[len(evs)-1].Time)
	m := monitor.New(monitor.Config{Alerts: a, Now: func() time.Time { return last }})
	for _, e := range evs {
		m.Process(context.Background(), e)
	}
	t.Logf("benign workload: %d tasks, %d events, %d alerts (false positives)", 3000, len(evs), len(a.evs))
	for _, e := range a.evs {
		t.Errorf("false positive: %s on task %s: %s", e.Details["detector"], e.Task, e.Reason)
	}
}

// The same workload with one exfiltration planted: exactly it fires.
func TestWorkloadWithAnExfiltration(t *testing.T) {
	evs := workload{Agents: 40, Tasks: 500, Span: 2 * time.Hour, Seed: 8}.events()
	var read mandate.LoggedEvent
	for _, e := range evs {
		if slices.Contains(stringsOf(e.Details["tool_labels"]), "data:customer-data") && e.Type == mandate.EventToolCall {
			read = e
			break
		}
	}
	send := mandate.LoggedEvent{Index: int64(len(evs)), Event: &mandate.Event{V: mandate.EventVersion, Type: mandate.EventToolCall,
		Time: read.Time + int64(time.Second), Task: read.Task, Mandate: read.Mandate, Agent: read.Agent + "/sub/x",
		Action: "tools/call", Resource: "mcp:mail:send", Details: map[string]any{"tool_labels": []string{"external_send"}}}}
	evs = append(evs, send)
	slices.SortStableFunc(evs, func(a, b mandate.LoggedEvent) int { return int(min(max(a.Time-b.Time, -1), 1)) })
	a := &alerts{}
	m := monitor.New(monitor.Config{Alerts: a})
	for _, e := range evs {
		m.Process(context.Background(), e)
	}
	if d := a.detectors(); len(d) != 1 || d[0] != monitor.Exfiltration || a.evs[0].Task != read.Task {
		t.Fatalf("alerts %v", d)
	}
}

func stringsOf(v any) []string {
	s, _ := v.([]string)
	return s
}

type discard struct{}

func (discard) Append(context.Context, ...*mandate.Event) error { return nil }

// BenchmarkDetectors runs every detector over a benign workload, one
// event at a time on one goroutine: events/s is the figure the issue asks
// for (at least 200,000 on one core; run with -cpu 1).
func BenchmarkDetectors(b *testing.B) {
	evs := workload{Agents: 200, Tasks: 20_000, Span: 8 * time.Hour, Seed: 9}.events()
	quiet := slog.New(slog.DiscardHandler)
	m := monitor.New(monitor.Config{Alerts: discard{}, Logger: quiet})
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if i == len(evs) {
			// The day again, to a monitor that has not seen it.
			b.StopTimer()
			i, m = 0, monitor.New(monitor.Config{Alerts: discard{}, Logger: quiet})
			b.StartTimer()
		}
		m.Process(ctx, evs[i])
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
