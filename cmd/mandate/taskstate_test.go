package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/client"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/monitor"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// flowPolicies: no send out once a task read confidential data, and at
// most two sends per task.
const flowPolicies = `
@id("mint-root")
permit (principal is Agent, action == Action::"MintRoot", resource is Task);
@id("call-tools")
permit (principal is Agent, action in [Action::"CallTool", Action::"ListTools"], resource);
@id("no-send-after-confidential")
forbid (principal, action == Action::"CallTool", resource is Tool)
when { resource.labels.contains("external_send") && context.labels.contains("confidential") };
@id("at-most-2-sends")
forbid (principal, action == Action::"CallTool", resource is Tool)
when { resource.labels.contains("external_send") && context.history.sinks >= 2 };
`

// crmAndMail is an MCP server that lists customers and sends mail.
func crmAndMail() *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "crm", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "list_customers", Description: "Lists customers."}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ada, grace"}}}, nil, nil
	})
	mcp.AddTool(srv, &mcp.Tool{Name: "send_email", Description: "Sends an e-mail."}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sent"}}}, nil, nil
	})
	return srv
}

// What a task did before a restart still counts after it (issue 15, item
// 11): a send after a read of confidential data is refused, a task's
// send count goes on, and the monitor, which rebuilt its state from the
// same log, still sees the send as exfiltration and revokes the task.
func TestTaskStateSurvivesARestart(t *testing.T) {
	ctx := context.Background()
	start := flowServer(t)
	m := start()
	// Two agents: one that reads then sends in one task, one that only
	// sends (the same agent sending in another task after a read would be
	// held by the monitor's cross-task-send).
	root := func(name, scope string) *client.Mandate {
		t.Helper()
		key := addAgent(t, &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}, name)
		agent, err := client.New(client.Config{Issuer: m.URL, AgentID: "spiffe://example.org/agent/" + name, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		md, err := agent.Root(ctx, client.Request{Scope: scope, TTL: 10 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return md
	}
	reader, sender := root("a", "mcp:crm:*"), root("b", "mcp:crm:send_email")
	call := func(m *Main, md *client.Mandate, tool string) error {
		t.Helper()
		cs, err := connectMCP(m, md)
		if err != nil {
			return err
		}
		defer cs.Close()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{}})
		if err == nil && res.IsError {
			t.Fatalf("%s: the tool failed", tool)
		}
		return err
	}
	if err := call(m, reader, "list_customers"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := call(m, sender, "send_email"); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m = start()
	t.Cleanup(func() { m.Close() })
	if err := call(m, reader, "send_email"); err == nil || !strings.Contains(err.Error(), "no-send-after-confidential") {
		t.Errorf("a send after the restart, in the task that read confidential data before it: %v", err)
	}
	if err := call(m, sender, "send_email"); err == nil || !strings.Contains(err.Error(), "at-most-2-sends") {
		t.Errorf("a third send after the restart, two before it: %v", err)
	}
	// The monitor saw the read before the restart: the attempt is
	// exfiltration, and the task is revoked.
	wait, stop := context.WithTimeout(ctx, time.Minute)
	defer stop()
	var alert *mandate.LoggedEvent
	admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
	admin.Follow(wait, url.Values{"type": {mandate.EventAlert}, "task": {reader.Claims.Task}}, 0, func(e mandate.LoggedEvent) error {
		if e.Details["detector"] == monitor.Exfiltration {
			alert = &e
			stop()
		}
		return nil
	})
	if alert == nil {
		t.Fatal("no exfiltration alert after the restart")
	}
	if alert.Details["found_at_start"] != nil {
		t.Errorf("the alert of a detection after the start says it was found at start: %+v", alert.Details)
	}
}

// A task ends when its root mandate expires, whatever mandate of it asks:
// the gateway keeps its state until then (a root mint approved long after
// its task was named lives past the task's naming and an hour).
func TestTaskEndsWithItsRoot(t *testing.T) {
	ctx := context.Background()
	m, agent := serveWithMCP(t, listServer(), false)
	root, err := agent.Root(ctx, client.Request{Scope: "mcp:crm:list", TTL: 30 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	child, err := agent.Delegate(ctx, root, client.NewEphemeral(), client.Request{TTL: time.Minute}, client.DelegateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	grandchild, err := agent.Delegate(ctx, child, client.NewEphemeral(), client.Request{TTL: 30 * time.Second}, client.DelegateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, md := range []*client.Mandate{child, grandchild} {
		if end, err := m.taskEnd(ctx, md.Claims); err != nil || !end.Equal(root.Claims.Expiry.Time) {
			t.Errorf("the task's end from %s: %v %v, want the root's expiry %v", md.Claims.ID, end, err, root.Claims.Expiry.Time)
		}
	}
}

// A start reads back what it must restore, not the last hour's every
// event (issue 16, item 6): after a burst of 10,000 root issuances of
// tasks that never came to the gateway, it decodes the events the
// gateway and the monitor need (a task's calls, and its root issuance),
// not the burst, and what the task did before the restart still counts.
func TestStartReadsOnlyWhatItRestores(t *testing.T) {
	ctx := context.Background()
	start := flowServer(t)
	m := start()
	key := addAgent(t, &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}, "a")
	agent, err := client.New(client.Config{Issuer: m.URL, AgentID: "spiffe://example.org/agent/a", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	reader, err := agent.Root(ctx, client.Request{Scope: "mcp:crm:*", TTL: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	call := func(m *Main, tool string) error {
		t.Helper()
		cs, err := connectMCP(m, reader)
		if err != nil {
			return err
		}
		defer cs.Close()
		_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{}})
		return err
	}
	if err := call(m, "list_customers"); err != nil {
		t.Fatal(err)
	}
	before, _ := m.Store.LogHead()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	const burst = 10_000
	writeBurst(t, filepath.Join(m.DataDir, "mandate.db"), time.Now, burst)

	m = start()
	t.Cleanup(func() { m.Close() })
	st := m.stateRestored
	t.Logf("log: %d events before the burst, %d after; restore: %+v", before, before+burst, st)
	if st.Parsed > before || st.Events > before || st.Parsed > st.Events+2 {
		t.Errorf("the start decoded %d events (%d restored) of a log of %d before a burst of %d issuances it does not need: want at most the %d before",
			st.Parsed, st.Events, before, burst, before)
	}
	if st.Events == 0 {
		t.Error("the start restored nothing")
	}
	if err := call(m, "send_email"); err == nil || !strings.Contains(err.Error(), "no-send-after-confidential") {
		t.Errorf("a send after the restart, in the task that read confidential data before it and the burst: %v", err)
	}
}

// flowServer returns a function that starts (and starts again) a server
// on one data directory with the flow policies and the crm upstream
// behind its gateway, whose list_customers reads confidential data and
// whose send_email sends out. Each start keeps the issuer identifier of
// the first, which the mandates issued before name.
func flowServer(t *testing.T) func() *Main {
	dir, policies := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(policies, "flow.cedar"), []byte(flowPolicies), 0o600); err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return crmAndMail() }, nil))
	t.Cleanup(up.Close)
	issuerURL := ""
	return func() *Main {
		t.Helper()
		m := NewMain()
		m.Addr, m.DataDir, m.PolicyDir, m.IssuerURL = "127.0.0.1:0", dir, policies, issuerURL
		m.Stdout, m.Stderr = testWriter{t}, testWriter{t}
		m.MCPUpstreams = []gateway.Route{{Name: "crm", URL: up.URL,
			ToolLabels: map[string][]string{"list_customers": {"data:confidential"}, "send_email": {"external_send"}}}}
		if err := m.Open(context.Background()); err != nil {
			t.Fatal(err)
		}
		issuerURL = m.IssuerURL
		return m
	}
}
