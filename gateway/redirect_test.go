package gateway_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate/gateway"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// internalService stands for what a hostile upstream would aim the
// gateway at: it counts the requests that reach it.
func internalService(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"internal secrets"}]}}`)
	}))
	t.Cleanup(s.Close)
	return s, &hits
}

// An MCP upstream's redirect is never followed, whatever Client the
// gateway is given: the call (and its body, which 307 and 308 would send
// again) does not reach the address it names, and the client gets a
// JSON-RPC error saying the server redirected.
func TestMCPUpstreamRedirectsAreNotFollowed(t *testing.T) {
	for _, client := range []struct {
		name string
		c    *http.Client
	}{{"default client", nil}, {"caller's client", &http.Client{}}, {"caller's client with a jar", &http.Client{Jar: jar{}}}} {
		t.Run(client.name, func(t *testing.T) {
			internal, hits := internalService(t)
			e := newEnv(t)
			var cookies atomic.Int64
			hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Cookie") != "" {
					cookies.Add(1) // one agent's cookie would reach the upstream on another's request
				}
				b, _ := io.ReadAll(r.Body)
				if r.Method == http.MethodPost && strings.Contains(string(b), `"initialize"`) {
					w.Header().Set("Content-Type", "application/json")
					w.Header().Set("Mcp-Session-Id", "s1")
					io.WriteString(w, `{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"h","version":"1"}}}`)
					return
				}
				http.Redirect(w, r, internal.URL+"/admin", http.StatusTemporaryRedirect)
			}))
			t.Cleanup(hostile.Close)
			e.regateway(func(c *gateway.Config) {
				c.Routes, c.Client = []gateway.Route{{Name: "crm", URL: hostile.URL}}, client.c
			})
			key := e.agent("reporter", "mcp:crm:*")
			tok := e.mint("reporter", key, "mcp:crm:*", time.Minute, false).AccessToken
			resp, _ := e.post(tok, "", initialize)
			if resp.StatusCode != 200 {
				t.Fatalf("initialize: %d", resp.StatusCode)
			}
			// A call before any list: the gateway lists the tools itself,
			// and that request is redirected too.
			resp, body := e.post(tok, "s1", `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x","arguments":{"secret":"body"}}}`)
			if resp.StatusCode != 200 || !strings.Contains(body, `"error"`) {
				t.Errorf("tools/call: %d %s", resp.StatusCode, body)
			}
			resp, body = e.post(tok, "s1", `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`)
			if resp.StatusCode != 200 || !strings.Contains(body, `"code":-32010`) || !strings.Contains(body, "redirect") || !strings.Contains(body, `"id":3`) ||
				resp.Header.Get("Location") != "" {
				t.Errorf("tools/list: %d %s %v", resp.StatusCode, body, resp.Header)
			}
			for _, method := range []string{http.MethodGet, http.MethodDelete} {
				req, _ := http.NewRequest(method, e.gw.URL+"/mcp/crm", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Mcp-Session-Id", "s1")
				req.Header.Set("Accept", "text/event-stream")
				resp, err := noRedirects.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("Location") != "" {
					t.Errorf("%s: %d %v", method, resp.StatusCode, resp.Header)
				}
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("the internal service got %d requests", n)
			}
			if n := cookies.Load(); n != 0 {
				t.Errorf("%d requests to the upstream carried the client's cookie jar", n)
			}
		})
	}
}

// The official MCP client sees the redirect as an error of its call.
func TestMCPRedirectReachesTheOfficialClientAsAnError(t *testing.T) {
	internal, hits := internalService(t)
	e := newEnv(t)
	redirecting := atomic.Bool{}
	upstream := e.upstream.Config.Handler
	e.upstream.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if redirecting.Load() {
			http.Redirect(w, r, internal.URL, http.StatusPermanentRedirect)
			return
		}
		upstream.ServeHTTP(w, r)
	})
	key := e.agent("reporter", "mcp:crm:*")
	cs, err := e.connect(e.mint("reporter", key, "mcp:crm:*", time.Minute, false), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if _, err := cs.ListTools(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	redirecting.Store(true)
	_, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: "list_customers", Arguments: map[string]any{"name": "ada"}})
	if err == nil || !strings.Contains(err.Error(), "redirect") {
		t.Errorf("a redirected call: %v", err)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the internal service got %d requests", n)
	}
}

// jar is a cookie jar that would send a cookie to any host.
type jar struct{}

func (jar) SetCookies(*url.URL, []*http.Cookie) {}
func (jar) Cookies(*url.URL) []*http.Cookie {
	return []*http.Cookie{{Name: "session", Value: "another agent's"}}
}

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// An HTTP upstream's redirect is relayed only where it stays on the
// upstream, rewritten to the gateway's address of it: a redirect anywhere
// else (an internal address, another host) is a 502, so the agent is not
// sent there by the upstream; a Location elsewhere on another answer is
// dropped. The gateway itself never follows one.
func TestHTTPUpstreamRedirects(t *testing.T) {
	internal, hits := internalService(t)
	e := newEnv(t)
	root := staticRoot(t)
	files := http.FileServer(http.Dir(root))
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := strings.TrimPrefix(r.URL.Path, "/v2"); p {
		case "/internal":
			http.Redirect(w, r, internal.URL+"/latest/meta-data", http.StatusFound)
		case "/resend":
			http.Redirect(w, r, internal.URL, http.StatusPermanentRedirect)
		case "/scheme-relative":
			w.Header().Set("Location", "//"+strings.TrimPrefix(internal.URL, "http://")+"/x")
			w.WriteHeader(http.StatusMovedPermanently)
		case "/outside-base":
			http.Redirect(w, r, "/other/x", http.StatusFound)
		case "/inside":
			http.Redirect(w, r, "/v2/public/index.txt?x=1", http.StatusSeeOther)
		case "/created":
			w.Header().Set("Location", internal.URL+"/objects/1")
			w.WriteHeader(http.StatusCreated)
		case "/not-modified":
			w.WriteHeader(http.StatusNotModified)
		default:
			http.StripPrefix("/v2", files).ServeHTTP(w, r)
		}
	}))
	t.Cleanup(api.Close)
	e.regateway(func(c *gateway.Config) {
		c.Routes, c.HTTPRoutes, c.Client = nil, []gateway.HTTPRoute{{Name: "files", URL: api.URL + "/v2"}}, &http.Client{}
	})
	key := e.agent("reader", "http:files:*:/**")
	tok := e.mint("reader", key, "http:files:*:/**", time.Minute, false).AccessToken
	for _, tt := range []struct {
		method, path string
		status       int
		location     string
	}{
		{"GET", "/internal", http.StatusBadGateway, ""},
		{"POST", "/resend", http.StatusBadGateway, ""},
		{"GET", "/scheme-relative", http.StatusBadGateway, ""},
		{"GET", "/outside-base", http.StatusBadGateway, ""},
		{"GET", "/inside", http.StatusSeeOther, e.gw.URL + "/http/files/public/index.txt?x=1"},
		{"GET", "/public", http.StatusMovedPermanently, e.gw.URL + "/http/files/public/"},
		{"POST", "/created", http.StatusCreated, ""},
		{"GET", "/not-modified", http.StatusNotModified, ""},
	} {
		req, _ := http.NewRequest(tt.method, e.gw.URL+"/http/files"+tt.path, strings.NewReader("the agent's body"))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := noRedirects.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || resp.Header.Get("Location") != tt.location {
			t.Errorf("%s %s: %d Location %q %s, want %d %q", tt.method, tt.path, resp.StatusCode, resp.Header.Get("Location"), b, tt.status, tt.location)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the internal service got %d requests", n)
	}
}

// UpstreamTimeout bounds the wait for an upstream's answer to begin
// whatever Client the gateway is given (one with no timeouts here), on MCP
// and HTTP routes alike.
func TestUpstreamTimeoutHoldsForAnyClient(t *testing.T) {
	block := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(block); hang.Close() })
	e := newEnv(t)
	e.regateway(func(c *gateway.Config) {
		c.Routes, c.HTTPRoutes = []gateway.Route{{Name: "crm", URL: hang.URL}}, []gateway.HTTPRoute{{Name: "api", URL: hang.URL}}
		c.Client, c.UpstreamTimeout = &http.Client{Transport: &http.Transport{}}, 50*time.Millisecond
	})
	key := e.agent("reporter", "mcp:crm:* http:api:*:/**")
	tok := e.mint("reporter", key, "mcp:crm:* http:api:GET:/**", time.Minute, false).AccessToken
	if resp, body := e.post(tok, "", initialize); resp.StatusCode != http.StatusOK || !strings.Contains(body, "did not start answering within 50ms") {
		t.Errorf("a hanging MCP server: %d %s", resp.StatusCode, body)
	}
	if code, body := rawGet(t, e.gw.URL, "/http/api/x", tok); code != http.StatusGatewayTimeout {
		t.Errorf("a hanging HTTP upstream: %d %s", code, body)
	}
}
