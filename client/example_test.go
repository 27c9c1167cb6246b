package client_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/client"
)

// An orchestrator obtains a root mandate for a task and spawns three
// ephemeral sub-agents, each with a narrower scope and a lifetime of its
// own, the shortest 30 ms.
func Example() {
	s := startServer(exampleTB{})
	ctx := context.Background()
	orchestrator := s.register(exampleTB{}, "orchestrator", "mcp:crm:* mcp:email:send", true, nil)

	root, err := orchestrator.Root(ctx, client.Request{
		Scope: "mcp:crm:* mcp:email:send", TTL: time.Minute, Purpose: "quarterly churn report",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("root:", short(root.Claims.ClientID), root.Claims.Scope)

	for _, sub := range []struct {
		scope string
		ttl   time.Duration
	}{
		{"mcp:crm:list_customers", 30 * time.Millisecond},
		{"mcp:crm:get_customer", 2 * time.Second},
		{"mcp:email:send", 10 * time.Second},
	} {
		m, err := orchestrator.Delegate(ctx, root, client.NewEphemeral(), client.Request{Scope: sub.scope, TTL: sub.ttl}, client.DelegateOptions{})
		if err != nil {
			fmt.Println(err)
			return
		}
		c := m.Claims
		fmt.Printf("sub-agent %s: %s for %v, %s-bound, depth %d, same task: %v\n",
			short(c.ClientID), c.Scope, m.Lifetime, m.Type, c.Depth(), c.Task == root.Claims.Task)
	}
	// Output:
	// root: orchestrator mcp:crm:* mcp:email:send
	// sub-agent orchestrator/sub/…: mcp:crm:list_customers for 30ms, DPoP-bound, depth 2, same task: true
	// sub-agent orchestrator/sub/…: mcp:crm:get_customer for 2s, DPoP-bound, depth 2, same task: true
	// sub-agent orchestrator/sub/…: mcp:email:send for 10s, DPoP-bound, depth 2, same task: true
}

// short shortens a SPIFFE ID for printing: the agent's path, with the
// random part of an ephemeral agent's name elided.
func short(id string) string {
	_, path, _ := strings.Cut(id, "/agent/")
	if i := strings.Index(path, "/sub/"); i >= 0 {
		return path[:i] + "/sub/…"
	}
	return path
}

// exampleTB lets the example use the test helpers; a failure panics.
type exampleTB struct{ testing.TB }

func (exampleTB) Helper()                   {}
func (exampleTB) TempDir() string           { return mustTempDir() }
func (exampleTB) Cleanup(func())            {}
func (exampleTB) Fatal(args ...any)         { panic(fmt.Sprint(args...)) }
func (exampleTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
