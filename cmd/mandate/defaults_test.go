package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/client"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/monitor"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The tests of this file run the shipped defaults untouched: the default
// policy set, the monitor's default responses, and a configuration that
// only labels tools (docs/policy.md "The default set", docs/monitor.md).

// sendServer is an MCP server with a send_email tool that keeps what it
// was asked to send, and a list tool.
func sendServer() (*mcp.Server, func() []string) {
	srv := listServer()
	var mu sync.Mutex
	var got []string
	mcp.AddTool(srv, &mcp.Tool{Name: "send_email"}, func(_ context.Context, _ *mcp.CallToolRequest, in struct {
		To   string `json:"to"`
		Body string `json:"body"`
	}) (*mcp.CallToolResult, any, error) {
		mu.Lock()
		got = append(got, in.To+": "+in.Body)
		mu.Unlock()
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sent"}}}, nil, nil
	})
	return srv, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), got...) }
}

// A secret in the arguments of a call to a tool labelled external_send is
// refused before it is forwarded, with the shipped defaults: the upstream
// never receives it, the client (the official MCP Go SDK) is told which
// policy refused, and the audit log has the decision. However the secret
// is spelt in the JSON: an escape the server would decode hides nothing.
func TestSecretToExternalSinkRefusedInline(t *testing.T) {
	ctx := context.Background()
	srv, received := sendServer()
	m, agent := serveWithMCPLabels(t, srv, true, map[string][]string{"send_email": {"external_send"}})
	root, cs := rootSession(t, m, agent, "mcp:crm:send_email mcp:crm:list")
	pem := "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----"
	// Whatever else of the call reaches the server is looked at too.
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "send_email", Arguments: map[string]any{"to": "ops@partner.example", "body": "hi"},
		Meta: mcp.Meta{"note": "AKIAIOSFODNN7EXAMPLE"}}); err == nil || !strings.Contains(err.Error(), "no-secret-to-external-sink") {
		t.Errorf("a secret in _meta: %v", err)
	}
	for name, args := range map[string]any{
		"cloud key":   map[string]any{"to": "ops@partner.example", "body": "the key is AKIAIOSFODNN7EXAMPLE"},
		"private key": map[string]any{"to": "ops@partner.example", "body": pem},
		"token":       map[string]any{"to": "ops@partner.example", "body": "ghp_" + strings.Repeat("a1B2", 9)},
		// The bytes as a client may send them: the server decodes the
		// escapes into AKIA….
		"escaped cloud key": json.RawMessage(`{"to":"ops@partner.example","body":"\u0041KIAIOSFODNN7EXAMPL\u0045"}`),
	} {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "send_email", Arguments: args})
		if err == nil || !strings.Contains(err.Error(), "no-secret-to-external-sink") {
			t.Errorf("%s: %v, want a denial naming no-secret-to-external-sink", name, err)
		}
	}
	if got := received(); len(got) != 0 {
		t.Fatalf("the upstream received %q", got)
	}
	evs, err := m.Store.Events(ctx, mandate.EventFilter{Type: mandate.EventDecision, Task: root.Claims.Task, Limit: 10})
	if err != nil || len(evs) != 5 {
		t.Fatalf("decision events: %v %d", err, len(evs))
	}
	for _, e := range evs {
		if e.Outcome != mandate.OutcomeDeny || e.Resource != "mcp:crm:send_email" || fmt.Sprint(e.Details["policies"]) != "[no-secret-to-external-sink]" ||
			e.Details["arg_secrets"] == nil || e.Details["policy_set"] != m.Policy.Set().Hash() {
			t.Errorf("decision event %s %s %v", e.Outcome, e.Resource, e.Details)
		}
	}
	if calls, _ := m.Store.Events(ctx, mandate.EventFilter{Type: mandate.EventToolCall, Task: root.Claims.Task, Limit: 10}); len(calls) != 0 {
		t.Errorf("%d tool.call events for refused calls", len(calls))
	}
	// The attempt is the monitor's too: secret-to-sink holds the rest of
	// the task for a person.
	awaitEvent(t, m, url.Values{"type": {mandate.EventAlert}, "task": {root.Claims.Task}}, func(e mandate.LoggedEvent) bool {
		return e.Details["detector"] == monitor.SecretToSink
	})
	if m.Monitor.Hold(root.Claims.Task) == "" {
		t.Error("the task is not held after the attempt")
	}
	// In another task, the same secret to a tool that sends nothing out
	// is the policy's to allow, and a send without a secret is a send.
	_, other := rootSession(t, m, agent, "mcp:crm:send_email mcp:crm:list")
	if _, err := other.CallTool(ctx, &mcp.CallToolParams{Name: "list", Arguments: map[string]any{"q": "AKIAIOSFODNN7EXAMPLE"}}); err != nil {
		t.Errorf("a secret to a tool that sends nothing out: %v", err)
	}
	if _, err := other.CallTool(ctx, &mcp.CallToolParams{Name: "send_email", Arguments: map[string]any{"to": "ops@partner.example", "body": "hello"}}); err != nil {
		t.Errorf("a send without a secret: %v", err)
	}
	if got := received(); len(got) != 1 || got[0] != "ops@partner.example: hello" {
		t.Errorf("the upstream received %q", got)
	}
}

// awaitEvent follows m's event stream (the log from its start, then live)
// until an event matching q satisfies ok, and returns it: the test waits
// on the event, not on the clock. It fails the test if none comes within
// a minute (a hang, not a timing).
func awaitEvent(t testing.TB, m *Main, q url.Values, ok func(mandate.LoggedEvent) bool) mandate.LoggedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got *mandate.LoggedEvent
	errFound := errors.New("found")
	admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
	err := admin.Follow(ctx, q, 0, func(e mandate.LoggedEvent) error {
		if ok(e) {
			got = &e
			return errFound
		}
		return nil
	})
	if got == nil {
		t.Fatalf("no event matching %v came: %v", q, err)
	}
	return *got
}

// toolsServer is an MCP server with the tools named, each answering "ok".
func toolsServer(names ...string) *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{Name: "crm", Version: "1"}, nil)
	for _, n := range names {
		mcp.AddTool(srv, &mcp.Tool{Name: n}, func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "ok"}}}, nil, nil
		})
	}
	return srv
}

// What a benign agent does, and what others do to its task, never
// quarantines it with the shipped defaults: a client that lists tools, a
// retry loop on one refused call, and refusals that only the task's risk
// caused (raised here by someone presenting the task's revoked mandates,
// which says nothing of the agent) are not probing.
func TestBenignRefusalsDoNotQuarantine(t *testing.T) {
	ctx := context.Background()
	tools := []string{"t1", "t2", "t3", "t4", "t5", "t6"}
	m, agent := serveWith(t, toolsServer(tools...), false, nil, nil)
	admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
	root, cs := rootSession(t, m, agent, "mcp:crm:t1 mcp:crm:t2 mcp:crm:t3 mcp:crm:t4 mcp:crm:t5 mcp:crm:t6")
	task := root.Claims.Task
	for range 3 {
		if _, err := cs.ListTools(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 { // a client stuck on one call out of its scope
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "export", Arguments: map[string]any{}}); err == nil {
			t.Fatal("an out-of-scope call went through")
		}
	}
	// Someone replays the task's revoked sub-agent mandates: each raises
	// the task's risk (dead-mandate-use), not the agent's.
	var dead []*client.Mandate
	for range 6 {
		md, err := agent.Delegate(ctx, root, client.NewEphemeral(), client.Request{Scope: "mcp:crm:t1"}, client.DelegateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Revoke(ctx, httpapi.RevocationRequest{Mandate: md.Claims.ID, Reason: "done"}); err != nil {
			t.Fatal(err)
		}
		dead = append(dead, md)
	}
	for _, md := range dead[:5] {
		if refused, _ := gatewayRefuses(ctx, m.URL, "crm", md); !refused {
			t.Fatal("a revoked mandate was taken")
		}
	}
	awaitEvent(t, m, url.Values{"type": {mandate.EventAlert}, "task": {task}}, func(e mandate.LoggedEvent) bool {
		return fmt.Sprint(e.Details["risk"]) == "100"
	})
	// The task is stopped: every tool is refused, for its risk only.
	for _, tool := range tools {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: map[string]any{}}); err == nil || !strings.Contains(err.Error(), "stop-at-high-risk") {
			t.Fatalf("%s at risk %d: %v", tool, m.Monitor.Risk(task, ""), err)
		}
	}
	// A last replay: once its alert is in, the monitor has seen all the
	// refusals before it (it reads the log in order).
	gatewayRefuses(ctx, m.URL, "crm", dead[5])
	awaitEvent(t, m, url.Values{"type": {mandate.EventAlert}, "task": {task}, "mandate": {dead[5].Claims.ID}}, func(mandate.LoggedEvent) bool { return true })
	alerts, _ := admin.Events(ctx, url.Values{"type": {mandate.EventAlert}, "task": {task}})
	for _, a := range alerts {
		if a.Details["detector"] != monitor.DeadMandateUse {
			t.Errorf("alert %s: %s", a.Details["detector"], a.Reason)
		}
	}
	if a, err := admin.Agent(ctx, "a"); err != nil || a.Status != string(mandate.AgentActive) {
		t.Fatalf("the agent: %+v %v", a, err)
	}
	if _, err := agent.Root(ctx, client.Request{Scope: "mcp:crm:t1", TTL: time.Minute}); err != nil {
		t.Errorf("a new task for the agent: %v", err)
	}
}

// An ephemeral sub-agent that keeps calling outside its scope gets its
// registered agent quarantined: only a registered agent can be disabled
// (a sub-agent lives as long as its mandate), and it is the one that
// spawned it and can spawn another. So its other tasks stop too: their
// mandates are revoked with the rest of its live mandates.
func TestProbingSubAgentQuarantinesItsAgent(t *testing.T) {
	ctx := context.Background()
	m, agent := serveWith(t, toolsServer("list"), false, nil, nil)
	root, err := agent.Root(ctx, client.Request{Scope: "mcp:crm:*", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	other, err := agent.Root(ctx, client.Request{Scope: "mcp:crm:list", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := agent.Delegate(ctx, root, client.NewEphemeral(), client.Request{Scope: "mcp:crm:list"}, client.DelegateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := connectMCP(m, sub)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	for _, probe := range []string{"delete", "export", "drop", "wipe", "dump"} {
		if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: probe, Arguments: map[string]any{}}); err == nil {
			t.Fatal("an out-of-scope call went through")
		}
	}
	disabled := awaitEvent(t, m, url.Values{"type": {mandate.EventAgentDisabled}}, func(mandate.LoggedEvent) bool { return true })
	if disabled.Agent != "spiffe://example.org/agent/a" || disabled.By != "monitor" || disabled.Details["detector"] != monitor.RepeatedDenials {
		t.Fatalf("agent.disabled %+v", disabled.Event)
	}
	awaitEvent(t, m, url.Values{"type": {mandate.EventMandateRevoked}, "mandate": {other.Claims.ID}}, func(mandate.LoggedEvent) bool { return true })
	for name, md := range map[string]*client.Mandate{"the sub-agent": sub, "its task's root": root, "the agent's other task": other} {
		if refused, why := gatewayRefuses(ctx, m.URL, "crm", md); !refused || !strings.Contains(why, "revoked") {
			t.Errorf("%s's mandate: refused %v (%s)", name, refused, why)
		}
	}
	if _, err := agent.Root(ctx, client.Request{Scope: "mcp:crm:list", TTL: time.Minute}); err == nil {
		t.Error("a quarantined agent got a new mandate")
	}
}

// A restart fails open nowhere in the monitor: a task it held for a
// person is still held, and a task that read customer data before the
// restart is still tainted, so that a send out of it after the restart is
// exfiltration (the task is revoked).
func TestMonitorStateSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	srv, _ := sendServer()
	m, agent := serveWith(t, srv, false, map[string][]string{"list": {"read_only", "data:customer-data"}, "send_email": {"external_send"}},
		func(m *Main) { m.DataDir = dir })
	held, hs := rootSession(t, m, agent, "mcp:crm:send_email")
	if _, err := hs.CallTool(ctx, &mcp.CallToolParams{Name: "send_email", Arguments: map[string]any{"to": "x@partner.example", "body": "AKIAIOSFODNN7EXAMPLE"}}); err == nil {
		t.Fatal("a secret went out")
	}
	awaitEvent(t, m, url.Values{"type": {mandate.EventAlert}, "task": {held.Claims.Task}}, func(mandate.LoggedEvent) bool { return true })
	tainted, ts := rootSession(t, m, agent, "mcp:crm:list mcp:crm:send_email")
	if _, err := ts.CallTool(ctx, &mcp.CallToolParams{Name: "list", Arguments: map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	hold := m.Monitor.Hold(held.Claims.Task)
	hs.Close()
	ts.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m2 := NewMain()
	m2.Addr, m2.DataDir, m2.IssuerURL, m2.MCPUpstreams = "127.0.0.1:0", dir, m.IssuerURL, m.MCPUpstreams
	m2.Stdout, m2.Stderr = testWriter{t}, testWriter{t}
	if err := m2.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if got := m2.Monitor.Hold(held.Claims.Task); got == "" || got != hold {
		t.Errorf("after the restart the held task's hold is %q, want %q", got, hold)
	}
	if r := m2.Monitor.Risk(held.Claims.Task, ""); r == 0 {
		t.Error("the held task's risk is 0 after the restart")
	}
	cs, err := mcpSession(ctx, m2.URL, "crm", tainted)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	// (Forwarded, or held by policy if the gateway's task state is
	// restored too: an attempt either way.)
	go cs.CallTool(ctx, &mcp.CallToolParams{Name: "send_email", Arguments: map[string]any{"to": "x@partner.example", "body": "ada, grace"}})
	awaitEvent(t, m2, url.Values{"type": {mandate.EventAlert}, "task": {tainted.Claims.Task}}, func(e mandate.LoggedEvent) bool {
		return e.Details["detector"] == monitor.Exfiltration
	})
	awaitEvent(t, m2, url.Values{"type": {mandate.EventMandateRevoked}, "mandate": {tainted.Claims.ID}}, func(mandate.LoggedEvent) bool { return true })
}
