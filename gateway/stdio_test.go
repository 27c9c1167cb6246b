package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/gateway"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// TestMain lets this test binary be a stdio MCP server (the official Go
// SDK's), which the stdio tests have the gateway run.
func TestMain(m *testing.M) {
	if os.Getenv("GATEWAY_TEST_STDIO_SERVER") == "hostile" {
		hostileStdio()
		os.Exit(0)
	}
	if os.Getenv("GATEWAY_TEST_STDIO_SERVER") == "1" {
		srv := mcp.NewServer(&mcp.Implementation{Name: "local", Version: "1"}, nil)
		mcp.AddTool(srv, &mcp.Tool{Name: "pid", Description: "Says which process answers."},
			func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
				return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: fmt.Sprint(os.Getpid())}}}, nil, nil
			})
		fmt.Fprintln(os.Stderr, "stdio test server up")
		if err := srv.Run(context.Background(), &mcp.StdioTransport{}); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The gateway runs a stdio MCP server a process per session, and the
// official client reaches it through /mcp/{name} like any other.
func TestStdioUpstream(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g, err := gateway.New(gateway.Config{
		StdioRoutes: []gateway.StdioRoute{{Name: "local", Command: []string{os.Args[0]}, Env: []string{"GATEWAY_TEST_STDIO_SERVER=1"}}},
		Issuer:      iss, Keys: keySource{e.keys}, PublicURL: e.gw.URL, Policy: allowAll{}, Events: e.store, Tools: e.store,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	e.gw.Config.Handler, e.g = g, g
	key := e.agent("local-user", "mcp:local:*")
	connect := func() *mcp.ClientSession {
		t.Helper()
		tok := e.mint("local-user", key, "mcp:local:pid", time.Minute, false)
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil).Connect(ctx,
			&mcp.StreamableClientTransport{Endpoint: e.gw.URL + "/mcp/local", DisableStandaloneSSE: true, MaxRetries: -1,
				HTTPClient: &http.Client{Transport: mandateTransport{token: tok.AccessToken}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	pid := func(cs *mcp.ClientSession) string {
		t.Helper()
		res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "pid", Arguments: map[string]any{}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Content[0].(*mcp.TextContent).Text
	}
	a, b := connect(), connect()
	if list, err := a.ListTools(ctx, nil); err != nil || len(list.Tools) != 1 || list.Tools[0].Name != "pid" {
		t.Fatalf("tools/list: %v %+v", err, list)
	}
	pa, pb := pid(a), pid(b)
	if pa == pb || pa == fmt.Sprint(os.Getpid()) {
		t.Errorf("sessions answered by processes %s and %s: want one each", pa, pb)
	}
	if pid(a) != pa {
		t.Error("a session moved to another process")
	}
	a.Close()
	b.Close()
	if n := len(e.events(mandate.EventToolCall)); n != 3 {
		t.Errorf("%d tool.call events, want 3", n)
	}
}

// The stdio bridge listens on loopback, but answers the gateway only.
func TestStdioBridgeAnswersOnlyTheGateway(t *testing.T) {
	e := newEnv(t)
	var logs strings.Builder
	g, err := gateway.New(gateway.Config{
		StdioRoutes: []gateway.StdioRoute{{Name: "local", Command: []string{os.Args[0]}, Env: []string{"GATEWAY_TEST_STDIO_SERVER=1"}}},
		Issuer:      iss, Keys: keySource{e.keys}, PublicURL: e.gw.URL, Policy: allowAll{}, Events: e.store, Tools: e.store,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	u := gateway.StdioURL(g, "local")
	if u == "" || !strings.HasPrefix(u, "http://127.0.0.1:") {
		t.Fatalf("bridge URL %q", u)
	}
	resp, err := http.Post(u, "application/json", strings.NewReader(initialize))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("a direct request to the bridge: %d", resp.StatusCode)
	}
}
