package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The official Go SDK's client, with its default options, connects
// through the gateway, lists the tools and calls one. With its defaults
// it opens the GET stream of server messages during Connect and waits for
// that stream's response headers, which carry nothing until the server
// speaks: the gateway must send them at once. The mandate goes the SDK's
// documented way, an http.Client whose transport adds it (here DPoP-bound,
// with a proof per request). The deadline makes headers that never come a
// failure, not a hang: the SDK opens that stream under its connection's
// own context, not Connect's, so the deadline is the requests' (bounded).
func TestGoSDKConnectsWithDefaults(t *testing.T) {
	e := newEnv(t)
	key := e.agent("sdk-agent", "mcp:crm:*")
	tok := e.mint("sdk-agent", key, "mcp:crm:*", time.Minute, true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "sdk-agent", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: e.gw.URL + "/mcp/crm",
			HTTPClient: &http.Client{Transport: bounded{ctx, mandateTransport{token: tok.AccessToken, key: key}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	tools, err := cs.ListTools(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(tools.Tools) == 0 {
		t.Fatal("no tools listed")
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_customers", Arguments: map[string]any{"name": "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError || len(res.Content) == 0 || !strings.Contains(res.Content[0].(*mcp.TextContent).Text, "ada") {
		t.Fatalf("call answered %+v", res)
	}
}

// bounded ends each request, and the stream it opens, when ctx ends.
type bounded struct {
	ctx  context.Context
	next http.RoundTripper
}

func (b bounded) RoundTrip(r *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(b.ctx, cancel)
	resp, err := b.next.RoundTrip(r.WithContext(ctx))
	if err != nil {
		stop()
		cancel()
	}
	return resp, err
}
