package main

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/client"
	"github.com/mandatehq/mandate/gateway"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// `mandate serve` in front of an MCP server that goes down mid-session:
// the agent's official client gets a JSON-RPC error saying nothing was
// forwarded (-32002), not a bare 502, and the call's tool.result, which
// the monitor and auditors read, says it failed and was not forwarded.
func TestServeGatewayUpstreamDown(t *testing.T) {
	ctx := context.Background()
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return listServer() }, nil))
	t.Cleanup(up.Close)
	m, agent := serveWith(t, listServer(), true, nil, func(m *Main) {
		m.MCPUpstreams = []gateway.Route{{Name: "crm", URL: up.URL}}
	})
	root, err := agent.Root(ctx, client.Request{Scope: "mcp:crm:list", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := connectMCP(m, root)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "list", Arguments: map[string]any{}}); err != nil {
		t.Fatal(err)
	}
	up.Close() // its port is closed now: connection refused
	_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "list", Arguments: map[string]any{}})
	var we *jsonrpc.Error
	if !errors.As(err, &we) || we.Code != gateway.CodeUnavailable || we.Message != "the MCP server crm cannot be reached: nothing was forwarded; try again later" {
		t.Fatalf("the agent's client got %v", err)
	}
	m.Gateway.Drain()
	evs, err := m.Store.Events(ctx, mandate.EventFilter{Type: mandate.EventToolResult, Limit: 10})
	if err != nil || len(evs) != 2 {
		t.Fatalf("tool.result events: %v %d", err, len(evs))
	}
	if ev := evs[1].Event; ev.Outcome != mandate.OutcomeError || ev.Details["forwarded"] != false || ev.Reason != we.Message {
		t.Errorf("the failed call's tool.result: %s %q %v", ev.Outcome, ev.Reason, ev.Details)
	}
}
