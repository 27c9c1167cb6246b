package gateway_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/issuer"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// clock is a settable clock for the gateway.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// watchedUpstream is the env's MCP server behind a handler that tells
// what reaches it: the session of every GET (a client's stream of server
// messages) and of every DELETE (a session ended), and, while hold is
// set, keeps initialize requests waiting until it is closed.
type watchedUpstream struct {
	*httptest.Server
	gets, deletes chan string
	arrived       chan struct{} // an initialize reached it
	hold          chan struct{}
}

func (e *env) watchedUpstream(hold bool) *watchedUpstream {
	u := &watchedUpstream{gets: make(chan string, 100), deletes: make(chan string, 100), arrived: make(chan struct{}, 100)}
	if hold {
		u.hold = make(chan struct{})
	}
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return e.srv }, nil)
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch id := r.Header.Get("Mcp-Session-Id"); {
		case r.Method == http.MethodGet:
			u.gets <- id
		case r.Method == http.MethodDelete:
			u.deletes <- id
		case r.Method == http.MethodPost && id == "" && u.hold != nil:
			u.arrived <- struct{}{}
			<-u.hold
		}
		sdk.ServeHTTP(w, r)
	}))
	e.t.Cleanup(u.Close)
	return u
}

// noDelete is a client transport that never sends a DELETE, as the
// official SDKs' close() does not (the Go SDK's does: this one drops it).
type noDelete struct{ next http.RoundTripper }

func (n noDelete) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodDelete {
		return nil, errors.New("this client ends sessions without DELETE")
	}
	return n.next.RoundTrip(r)
}

// sdkSession opens a session through the gateway with the official MCP
// Go SDK client, presenting tok; stream keeps its GET stream of server
// messages open, as the SDK does by default; sendsDelete says whether it
// ends the session with DELETE when closed.
func (e *env) sdkSession(tok *issuer.Token, stream, sendsDelete bool) (*mcp.ClientSession, error) {
	var rt http.RoundTripper = mandateTransport{token: tok.AccessToken}
	if !sendsDelete {
		rt = noDelete{rt}
	}
	cl := mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, nil)
	return cl.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: e.gw.URL + "/mcp/crm",
		DisableStandaloneSSE: !stream, MaxRetries: -1, HTTPClient: &http.Client{Transport: rt}}, nil)
}

// refusalsOf returns the refusals the audit log records of a mandate
// with details check.
func (e *env) refusalsOf(id, check string) []mandate.LoggedEvent {
	e.t.Helper()
	var out []mandate.LoggedEvent
	for _, ev := range e.events(mandate.EventDecision) {
		if ev.Mandate == id && ev.Outcome == mandate.OutcomeDeny && ev.Details["check"] == check {
			out = append(out, ev)
		}
	}
	return out
}

// One agent cannot hold more than its share of sessions, however many it
// asks for at once: the quota is taken before the upstream answers. Its
// refusals (429) are audited, once a minute per mandate.
func TestSessionsPerAgent(t *testing.T) {
	e := newEnv(t)
	up := e.watchedUpstream(true)
	e.regateway(func(c *gateway.Config) { c.Routes = []gateway.Route{{Name: "crm", URL: up.URL}} })
	key := e.agent("greedy", "mcp:crm:*")
	tok := e.mint("greedy", key, "mcp:crm:list_customers", time.Minute, false)
	codes := make(chan int, 40)
	for range 40 {
		go func() {
			resp, _ := e.post(tok.AccessToken, "", initialize)
			codes <- resp.StatusCode
		}()
	}
	// 16 reach the upstream and wait there, holding the agent's quota: the
	// other 24 are refused.
	for range 16 {
		<-up.arrived
	}
	got := map[int]int{}
	for range 24 {
		got[<-codes]++
	}
	close(up.hold)
	for range 16 {
		got[<-codes]++
	}
	if got[200] != 16 || got[429] != 24 {
		t.Errorf("initialize answers %v, want 16 × 200 and 24 × 429", got)
	}
	if n := len(e.refusalsOf(tok.Claims.ID, "session-quota")); n != 1 {
		t.Errorf("%d session-quota refusals of the mandate in the audit log, want 1", n)
	}
	other := e.agent("other", "mcp:crm:*")
	if resp, _ := e.post(e.mint("other", other, "mcp:crm:list_customers", time.Minute, false).AccessToken, "", initialize); resp.StatusCode != 200 {
		t.Errorf("another agent: %d", resp.StatusCode)
	}
}

// Sessions left without DELETE (what the official SDKs' close() does) do
// not use up their agent's quota: a new session takes the place of the
// least recently used idle one, and past the idle timeout (the default)
// every idle one is forgotten and ended upstream. A client coming back to
// a forgotten session is told 404 and initializes again.
func TestAbandonedSessionsExpire(t *testing.T) {
	e := newEnv(t)
	up := e.watchedUpstream(false)
	clk := &clock{t: time.Now()}
	g := e.regateway(func(c *gateway.Config) {
		c.Routes = []gateway.Route{{Name: "crm", URL: up.URL}}
		c.Now = clk.Now
	})
	ctx := context.Background()
	key := e.agent("forgetful", "mcp:crm:*")
	tok := e.mint("forgetful", key, "mcp:crm:list_customers", time.Hour, false)
	clk.t = time.Now() // not before the mandate was issued
	var ids []string
	for range 16 {
		cs, err := e.sdkSession(tok, false, false)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, cs.ID())
		cs.Close() // no DELETE reaches the gateway
		clk.Advance(time.Second)
	}
	// The 17th takes the place of the first.
	cs, err := e.sdkSession(tok, false, true)
	if err != nil {
		t.Fatalf("a new session with 16 abandoned: %v", err)
	}
	if id := <-up.deletes; id != ids[0] {
		t.Errorf("the gateway ended %q upstream, want the least recently used %q", id, ids[0])
	}
	if resp, _ := e.post(tok.AccessToken, ids[0], `{"jsonrpc":"2.0","id":2,"method":"ping"}`); resp.StatusCode != 404 {
		t.Errorf("a request in the forgotten session: %d, want 404", resp.StatusCode)
	}
	// Past the idle timeout every idle session is forgotten, the 17th too:
	// its client is told so (404, ErrSessionMissing) and initializes again.
	clk.Advance(gateway.DefaultSessionIdle + time.Second)
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_customers", Arguments: map[string]any{}}); !errors.Is(err, mcp.ErrSessionMissing) {
		t.Errorf("a call in a session idle past the timeout: %v, want ErrSessionMissing", err)
	}
	cs.Close()
	ended := map[string]bool{}
	for range 16 {
		ended[<-up.deletes] = true
	}
	for _, id := range ids[1:] {
		if !ended[id] {
			t.Errorf("session %s was not ended upstream", id)
		}
	}
	again, err := e.sdkSession(tok, false, true)
	if err != nil {
		t.Fatalf("initializing again: %v", err)
	}
	if _, err := again.CallTool(ctx, &mcp.CallToolParams{Name: "list_customers", Arguments: map[string]any{}}); err != nil {
		t.Errorf("a call in the new session: %v", err)
	}
	again.Close()
	g.Close()
}

// A session with a request in flight (here the client's GET stream of
// server messages, which the official SDK keeps open) is live: it is not
// forgotten however long it idles, nor to make room. An agent whose
// sessions are all live is refused a new one (429), and that is audited.
func TestLiveSessionsStay(t *testing.T) {
	e := newEnv(t)
	up := e.watchedUpstream(false)
	clk := &clock{t: time.Now()}
	e.regateway(func(c *gateway.Config) {
		c.Routes = []gateway.Route{{Name: "crm", URL: up.URL}}
		c.Now = clk.Now
	})
	ctx := context.Background()
	key := e.agent("busy", "mcp:crm:*")
	tok := e.mint("busy", key, "mcp:crm:list_customers", time.Hour, false)
	clk.t = time.Now()
	var live []*mcp.ClientSession
	for range 16 {
		cs, err := e.sdkSession(tok, true, true)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		if id := <-up.gets; id != cs.ID() {
			t.Fatalf("the upstream saw the stream of %q, want %q", id, cs.ID())
		}
		live = append(live, cs)
	}
	clk.Advance(3 * gateway.DefaultSessionIdle)
	if _, err := live[0].CallTool(ctx, &mcp.CallToolParams{Name: "list_customers", Arguments: map[string]any{}}); err != nil {
		t.Errorf("a call in a connected session idle past the timeout: %v", err)
	}
	resp, body := e.post(tok.AccessToken, "", initialize)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a 17th session with 16 live: %d %s", resp.StatusCode, body)
	}
	if got := e.refusalsOf(tok.Claims.ID, "session-quota"); len(got) != 1 || got[0].Action != "initialize" ||
		got[0].Task != tok.Claims.Task || fmt.Sprint(got[0].Details["http_status"]) != "429" {
		t.Errorf("the 429 in the audit log: %+v", got[0].Event)
	}
}
