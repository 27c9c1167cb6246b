package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate/gateway"
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

// The SSE answer to a POST has its headers at the client as soon as the
// upstream's arrive, before its first event: the upstream answers the call
// only once the client holds that response's headers (its transport's
// RoundTrip has returned), which a gateway that held them until the first
// event would never let happen.
func TestPostStreamHeadersBeforeTheFirstEvent(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			ID     json.RawMessage `json:"id"`
			Method string          `json:"method"`
		}
		json.NewDecoder(r.Body).Decode(&m)
		switch {
		case r.Method != http.MethodPost:
			w.WriteHeader(http.StatusMethodNotAllowed)
		case m.Method == "initialize":
			w.Header().Set("Mcp-Session-Id", "s1")
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, rpcResult(m.ID, `{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"slow","version":"1"}}`))
		case len(m.ID) == 0:
			w.WriteHeader(http.StatusAccepted)
		case m.Method == "tools/list":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, rpcResult(m.ID, `{"tools":[`+benignAdd+`]}`))
		default:
			sseHeaders(w)
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			io.WriteString(w, sse(rpcResult(m.ID, okResult)))
		}
	}))
	t.Cleanup(up.Close)
	e.regateway(func(c *gateway.Config) { c.Routes = []gateway.Route{{Name: "crm", URL: up.URL}} })
	key := e.agent("sdk-agent", "mcp:crm:*")
	tok := e.mint("sdk-agent", key, "mcp:crm:*", time.Minute, false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var once sync.Once
	seen := func(r *http.Request, resp *http.Response) {
		if r.Method == http.MethodPost && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
			once.Do(func() { close(release) })
		}
	}
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "sdk-agent", Version: "1"}, nil).Connect(ctx,
		&mcp.StreamableClientTransport{Endpoint: e.gw.URL + "/mcp/crm",
			HTTPClient: &http.Client{Transport: bounded{ctx, headersSeen{mandateTransport{token: tok.AccessToken}, seen}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if _, err := cs.ListTools(ctx, nil); err != nil {
		t.Fatal(err)
	}
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "add", Arguments: map[string]any{"a": 1, "b": 2}})
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError || len(res.Content) == 0 || res.Content[0].(*mcp.TextContent).Text != "3" {
		t.Fatalf("call answered %+v", res)
	}
}

// headersSeen calls seen once a response's headers have arrived.
type headersSeen struct {
	next http.RoundTripper
	seen func(*http.Request, *http.Response)
}

func (h headersSeen) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(r)
	if err == nil {
		h.seen(r, resp)
	}
	return resp, err
}
