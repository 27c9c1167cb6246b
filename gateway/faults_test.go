package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/gateway"
	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Upstream faults (issue 16, item 7): an upstream that is down, answers
// garbage, cuts its answer short or falls silent gives the client a
// JSON-RPC error with its request's id (MCP routes) or a 502/504 (HTTP
// routes), within the configured bounds, and the call a tool.result
// saying it failed. The bounds here are short (a configuration, not a
// timing assertion): the tests wait for the error, however long it takes.

// faultServer is an MCP upstream on 127.0.0.1 that serves initialize and
// tools/list (tool add), and answers every tools/call with fault, which
// writes what it likes, or nothing, on the connection.
type faultServer struct {
	fault   func(w http.ResponseWriter, r *http.Request, id json.RawMessage)
	entered chan struct{}             // a tools/call reached the server (buffered)
	get     func(http.ResponseWriter) // the GET stream, if any
}

func (f *faultServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		if f.get == nil {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		f.get(w)
		return
	case http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
		return
	}
	body, _ := io.ReadAll(r.Body)
	var m struct {
		ID     json.RawMessage `json:"id"`
		Method string          `json:"method"`
	}
	json.Unmarshal(body, &m)
	w.Header().Set("Content-Type", "application/json")
	switch {
	case len(m.ID) == 0:
		w.WriteHeader(http.StatusAccepted)
	case m.Method == "initialize":
		w.Header().Set("Mcp-Session-Id", "s1")
		io.WriteString(w, rpcResult(m.ID, `{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"faulty","version":"1"}}`))
	case m.Method == "tools/list":
		io.WriteString(w, rpcResult(m.ID, `{"tools":[`+benignAdd+`]}`))
	case m.Method == "tools/call":
		if f.entered != nil {
			f.entered <- struct{}{}
		}
		f.fault(w, r, m.ID)
	default:
		io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(m.ID)+`,"error":{"code":-32601,"message":"no"}}`)
	}
}

// stall holds the connection open, sending nothing more, until the
// gateway gives up on it.
func stall(r *http.Request) { <-r.Context().Done() }

// cut writes raw on the connection, after whatever w sent, and closes it.
func cut(w http.ResponseWriter, raw string) {
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	buf.WriteString(raw)
	buf.Flush()
	conn.Close()
}

func sseHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
}

const progress = `{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}`

// faultEnv is an env whose gateway fronts f as server crm (and as HTTP
// route api), with short bounds.
func faultEnv(t *testing.T, f *faultServer, mod func(*gateway.Config)) (*env, *httptest.Server) {
	t.Helper()
	e := newEnv(t)
	up := httptest.NewServer(f)
	t.Cleanup(up.Close)
	e.regateway(func(c *gateway.Config) {
		c.Routes = []gateway.Route{{Name: "crm", URL: up.URL}}
		c.HTTPRoutes = []gateway.HTTPRoute{{Name: "api", URL: up.URL}}
		c.UpstreamTimeout, c.CallTimeout, c.MaxResponse = 200*time.Millisecond, time.Hour, 64<<10
		if mod != nil {
			mod(c)
		}
	})
	return e, up
}

// rpcAnswer is the one JSON-RPC error a POST's answer holds.
type rpcAnswer struct {
	ID    json.RawMessage `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Result json.RawMessage `json:"result"`
}

// callThrough initializes a session, lists the tools and calls add with
// id 7, raw, and returns the call's answer.
func callThrough(t *testing.T, e *env, tok string) (*http.Response, rpcAnswer, string) {
	t.Helper()
	resp, _ := e.post(tok, "", initialize)
	sid := resp.Header.Get("Mcp-Session-Id")
	e.post(tok, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	resp, body := e.post(tok, sid, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{}}}`)
	var msgs []string // the answers (a stream may carry progress before)
	for _, m := range answerMessages(t, resp, body) {
		if strings.Contains(m, `"id":`) {
			msgs = append(msgs, m)
		}
	}
	if resp.StatusCode != http.StatusOK || len(msgs) != 1 {
		t.Fatalf("the call's answer: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var a rpcAnswer
	if err := json.Unmarshal([]byte(msgs[0]), &a); err != nil || string(a.ID) != "7" || a.Error == nil || a.Result != nil {
		t.Fatalf("the call's answer is not a JSON-RPC error for id 7: %s", msgs[0])
	}
	return resp, a, body
}

// internalText is what no client or event may read of a failure: the
// gateway's causes (Go's error strings, addresses) and the upstream's
// own words.
var internalText = []string{"127.0.0.1", "dial tcp", "EOF", "context canceled", "connection refused", "Internal Server Error</", "upstream secret"}

// checkFailedResult checks the one tool.result on record: an error, with
// a reason holding want and nothing internal; and that no request is
// left in flight.
func checkFailedResult(t *testing.T, e *env, want string, forwarded bool) {
	t.Helper()
	res := e.events(mandate.EventToolResult)
	if len(res) != 1 {
		t.Fatalf("%d tool.result events, want 1", len(res))
	}
	ev := res[0].Event
	if ev.Outcome != mandate.OutcomeError || !strings.Contains(ev.Reason, want) {
		t.Errorf("tool.result %s %q, want error with %q", ev.Outcome, ev.Reason, want)
	}
	if (ev.Details["forwarded"] == false) == forwarded {
		t.Errorf("tool.result forwarded %v, want %v", ev.Details["forwarded"], forwarded)
	}
	for _, s := range internalText {
		if strings.Contains(ev.Reason, s) {
			t.Errorf("tool.result's reason holds %q: %s", s, ev.Reason)
		}
	}
	if n := gateway.InFlight(e.g); n != 0 {
		t.Errorf("%d requests left in flight", n)
	}
}

func TestMCPUpstreamFaults(t *testing.T) {
	cases := []struct {
		name  string
		fault func(w http.ResponseWriter, r *http.Request, id json.RawMessage)
		code  int
		want  string // in the error's message and the tool.result's reason
	}{
		{"not JSON", func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			io.WriteString(w, "upstream secret: this is not JSON")
		}, gateway.CodeBadAnswer, "sent no answer to this request that the gateway could check"},
		{"not JSON-RPC", func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			io.WriteString(w, `{"hello":"world"}`)
		}, gateway.CodeBadAnswer, "sent no answer to this request that the gateway could check"},
		{"wrong id", func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			io.WriteString(w, rpcResult(json.RawMessage("99"), okResult))
		}, gateway.CodeBadAnswer, "sent no answer to this request that the gateway could check"},
		{"a batch for one request", func(w http.ResponseWriter, _ *http.Request, id json.RawMessage) {
			io.WriteString(w, "["+rpcResult(id, okResult)+"]")
		}, gateway.CodeBadAnswer, "answered one request with a batch"},
		{"an HTML error page", func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, "<html><body>Internal Server Error</body></html>")
		}, gateway.CodeBadAnswer, "answered HTTP 500 Internal Server Error"},
		{"HTML with 200", func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html><body>upstream secret</body></html>")
		}, gateway.CodeBadAnswer, `answered with "text/html"`},
		{"401", func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, "upstream secret", http.StatusUnauthorized)
		}, gateway.CodeBadAnswer, "answered HTTP 401 Unauthorized"},
		{"403", func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			http.Error(w, "upstream secret", http.StatusForbidden)
		}, gateway.CodeBadAnswer, "answered HTTP 403 Forbidden"},
		{"429", func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			http.Error(w, "upstream secret", http.StatusTooManyRequests)
		}, gateway.CodeUnavailable, "answered HTTP 429 Too Many Requests: try again later"},
		{"503", func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			http.Error(w, "upstream secret", http.StatusServiceUnavailable)
		}, gateway.CodeUnavailable, "answered HTTP 503 Service Unavailable: try again later"},
		{"a huge answer", func(w http.ResponseWriter, _ *http.Request, id json.RawMessage) {
			io.WriteString(w, rpcResult(id, `{"content":[{"type":"text","text":"`+strings.Repeat("x", 1<<20)+`"}]}`))
		}, gateway.CodeBadAnswer, "over the gateway's limit of 65536 bytes"},
		{"a huge SSE event", func(w http.ResponseWriter, _ *http.Request, id json.RawMessage) {
			sseHeaders(w)
			io.WriteString(w, sse(rpcResult(id, `{"content":[{"type":"text","text":"`+strings.Repeat("x", 1<<20)+`"}]}`)))
		}, gateway.CodeBadAnswer, "over the gateway's limit of 65536 bytes"},
		{"truncated JSON", func(w http.ResponseWriter, _ *http.Request, id json.RawMessage) {
			w.Header().Set("Content-Length", "200")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(id)+`,"res`)
		}, gateway.CodeBadAnswer, "cut its answer short"},
		{"a chunked body cut", func(w http.ResponseWriter, _ *http.Request, id json.RawMessage) {
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(id)+`,"res`)
			w.(http.Flusher).Flush()
			cut(w, "")
		}, gateway.CodeBadAnswer, "cut its answer short"},
		{"an SSE stream cut before the answer", func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			sseHeaders(w)
			io.WriteString(w, sse(progress))
			w.(http.Flusher).Flush()
			cut(w, "")
		}, gateway.CodeBadAnswer, "cut its answer short"},
		{"an SSE stream ended before the answer", func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			sseHeaders(w)
			io.WriteString(w, sse(progress))
		}, gateway.CodeBadAnswer, "ended its stream before its answer"},
		{"no headers", func(_ http.ResponseWriter, r *http.Request, _ json.RawMessage) {
			stall(r)
		}, gateway.CodeBadAnswer, "did not start answering within 200ms"},
		{"JSON headers, then nothing", func(w http.ResponseWriter, r *http.Request, _ json.RawMessage) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			stall(r)
		}, gateway.CodeBadAnswer, "fell silent for 200ms"},
		{"part of a JSON body, then nothing", func(w http.ResponseWriter, r *http.Request, id json.RawMessage) {
			io.WriteString(w, `{"jsonrpc":"2.0","id":`+string(id)+`,`)
			w.(http.Flusher).Flush()
			stall(r)
		}, gateway.CodeBadAnswer, "fell silent for 200ms"},
		{"SSE headers, then nothing", func(w http.ResponseWriter, r *http.Request, _ json.RawMessage) {
			sseHeaders(w)
			stall(r)
		}, gateway.CodeBadAnswer, "fell silent for 200ms"},
		{"progress, then nothing", func(w http.ResponseWriter, r *http.Request, _ json.RawMessage) {
			sseHeaders(w)
			io.WriteString(w, sse(progress))
			w.(http.Flusher).Flush()
			stall(r)
		}, gateway.CodeBadAnswer, "fell silent for 200ms"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := faultEnv(t, &faultServer{fault: tc.fault}, nil)
			key := e.agent("caller", "mcp:crm:*")
			tok := e.mint("caller", key, "mcp:crm:*", time.Minute, false)
			_, a, body := callThrough(t, e, tok.AccessToken)
			if a.Error.Code != tc.code || !strings.Contains(a.Error.Message, tc.want) {
				t.Errorf("the client got %d %q, want %d with %q", a.Error.Code, a.Error.Message, tc.code, tc.want)
			}
			for _, s := range internalText {
				if strings.Contains(body, s) {
					t.Errorf("the client read %q: %s", s, body)
				}
			}
			checkFailedResult(t, e, tc.want, true)
		})
	}
}

// A stream that keeps sending (progress, keep-alive comments) is cut at
// CallTimeout, the bound of the whole answer: the client, which has the
// SSE headers already, gets its error as an event of the stream.
func TestMCPUpstreamNeverFinishes(t *testing.T) {
	f := &faultServer{fault: func(w http.ResponseWriter, r *http.Request, _ json.RawMessage) {
		sseHeaders(w)
		for r.Context().Err() == nil {
			io.WriteString(w, ": still working\n\n")
			w.(http.Flusher).Flush()
		}
	}}
	e, _ := faultEnv(t, f, func(c *gateway.Config) { c.UpstreamTimeout, c.CallTimeout = time.Hour, 300*time.Millisecond })
	key := e.agent("caller", "mcp:crm:*")
	tok := e.mint("caller", key, "mcp:crm:*", time.Minute, false)
	resp, a, _ := callThrough(t, e, tok.AccessToken)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Errorf("the answer is %q, want the SSE stream it began as", resp.Header.Get("Content-Type"))
	}
	if want := "did not finish its answer within 300ms"; a.Error.Code != gateway.CodeBadAnswer || !strings.Contains(a.Error.Message, want) {
		t.Errorf("the client got %d %q", a.Error.Code, a.Error.Message)
	}
	checkFailedResult(t, e, "did not finish its answer within 300ms", true)
}

// closedPort is an address on 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// The official client of a user's agent, through the gateway to an
// upstream that is down, or answers garbage: it gets an error it can
// show, with the gateway's reason, and its session goes on.
func TestOfficialClientUnderUpstreamFaults(t *testing.T) {
	ctx := context.Background()
	t.Run("down at initialize", func(t *testing.T) {
		e := newEnv(t)
		e.regateway(func(c *gateway.Config) { c.Routes = []gateway.Route{{Name: "crm", URL: closedPort(t)}} })
		key := e.agent("sdk", "mcp:crm:*")
		_, err := e.connect(e.mint("sdk", key, "mcp:crm:*", time.Minute, false), nil)
		if err == nil || !strings.Contains(err.Error(), "the MCP server crm cannot be reached: nothing was forwarded") {
			t.Fatalf("the official client got %v", err)
		}
		for _, s := range internalText {
			if strings.Contains(err.Error(), s) {
				t.Errorf("the client read %q: %v", s, err)
			}
		}
	})
	t.Run("down at a call", func(t *testing.T) {
		e := newEnv(t)
		key := e.agent("sdk", "mcp:crm:*")
		cs, err := e.connect(e.mint("sdk", key, "mcp:crm:list_customers", time.Minute, false), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		if _, err := cs.ListTools(ctx, nil); err != nil {
			t.Fatal(err)
		}
		e.upstream.Close() // the port is closed: connection refused
		_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_customers", Arguments: map[string]any{"name": "a"}})
		var we *jsonrpc.Error
		if !errors.As(err, &we) || we.Code != gateway.CodeUnavailable || we.Message != "the MCP server crm cannot be reached: nothing was forwarded; try again later" {
			t.Fatalf("the official client got %v", err)
		}
		checkFailedResult(t, e, "cannot be reached", false)
		// The session is not broken: the client's next request is sent.
		if _, err := cs.ListTools(ctx, nil); err == nil || !strings.Contains(err.Error(), "cannot be reached") {
			t.Errorf("the next request: %v", err)
		}
	})
	for name, fault := range map[string]func(w http.ResponseWriter, r *http.Request, id json.RawMessage){
		"garbage": func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			io.WriteString(w, "upstream secret: this is not JSON")
		},
		"an SSE stream cut": func(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
			sseHeaders(w)
			io.WriteString(w, sse(progress))
			w.(http.Flusher).Flush()
			cut(w, "")
		},
		"a stall": func(w http.ResponseWriter, r *http.Request, _ json.RawMessage) {
			sseHeaders(w)
			stall(r)
		},
	} {
		t.Run(name, func(t *testing.T) {
			e, _ := faultEnv(t, &faultServer{fault: fault}, nil)
			key := e.agent("sdk", "mcp:crm:*")
			cs, err := e.connect(e.mint("sdk", key, "mcp:crm:*", time.Minute, false), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			if _, err := cs.ListTools(ctx, nil); err != nil {
				t.Fatal(err)
			}
			_, err = cs.CallTool(ctx, &mcp.CallToolParams{Name: "add", Arguments: map[string]any{}})
			var we *jsonrpc.Error
			if !errors.As(err, &we) || we.Code != gateway.CodeBadAnswer || !strings.Contains(we.Message, "the MCP server") {
				t.Fatalf("the official client got %v", err)
			}
			t.Logf("the official client shows: %v", err)
			for _, s := range internalText {
				if strings.Contains(err.Error(), s) {
					t.Errorf("the client read %q: %v", s, err)
				}
			}
			if _, err := cs.ListTools(ctx, nil); err != nil {
				t.Errorf("the session after the fault: %v", err)
			}
		})
	}
}

// A stdio server that exits mid-call, or writes garbage to stdout and
// never answers, gives the client a JSON-RPC error, and the call its
// tool.result.
func TestStdioUpstreamFaults(t *testing.T) {
	for _, tc := range []struct{ tool, want string }{
		{"exit", "the stdio server local stopped before answering"},
		{"garbage", "the stdio server local did not start answering within"},
	} {
		t.Run(tc.tool, func(t *testing.T) {
			e := newEnv(t)
			g := e.regateway(func(c *gateway.Config) {
				c.Routes = nil
				c.StdioRoutes = []gateway.StdioRoute{{Name: "local", Command: []string{os.Args[0]}, Env: []string{"GATEWAY_TEST_STDIO_SERVER=hostile"}}}
				c.UpstreamTimeout = 500 * time.Millisecond
			})
			defer g.Close()
			key := e.agent("stdio-user", "mcp:local:*")
			tok := e.mint("stdio-user", key, "mcp:local:*", time.Minute, false)
			cs, err := mcp.NewClient(&mcp.Implementation{Name: "agent", Version: "1"}, nil).Connect(context.Background(),
				&mcp.StreamableClientTransport{Endpoint: e.gw.URL + "/mcp/local", DisableStandaloneSSE: true, MaxRetries: -1,
					HTTPClient: &http.Client{Transport: mandateTransport{token: tok.AccessToken}}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer cs.Close()
			if _, err := cs.ListTools(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			_, err = cs.CallTool(context.Background(), &mcp.CallToolParams{Name: tc.tool, Arguments: map[string]any{}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("the official client got %v", err)
			}
			checkFailedResult(t, e, tc.want, true)
		})
	}
}

// HTTP routes: an upstream that is down is a 502, one that does not
// start its answer (no headers, or headers and no body) a 504; one that
// fails once the client has the headers is cut short, so that the client
// sees it was not whole. Each call has its tool.result.
func TestHTTPUpstreamFaults(t *testing.T) {
	cases := []struct {
		name   string
		fault  func(w http.ResponseWriter, r *http.Request)
		status int    // 0: the answer is cut short
		want   string // in the body and the tool.result's reason
	}{
		{"no headers", func(_ http.ResponseWriter, r *http.Request) { stall(r) },
			http.StatusGatewayTimeout, "the HTTP upstream api did not start answering within 200ms"},
		{"headers, then nothing", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			stall(r)
		}, http.StatusGatewayTimeout, "the HTTP upstream api fell silent for 200ms"},
		{"headers, then cut", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			cut(w, "")
		}, http.StatusBadGateway, "the HTTP upstream api closed the connection before answering"},
		{"part of the body, then nothing", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "the first part")
			w.(http.Flusher).Flush()
			stall(r)
		}, 0, "the HTTP upstream api fell silent for 200ms"},
		{"part of the body, then cut", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "the first part")
			w.(http.Flusher).Flush()
			cut(w, "")
		}, 0, "the HTTP upstream api cut its answer short"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			up := httptest.NewServer(http.HandlerFunc(tc.fault))
			t.Cleanup(up.Close)
			e.regateway(func(c *gateway.Config) {
				c.HTTPRoutes = []gateway.HTTPRoute{{Name: "api", URL: up.URL}}
				c.UpstreamTimeout = 200 * time.Millisecond
			})
			key := e.agent("caller", "http:api:*:/**")
			tok := e.mint("caller", key, "http:api:GET:/**", time.Minute, false).AccessToken
			code, body, err := tryRawGet(e.gw.URL, "/http/api/x", tok)
			switch {
			case tc.status == 0 && err == nil:
				t.Errorf("an answer cut short upstream reached the client whole: %d %q", code, body)
			case tc.status != 0 && (err != nil || code != tc.status || !strings.Contains(body, tc.want)):
				t.Errorf("the client got %d %q %v, want %d with %q", code, body, err, tc.status, tc.want)
			}
			checkFailedResult(t, e, strings.TrimPrefix(tc.want, "the HTTP upstream api "), true)
		})
	}
	t.Run("down", func(t *testing.T) {
		e := newEnv(t)
		e.regateway(func(c *gateway.Config) { c.HTTPRoutes = []gateway.HTTPRoute{{Name: "api", URL: closedPort(t)}} })
		key := e.agent("caller", "http:api:*:/**")
		tok := e.mint("caller", key, "http:api:GET:/**", time.Minute, false).AccessToken
		if code, body := rawGet(t, e.gw.URL, "/http/api/x", tok); code != http.StatusBadGateway || !strings.Contains(body, "cannot be reached") {
			t.Errorf("the client got %d %q", code, body)
		}
		checkFailedResult(t, e, "cannot be reached", false)
	})
	t.Run("an error status is the API's answer", func(t *testing.T) {
		e := newEnv(t)
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}))
		t.Cleanup(up.Close)
		e.regateway(func(c *gateway.Config) { c.HTTPRoutes = []gateway.HTTPRoute{{Name: "api", URL: up.URL}} })
		key := e.agent("caller", "http:api:*:/**")
		tok := e.mint("caller", key, "http:api:GET:/**", time.Minute, false).AccessToken
		if code, body := rawGet(t, e.gw.URL, "/http/api/x", tok); code != http.StatusServiceUnavailable || body != "busy\n" {
			t.Errorf("the client got %d %q", code, body)
		}
		if res := e.events(mandate.EventToolResult); len(res) != 1 || res[0].Event.Outcome != mandate.OutcomeError ||
			fmt.Sprint(res[0].Event.Details["status"]) != "503" {
			t.Errorf("tool.result %+v", res)
		}
	})
}

// A call whose upstream went silent is no request being sent: a
// revocation's Settle does not wait for it, however long the upstream
// takes, and the call, cut at its bound later, leaves nothing in flight.
func TestSettleDoesNotWaitForADeadCall(t *testing.T) {
	release := make(chan struct{})
	f := &faultServer{entered: make(chan struct{}, 1), fault: func(w http.ResponseWriter, r *http.Request, _ json.RawMessage) {
		sseHeaders(w)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}}
	e, up := faultEnv(t, f, nil)
	e.regateway(func(c *gateway.Config) {
		c.Routes = []gateway.Route{{Name: "crm", URL: up.URL}}
		c.Revoked, c.SettleTimeout, c.UpstreamTimeout = e.revokedByStore, time.Hour, time.Hour
	})
	ctx := context.Background()
	key := e.agent("caller", "mcp:crm:*")
	tok := e.mint("caller", key, "mcp:crm:*", time.Minute, false)
	resp, _ := e.post(tok.AccessToken, "", initialize)
	sid := resp.Header.Get("Mcp-Session-Id")
	e.post(tok.AccessToken, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	done := make(chan string, 1)
	go func() {
		_, body := e.post(tok.AccessToken, sid, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{}}}`)
		done <- body
	}()
	<-f.entered // sent, and the upstream holds it
	waits := make(chan int, 1)
	gateway.OnSettle(e.g, func(n int) { waits <- n })
	if err := e.store.Revoke(ctx, &mandate.Revocation{MandateID: tok.Claims.ID, ExpiresAt: tok.Claims.Expiry.Time, RevokedAt: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	if st := e.g.Settle(ctx); st != (mandate.Settled{}) {
		t.Errorf("Settle: %+v, want nothing to wait for", st)
	}
	select {
	case n := <-waits:
		t.Errorf("Settle waited for %d requests", n)
	default:
	}
	close(release) // the upstream ends its stream without an answer
	if body := <-done; !strings.Contains(body, "ended its stream before its answer") {
		t.Errorf("the call's answer: %s", body)
	}
	checkFailedResult(t, e, "ended its stream before its answer", true)
}

// The GET stream of a session answers no request: its silence is not a
// fault. It outlives the silence that cuts a call off (the call's error
// comes first), and then carries the server's next message.
func TestGETStreamOutlivesTheSilenceBound(t *testing.T) {
	speak := make(chan struct{})
	f := &faultServer{
		fault: func(w http.ResponseWriter, r *http.Request, _ json.RawMessage) {
			sseHeaders(w)
			stall(r)
		},
		get: func(w http.ResponseWriter) {
			sseHeaders(w)
			<-speak
			io.WriteString(w, sse(`{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"still here"}}`))
		},
	}
	e, _ := faultEnv(t, f, nil)
	key := e.agent("streamer", "mcp:crm:*")
	tok := e.mint("streamer", key, "mcp:crm:*", time.Minute, false).AccessToken
	resp, _ := e.post(tok, "", initialize)
	sid := resp.Header.Get("Mcp-Session-Id")
	req, _ := http.NewRequest("GET", e.gw.URL+"/mcp/crm", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Mcp-Session-Id", sid)
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	e.post(tok, sid, `{"jsonrpc":"2.0","id":2,"method":"tools/list"}`)
	// A call on the same session is cut off by the silence bound: the
	// stream has been silent at least as long.
	if _, body := e.post(tok, sid, `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{}}}`); !strings.Contains(body, "fell silent for 200ms") {
		t.Fatalf("the call: %s", body)
	}
	close(speak)
	b := make([]byte, 4096)
	got := ""
	for !strings.Contains(got, "still here") {
		n, err := stream.Body.Read(b)
		got += string(b[:n])
		if err != nil && !strings.Contains(got, "still here") {
			t.Fatalf("the GET stream ended (%v) after %q", err, got)
		}
	}
}
