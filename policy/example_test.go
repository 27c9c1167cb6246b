package policy_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/mandatehq/mandate/policy"
)

// The gateway's view: open the policy directory (the default set is
// written on first start), keep it fresh, and ask before every tool call.
func ExampleEngine() {
	dir, err := os.MkdirTemp("", "policies")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	e, err := policy.Open(policy.Config{
		Dir:    dir,
		Logger: slog.New(slog.DiscardHandler),
		OnLoad: func(r policy.LoadResult) {
			// Append a policy.loaded event with r.AuditDetails() here.
			fmt.Println("loaded", r.Files, "written", r.Wrote, "error", r.Err)
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go e.Watch(ctx, 2*time.Second)

	d := e.Decide(ctx, policy.Request{
		Action:     policy.ActionCallTool,
		Subject:    "user:alice@acme.example",
		Agent:      policy.AgentInfo{ID: "spiffe://acme.example/agent/orchestrator", Owner: "alice@acme.example"},
		Server:     "github",
		Tool:       "delete_repo",
		ToolLabels: []string{"destructive"},
		Args:       map[string]any{"repo": "acme/app"},
	})
	fmt.Println(d.Outcome(), d.Policies)
	// Output:
	// loaded [default.cedar] written [default.cedar] error <nil>
	// approval [destructive-needs-approval]
}

// mandate policy test: run a file of cases against the directory it names.
func ExampleRunTests() {
	res, err := policy.RunTests("../examples/policies/risk-gating/tests.json")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Passed, "passed,", res.Failed, "failed")
	// Output: 10 passed, 0 failed
}

// mandate policy explain: why a request gets the decision it gets.
func ExampleSet_Explain() {
	set, err := policy.LoadDir("../examples/policies/read-only-sub-agents")
	if err != nil {
		log.Fatal(err)
	}
	x := set.Explain(policy.Request{
		Action: policy.ActionCallTool,
		Agent:  policy.AgentInfo{ID: "spiffe://acme.example/agent/o/sub/1/sub/2"},
		Chain:  []string{"spiffe://acme.example/agent/o/sub/1/sub/2", "spiffe://acme.example/agent/o/sub/1", "spiffe://acme.example/agent/o"},
		Server: "github", Tool: "create_issue", ToolLabels: []string{"write"},
	})
	fmt.Println(x.Summary)
	for _, p := range x.Policies {
		line := p.ID + ": " + p.Result
		if p.Why != "" {
			line += " (" + p.Why + ")"
		}
		fmt.Println(line)
	}
	// Output:
	// denied: forbid deep-agents-read-only-tools matched, and a forbid wins over any permit (permits that matched: call-tools)
	// call-tools: matched
	// list-and-read: not applicable (its action scope does not include CallTool)
	// crm-api: not applicable (its action scope does not include CallTool)
	// deep-agents-read-only-tools: matched
	// deep-agents-read-only-http: not applicable (its action scope does not include CallTool)
}
