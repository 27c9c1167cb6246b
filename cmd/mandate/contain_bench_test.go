package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/mandatehq/mandate/client"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// containPolicies permit what the scenario needs and refuse, inline, a
// send out of a task that read customer data (as the example set
// risk-gating does for confidential data).
const containPolicies = `
@id("mint-root") permit (principal is Agent, action == Action::"MintRoot", resource is Task);
@id("delegate") permit (principal is Agent, action == Action::"Delegate", resource is Task);
@id("discovery") permit (principal is Agent, action in [Action::"ListTools", Action::"ReadResource", Action::"GetPrompt"], resource);
@id("call-tools") permit (principal is Agent, action == Action::"CallTool", resource is Tool);
@id("no-send-after-customer-data")
forbid (principal, action == Action::"CallTool", resource is Tool)
when { resource.labels.contains("external_send") && context.labels.contains("customer-data") };
`

// BenchmarkTimeToContain measures, through the running server, the time
// from the moment a sub-agent's exfiltrating call is sent to the gateway
// to the moment its sibling's mandate is refused there: the call is
// refused inline by policy, its decision event is committed, the monitor's
// exfiltration detector fires, the task's tree is revoked, and the
// gateway's next check of any mandate of the tree says so. The sibling
// asks every 0.1 ms (an authenticated PUT, which the gateway answers 405
// without going upstream, or 401 once revoked). p50 and p99 are
// reported; each iteration is a new task.
func BenchmarkTimeToContain(b *testing.B) {
	ctx := context.Background()
	srv := mcp.NewServer(&mcp.Implementation{Name: "crm", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "list_customers"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ada@example.org"}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "send_email"}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sent"}}}, nil, nil
	})
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "contain.cedar"), []byte(containPolicies), 0o600); err != nil {
		b.Fatal(err)
	}
	m, agent := serveWith(b, srv, false, map[string][]string{"list_customers": {"data:customer-data"}, "send_email": {"external_send"}},
		func(m *Main) { m.PolicyDir = dir; m.Stdout, m.Stderr = discardWriter{}, discardWriter{} })
	refused := func(md *client.Mandate) bool {
		refused, _ := gatewayRefuses(ctx, m.URL, "crm", md)
		return refused
	}
	var took []time.Duration
	for b.Loop() {
		b.StopTimer()
		root, reader, sender := readerAndSender(b, agent)
		rs, err := connectMCP(m, reader)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := rs.CallTool(ctx, &mcp.CallToolParams{Name: "list_customers"}); err != nil {
			b.Fatal(err)
		}
		rs.Close()
		ss, err := connectMCP(m, sender)
		if err != nil {
			b.Fatal(err)
		}
		if refused(reader) {
			b.Fatal("the reader is refused before the send")
		}
		b.StartTimer()
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := ss.CallTool(ctx, &mcp.CallToolParams{Name: "send_email"})
			done <- err
		}()
		for !refused(reader) {
			if time.Since(start) > 10*time.Second {
				b.Fatal("not contained within 10 s")
			}
			// A pause between checks, so that the checking does not take
			// the CPU from what it measures (2 cores here).
			time.Sleep(100 * time.Microsecond)
		}
		took = append(took, time.Since(start))
		b.StopTimer()
		if err := <-done; err == nil {
			b.Fatal("the send went through")
		}
		ss.Close()
		if !refused(root) || !refused(sender) {
			b.Fatal("the reader is refused but not the whole tree")
		}
		b.StartTimer()
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
