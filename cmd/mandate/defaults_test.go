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
	if err != nil || len(evs) != 4 {
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
