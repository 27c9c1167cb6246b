package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/verify"
)

// A stdio bridge writes a request to its process only if the gateway's
// flight for it is still on, and the flight is sent once written: one cut
// off by Settle, or one of no flight, is not written.
func TestStdioBridgeAdmitsOnlyLiveFlights(t *testing.T) {
	var fs flights
	newFlight := func() *flight {
		_, cancel := context.WithCancelCause(context.Background())
		f := &flight{cancel: cancel, done: make(chan struct{})}
		fs.add(f)
		return f
	}
	if _, ok := fs.admit(""); ok {
		t.Error("a request of no flight was admitted")
	}
	if _, ok := fs.admit("99"); ok {
		t.Error("a request of an unknown flight was admitted")
	}
	cut := newFlight()
	fs.mu.Lock()
	cut.cut = true
	fs.mu.Unlock()
	if _, ok := fs.admit(strconv.FormatUint(cut.id, 10)); ok {
		t.Error("a request cut off was admitted")
	}
	live := newFlight()
	sent, ok := fs.admit(strconv.FormatUint(live.id, 10))
	if !ok {
		t.Fatal("a live flight was not admitted")
	}
	sent()
	select {
	case <-live.done:
	default:
		t.Error("a flight written to its process is still in flight")
	}
	if !live.wrote.Load() {
		t.Error("a flight written to its process does not count as sent")
	}
}

// A session's process started for a request the gateway's flight no
// longer admits (cut off by Settle) is ended with it: it would otherwise
// hold one of the route's few processes, with no client, until it idled
// out.
func TestStdioBridgeEndsTheProcessOfARequestNotAdmitted(t *testing.T) {
	b, err := startStdio(StdioRoute{Name: "cat", Command: []string{"cat"}}, 1<<20, DefaultCallTimeout, slog.New(slog.DiscardHandler),
		func(string) (func(), bool) { return nil, false }, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.close()
	req := httptest.NewRequest("POST", "/", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
	req.Header.Set("Authorization", "Bearer "+b.secret)
	rec := httptest.NewRecorder()
	b.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden || rec.Header().Get(sessionHeader) != "" {
		t.Fatalf("%d %v", rec.Code, rec.Header())
	}
	b.mu.Lock()
	n := len(b.sessions)
	b.mu.Unlock()
	if n != 0 {
		t.Errorf("%d processes live for a request that was not admitted", n)
	}
	// Ended by the bridge, the process did not fail: the next starts at
	// once, with no back-off.
	if _, err := b.spawn(); err != nil {
		t.Errorf("the next process: %v", err)
	}
}

// A stdio bridge waits for an answer longer than the gateway's bounds, so
// that a slow call is cut by the gateway, with its message (the upstream
// was silent too long, or took too long), not by the bridge with an HTTP
// 504: its own 60 s once came before a silence bound set above it.
func TestStdioBridgeWaitsPastTheGatewaysBounds(t *testing.T) {
	for _, b := range []struct{ silence, whole time.Duration }{{0, 0}, {2 * time.Minute, 5 * time.Minute}, {time.Hour, time.Hour}} {
		g, err := New(Config{Issuer: "https://mandate.test", Keys: noKeys{}, PublicURL: "http://gw.test", Policy: noPolicy{}, Events: noEvents{}, Tools: noTools{},
			StdioRoutes: []StdioRoute{{Name: "cat", Command: []string{"cat"}}}, UpstreamTimeout: b.silence, CallTimeout: b.whole, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if wait := g.bridges[0].callTimeout; wait <= g.cfg.UpstreamTimeout || wait <= g.cfg.CallTimeout {
			t.Errorf("bounds %v/%v: the bridge waits %v for an answer, not past the gateway's %v and %v", b.silence, b.whole, wait, g.cfg.UpstreamTimeout, g.cfg.CallTimeout)
		}
		g.Close()
	}
}

// Stand-ins that New takes and these tests never reach.
type (
	noKeys   struct{ verify.KeySource }
	noPolicy struct{ Decider }
	noEvents struct{ mandate.EventLog }
	noTools  struct{ mandate.ToolPinStore }
)
