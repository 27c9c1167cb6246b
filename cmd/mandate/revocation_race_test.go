package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/client"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// hookedLog is an event log that calls before ahead of each event's
// append and after once it is durable: a test holds writers there.
type hookedLog struct {
	mandate.EventLog
	before, after func(*mandate.Event)
}

func (h hookedLog) Append(ctx context.Context, evs ...*mandate.Event) error {
	for _, e := range evs {
		h.before(e)
	}
	err := h.EventLog.Append(ctx, evs...)
	if err == nil {
		for _, e := range evs {
			h.after(e)
		}
	}
	return err
}

// hookedRevocations calls after once a revocation is durable (and so in
// force), before the revoker goes on.
type hookedRevocations struct {
	mandate.RevocationStore
	after func()
}

func (h hookedRevocations) Revoke(ctx context.Context, r *mandate.Revocation, ev *mandate.Event) error {
	err := h.RevocationStore.Revoke(ctx, r, ev)
	if err == nil {
		h.after()
	}
	return err
}

// hookedTransport is the gateway's way to its upstreams: it calls hold
// with the JSON-RPC id of each request before sending it (an error
// stops it), and sent once the request is written whole
// (httptrace.WroteRequest, which runs before the gateway's own hook).
type hookedTransport struct {
	base       http.RoundTripper
	hold, sent func(r *http.Request, id string) error
}

var rpcIDRE = regexp.MustCompile(`"id":"([A-Z][0-9]+)"`)

func (h hookedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body.Close()
	}
	id := ""
	if m := rpcIDRE.FindSubmatch(body); m != nil {
		id = string(m[1])
	}
	if err := h.hold(r, id); err != nil {
		return nil, err
	}
	trace := &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil {
			h.sent(r, id)
		}
	}}
	out := r.Clone(httptrace.WithClientTrace(r.Context(), trace))
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return h.base.RoundTrip(out)
}

// Revoking a mandate while calls of its subtree are in flight (issue 15,
// item 10): 70 calls of a task's root and of its sub-agent are held at
// chosen points around the revocation, and then
//
//  1. no call whose tool.call event follows the mandate.revoked event in
//     the log is forwarded (group C: recorded after the revocation was
//     durable, having passed every check before it);
//  2. nothing of the subtree reaches the upstream after the revocation
//     answered (group A: recorded before the revocation, held between
//     its record and its forwarding; group B: held while being sent,
//     until the revocation answers; group B2: held while being sent
//     until the revocation is in force, then let go: each is sent before
//     the answer, or cut off).
//
// The order of events is the test's own sequence, not time: the
// upstream's transport notes when each request was written whole, the
// test notes when the revocation answered.
func TestRevocationRace(t *testing.T) {
	ctx := context.Background()
	const group = 20
	var (
		mu       sync.Mutex
		seq      int
		sentAt   = map[string]int{} // caller → seq at which its request was written whole
		received = map[string]bool{}
	)
	next := func() int { seq++; return seq }
	srv := mcp.NewServer(&mcp.Implementation{Name: "crm", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "work", Description: "Does some work."},
		func(_ context.Context, _ *mcp.CallToolRequest, in struct {
			Who string `json:"who"`
		}) (*mcp.CallToolResult, any, error) {
			mu.Lock()
			received[in.Who] = true
			mu.Unlock()
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "done"}}}, nil, nil
		})
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv },
		&mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true}))
	t.Cleanup(up.Close)

	var ready sync.WaitGroup // every held call has reached its hold
	ready.Add(4 * group)
	releaseA := make(chan struct{})
	marked := make(chan struct{}) // the revocation is durable and in force
	var markOnce sync.Once
	answered := make(chan struct{})
	group2 := func(id string) string { return strings.TrimRight(id, "0123456789") }
	m, agent := serveWith(t, listServer(), false, nil, func(m *Main) {
		m.MCPUpstreams = []gateway.Route{{Name: "crm", URL: up.URL}}
		m.testGateway = func(c *gateway.Config) {
			c.SettleTimeout = 100 * time.Millisecond // B is cut off, whatever the machine's speed
			c.Events = hookedLog{EventLog: c.Events,
				before: func(e *mandate.Event) {
					if id := callID(e); group2(id) == "C" {
						ready.Done()
						<-marked // C's record follows the revocation's
					}
				},
				after: func(e *mandate.Event) {
					if id := callID(e); group2(id) == "A" {
						ready.Done()
						<-releaseA // A is on record, not yet forwarded
					}
				}}
			c.Client = &http.Client{Transport: hookedTransport{base: http.DefaultTransport.(*http.Transport).Clone(),
				hold: func(r *http.Request, id string) error {
					switch group2(id) {
					case "B":
						ready.Done()
						select { // being sent until the revocation answers
						case <-answered:
						case <-r.Context().Done():
							return r.Context().Err()
						}
					case "D":
						ready.Done()
						select { // being sent until the revocation is in force
						case <-marked:
						case <-r.Context().Done():
							return r.Context().Err()
						}
					}
					return nil
				},
				sent: func(_ *http.Request, id string) error {
					mu.Lock()
					sentAt[id] = next()
					mu.Unlock()
					return nil
				}}}
		}
		m.testAPI = func(c *httpapi.Config) {
			c.Revocations = hookedRevocations{RevocationStore: c.Revocations, after: func() { markOnce.Do(func() { close(marked) }) }}
		}
	})
	root, err := agent.Root(ctx, client.Request{Scope: "mcp:crm:work", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	child, err := agent.Delegate(ctx, root, client.NewEphemeral(), client.Request{}, client.DelegateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	call := func(md *client.Mandate, id string) string {
		body := `{"jsonrpc":"2.0","id":"` + id + `","method":"tools/call","params":{"name":"work","arguments":{"who":"` + id + `"}}}`
		req, _ := http.NewRequest("POST", m.URL+"/mcp/crm", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "Bearer "+md.Token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	// The tool is pinned, and the path works.
	if out := call(root, "W0"); !strings.Contains(out, "done") {
		t.Fatalf("the first call: %s", out)
	}
	// B2 is group D, so that its ids do not start with B.
	var callers sync.WaitGroup
	for _, g := range []string{"A", "B", "C", "D"} {
		for i := range group {
			md := root
			if i%2 == 1 {
				md = child
			}
			callers.Add(1)
			go func() {
				defer callers.Done()
				call(md, g+strconv.Itoa(i))
			}()
		}
	}
	ready.Wait()

	answerSeq := 0
	var revoked *httpapi.RevocationResponse
	go func() {
		admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
		out, err := admin.Revoke(ctx, httpapi.RevocationRequest{Mandate: root.Claims.ID})
		if err != nil {
			t.Errorf("revocation: %v", err)
		}
		mu.Lock()
		answerSeq, revoked = next(), out
		mu.Unlock()
		close(answered)
	}()
	<-answered
	close(releaseA)
	callers.Wait()
	m.Gateway.Drain()
	// After the answer: refused, and nothing more reaches the upstream.
	if out := call(child, "E0"); strings.Contains(out, "done") {
		t.Errorf("a call after the revocation: %s", out)
	}

	evs, err := m.Store.Events(ctx, mandate.EventFilter{Task: root.Claims.Task, Limit: mandate.MaxEventsPerQuery})
	if err != nil {
		t.Fatal(err)
	}
	r := int64(-1)
	for _, e := range evs {
		if e.Type == mandate.EventMandateRevoked && e.Mandate == root.Claims.ID {
			r = e.Index
		}
	}
	if r < 0 {
		t.Fatal("no mandate.revoked event")
	}
	mu.Lock()
	defer mu.Unlock()
	after := 0
	for _, e := range evs {
		id := callID(e.Event)
		if id == "" {
			continue
		}
		if group2(id) == "C" && e.Index < r {
			t.Fatalf("setup: C's tool.call %d stands before the revocation %d", e.Index, r)
		}
		if e.Index > r {
			after++
			if received[id] {
				t.Errorf("property 1: call %s, recorded at %d after the revocation at %d, reached the upstream", id, e.Index, r)
			}
		}
	}
	if after < group {
		t.Errorf("setup: %d tool.call events after the revocation, want at least %d", after, group)
	}
	for id := range received {
		if at, ok := sentAt[id]; !ok || at > answerSeq {
			t.Errorf("property 2: call %s reached the upstream, sent (at %d) after the revocation answered (at %d)", id, at, answerSeq)
		}
	}
	// B was being sent until the answer, which waited for it: so it was
	// cut off at the bound, and the answer says so.
	if revoked == nil || revoked.InFlight == nil || revoked.InFlight.Stopped < group {
		t.Errorf("the answer does not count B's %d requests as cut off: %+v", group, revoked)
	} else {
		t.Logf("revocation answered: in flight %+v; the upstream received %d calls", *revoked.InFlight, len(received))
	}
}

// callID is the JSON-RPC id of a tool.call event's request, unquoted.
func callID(e *mandate.Event) string {
	if e.Type != mandate.EventToolCall {
		return ""
	}
	id, _ := e.Details["rpc_id"].(string)
	return strings.Trim(id, `"`)
}
