package policy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
)

// benchPolicies generates n policies shaped like a real gateway set: seven
// in ten about tool calls (per-tool permits with team and risk conditions,
// label forbids, argument constraints), the rest about delegation, minting
// and resources.
func benchPolicies(n int) map[string][]byte {
	var b strings.Builder
	for i := range n {
		switch i % 10 {
		case 0, 1, 2:
			fmt.Fprintf(&b, "permit (principal is Agent, action == Action::\"CallTool\", resource == Tool::\"srv%d:tool%d\")\nwhen { context.risk < 50 && principal.labels.contains(\"team-%d\") };\n", i%7, i, i%5)
		case 3:
			fmt.Fprintf(&b, "forbid (principal, action == Action::\"CallTool\", resource)\nwhen { resource.labels.contains(\"label%d\") && context.depth > 2 };\n", i)
		case 4:
			fmt.Fprintf(&b, "permit (principal is Agent, action == Action::\"CallTool\", resource in Server::\"srv%d\")\nwhen { context.args has to && context.args.to like \"*@corp%d.example\" };\n", i%7, i)
		case 5:
			fmt.Fprintf(&b, "forbid (principal, action == Action::\"CallTool\", resource)\nwhen { context.history.sinks > %d && context.labels.contains(\"secret-%d\") };\n", i, i)
		case 6:
			fmt.Fprintf(&b, "@approval(\"required\")\npermit (principal is Agent, action == Action::\"CallTool\", resource is Tool)\nwhen { resource.labels.contains(\"destructive-%d\") };\n", i)
		case 7:
			fmt.Fprintf(&b, "permit (principal is Agent, action == Action::\"Delegate\", resource)\nwhen { context.depth <= %d && context.scopes.contains(\"mcp:srv%d:*\") };\n", i%4+1, i%7)
		case 8:
			fmt.Fprintf(&b, "permit (principal is Agent, action == Action::\"MintRoot\", resource)\nwhen { principal.owner == User::\"owner%d@acme.example\" };\n", i)
		case 9:
			fmt.Fprintf(&b, "permit (principal, action == Action::\"ReadResource\", resource in Server::\"srv%d\")\nwhen { context.time.hour >= 8 && context.time.hour < 18 };\n", i%7)
		}
	}
	return map[string][]byte{"bench.cedar": []byte(b.String())}
}

// benchRequest is a tool call that the generated policies allow.
func benchRequest() Request {
	return Request{
		Action:  ActionCallTool,
		Subject: "user:alice@acme.example",
		Agent: AgentInfo{
			ID: "spiffe://acme.example/agent/orchestrator/sub/7f3a", Name: "orchestrator", Owner: "alice@acme.example",
			Labels: []string{"team-0", "prod"}, Ephemeral: true, Registered: "spiffe://acme.example/agent/orchestrator",
		},
		Chain:      []string{"spiffe://acme.example/agent/orchestrator/sub/7f3a", "spiffe://acme.example/agent/orchestrator"},
		Task:       "t_01JD0000000000000000000000",
		Purpose:    "weekly report",
		Server:     "srv0",
		Tool:       "tool0",
		ToolLabels: []string{"write"},
		Args:       map[string]any{"to": "bob@corp4.example", "subject": "report", "body": "see attached", "priority": float64(2)},
		Risk:       10,
		DPoP:       true,
		Labels:     []string{"internal"},
		History:    map[string]int64{"calls": 12, "sinks": 1},
		Time:       time.Date(2026, 3, 2, 10, 30, 0, 0, time.UTC),
	}
}

// BenchmarkDecide times Engine-equivalent decisions (Set.Decide: build
// entities and context from the Request, evaluate, make the Decision) with
// 10, 100 and 1,000 policies, and in the same run a bare cedar.Authorize
// call over the same policies as a cedar.PolicySet, with the entities and
// request built once beforehand. ratio is Decide's time over the bare
// call's.
//
//	go test -run '^$' -bench Decide -cpu 1 ./policy/
func BenchmarkDecide(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		files := benchPolicies(n)
		set, err := NewSet(files)
		if err != nil {
			b.Fatal(err)
		}
		ps, err := cedar.NewPolicySetFromBytes("bench.cedar", files["bench.cedar"])
		if err != nil {
			b.Fatal(err)
		}
		req := benchRequest()
		if d := set.Decide(req); !d.Allow {
			b.Fatalf("%d policies: %+v", n, d)
		}
		es, creq, err := cedarRequest(&req, nil)
		if err != nil {
			b.Fatal(err)
		}
		em := types.EntityMap{}
		for i := range es.n {
			em[es.es[i].UID] = es.es[i]
		}
		var bare, decide time.Duration
		b.Run(fmt.Sprintf("policies=%d/bare", n), func(b *testing.B) {
			for b.Loop() {
				if dec, _ := cedar.Authorize(ps, em, creq); dec != cedar.Allow {
					b.Fatal("deny")
				}
			}
			bare = b.Elapsed() / time.Duration(b.N)
		})
		b.Run(fmt.Sprintf("policies=%d/decide", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if d := set.Decide(req); !d.Allow {
					b.Fatal("deny")
				}
			}
			decide = b.Elapsed() / time.Duration(b.N)
			if bare > 0 {
				b.ReportMetric(float64(decide)/float64(bare), "ratio")
			}
		})
	}
}

// BenchmarkEngineDecide is Decide through the Engine (atomic load of the
// set, the clock) with the default set, the one most servers start with.
func BenchmarkEngineDecide(b *testing.B) {
	e, err := Open(Config{Dir: b.TempDir(), Logger: discard()})
	if err != nil {
		b.Fatal(err)
	}
	req := benchRequest()
	req.Time = time.Time{}
	ctx := context.Background()
	for b.Loop() {
		if d := e.Decide(ctx, req); !d.Allow {
			b.Fatal(d.Reasons)
		}
	}
}
