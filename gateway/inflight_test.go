package gateway_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/policy"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// blockingTransport holds each request that hold says to, until release
// is closed or the request's context ends (then it fails, unsent).
type blockingTransport struct {
	hold    func(r *http.Request) bool
	held    chan struct{} // a request is held
	release chan struct{}
}

func (b *blockingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if b.hold(r) {
		b.held <- struct{}{}
		select {
		case <-b.release:
		case <-r.Context().Done():
			return nil, context.Cause(r.Context())
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// revokedByStore is the gateway's revocation check on the env's store:
// the mandate itself.
func (e *env) revokedByStore(ctx context.Context, c *mandate.Claims) error {
	if ok, err := e.store.IsRevoked(ctx, c.ID); err != nil || ok {
		return errRevoked
	}
	return nil
}

// A revoker's Settle waits, with no bound reached, until a request of the
// revoked mandate that passed its last check has been sent; then the
// request reaches the upstream, before Settle returns.
func TestSettleWaitsForRequestsBeingSent(t *testing.T) {
	e := newEnvWith(t, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	ctx := context.Background()
	key := e.agent("worker", "mcp:crm:*")
	tok := e.mint("worker", key, "mcp:crm:list_customers", time.Minute, false)
	tr := &blockingTransport{held: make(chan struct{}, 1), release: make(chan struct{}),
		hold: func(r *http.Request) bool { return r.Header.Get("X-Test") == "" && isCall(r) }}
	g := e.regateway(func(c *gateway.Config) {
		c.Revoked, c.Client, c.SettleTimeout = e.revokedByStore, &http.Client{Transport: tr}, time.Hour
	})
	settling := make(chan int, 1)
	gateway.OnSettle(g, func(n int) { settling <- n })
	call := make(chan string, 1)
	go func() {
		_, body := e.post(tok.AccessToken, "", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_customers","arguments":{"name":"x"}}}`)
		call <- body
	}()
	<-tr.held // on record, checked, being sent
	if err := e.store.Revoke(ctx, &mandate.Revocation{MandateID: tok.Claims.ID, ExpiresAt: tok.Claims.Expiry.Time, RevokedAt: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	settled := make(chan mandate.Settled, 1)
	go func() { settled <- g.Settle(ctx) }()
	if n := <-settling; n != 1 {
		t.Fatalf("Settle waits for %d requests, want 1", n)
	}
	select {
	case st := <-settled:
		t.Fatalf("Settle returned %+v while the request was still being sent", st)
	default:
	}
	close(tr.release)
	if st := <-settled; st != (mandate.Settled{Sent: 1}) {
		t.Errorf("Settle: %+v, want one sent", st)
	}
	if body := <-call; !strings.Contains(body, "ada, grace") {
		t.Errorf("the call that passed its last check before the revocation: %s", body)
	}
	// Now the mandate is refused before anything is sent.
	if resp, _ := e.post(tok.AccessToken, "", `{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"list_customers","arguments":{}}}`); resp.StatusCode != 401 {
		t.Errorf("after the revocation: %d", resp.StatusCode)
	}
}

// isCall reports whether a request to an upstream carries a tools/call
// (the gateway's own tools/list is let through).
func isCall(r *http.Request) bool {
	if r.Body == nil || r.GetBody == nil {
		return false
	}
	b, _ := r.GetBody()
	defer b.Close()
	body, _ := io.ReadAll(b)
	return strings.Contains(string(body), `"tools/call"`)
}

// A request still being sent when the bound passes is cut off: the
// upstream never gets it, its caller is told why, its tool.result says it
// was not forwarded whole, and Settle counts it as stopped.
func TestSettleCutsOffAHangingSend(t *testing.T) {
	e := newEnvWith(t, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	ctx := context.Background()
	key := e.agent("worker", "mcp:crm:*")
	tok := e.mint("worker", key, "mcp:crm:list_customers", time.Minute, false)
	tr := &blockingTransport{held: make(chan struct{}, 1), release: make(chan struct{}), hold: isCall}
	g := e.regateway(func(c *gateway.Config) {
		c.Revoked, c.Client, c.SettleTimeout = e.revokedByStore, &http.Client{Transport: tr}, 10*time.Millisecond
	})
	call := make(chan string, 1)
	go func() {
		_, body := e.post(tok.AccessToken, "", `{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"list_customers","arguments":{}}}`)
		call <- body
	}()
	<-tr.held
	if err := e.store.Revoke(ctx, &mandate.Revocation{MandateID: tok.Claims.ID, ExpiresAt: tok.Claims.Expiry.Time, RevokedAt: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	if st := g.Settle(ctx); st != (mandate.Settled{Stopped: 1}) {
		t.Errorf("Settle: %+v, want one stopped", st)
	}
	if body := <-call; !strings.Contains(body, "cut off") || strings.Contains(body, "ada") {
		t.Errorf("the cut-off call's answer: %s", body)
	}
	res := e.events(mandate.EventToolResult)
	if len(res) != 1 || res[0].Outcome != mandate.OutcomeError || !strings.Contains(res[0].Reason, "cut off") {
		t.Errorf("tool.result events: %+v", res)
	}
	// Nothing else was waited for: a mandate still valid is not.
	if st := g.Settle(ctx); st != (mandate.Settled{}) {
		t.Errorf("a second Settle: %+v", st)
	}
}

// The moment of effect on an HTTP route: a mandate revoked while its
// request was being recorded (its tool.call follows the revocation in the
// log) is not forwarded, and its tool.result says so.
func TestHTTPRouteChecksAgainOnceRecorded(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var hits atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	}))
	defer api.Close()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "http.cedar"), []byte(`permit (principal, action == Action::"HttpRequest", resource in Server::"crm");`), 0o600)
	pol, err := policy.Open(policy.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	key := e.agent("api-user", "http:crm:*:/**")
	tok := e.mint("api-user", key, "http:crm:GET:/**", time.Minute, false)
	revokeFirst := &revokingLog{EventLog: e.store, revoke: func() error {
		return e.store.Revoke(ctx, &mandate.Revocation{MandateID: tok.Claims.ID, ExpiresAt: tok.Claims.Expiry.Time, RevokedAt: time.Now()},
			&mandate.Event{V: mandate.EventVersion, Time: time.Now().UnixNano(), Type: mandate.EventMandateRevoked, Mandate: tok.Claims.ID, Task: tok.Claims.Task})
	}}
	g, err := gateway.New(gateway.Config{HTTPRoutes: []gateway.HTTPRoute{{Name: "crm", URL: api.URL}}, Issuer: iss,
		Keys: keySource{e.keys}, PublicURL: e.gw.URL, Policy: pol, Events: revokeFirst, Tools: e.store, Revoked: e.revokedByStore,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e.gw.Config.Handler, e.g = g, g
	code, b := rawGet(t, e.gw.URL, "/http/crm/contacts/1", tok.AccessToken)
	if code != 403 || !strings.Contains(b, "not forwarded") || hits.Load() != 0 {
		t.Errorf("a request revoked while recorded: %d %s, upstream hit %d times", code, b, hits.Load())
	}
	g.Drain()
	evs, err := e.store.Events(ctx, mandate.EventFilter{Task: tok.Claims.Task, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ev := range evs {
		types = append(types, ev.Type+"/"+ev.Outcome)
	}
	if got := strings.Join(types, " "); got != "mandate.issued/ok mandate.revoked/ tool.call/ok tool.result/deny" {
		t.Errorf("the task's events: %s", got)
	}
}

// revokingLog runs revoke once, before the first tool.call is appended:
// the revocation's event comes first in the log.
type revokingLog struct {
	mandate.EventLog
	revoke func() error
	done   atomic.Bool
}

func (l *revokingLog) Append(ctx context.Context, evs ...*mandate.Event) error {
	for _, e := range evs {
		if e.Type == mandate.EventToolCall && !l.done.Swap(true) {
			if err := l.revoke(); err != nil {
				return errors.Join(errors.New("test: revoke"), err)
			}
		}
	}
	return l.EventLog.Append(ctx, evs...)
}
