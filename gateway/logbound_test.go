package gateway_test

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/policy"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// fullLog refuses every write as a store on a full disk does.
type fullLog struct{}

func (fullLog) Append(context.Context, ...*mandate.Event) error {
	return mandate.Errorf(mandate.EUNAVAILABLE, "store unavailable: the disk is full")
}

// lines counts the records a logger writes, by message, and keeps the
// suppressed counts they carry.
type lines struct {
	mu         sync.Mutex
	n          map[string]int
	suppressed map[string]uint64
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *lines) WithGroup(string) slog.Handler            { return l }
func (l *lines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n[r.Message]++
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "suppressed" {
			l.suppressed[r.Message] = a.Value.Uint64()
		}
		return true
	})
	return nil
}

// While the store refuses writes, every call and denial is refused or
// unrecorded, and logged: at most a line a second per message, the next
// saying how many were suppressed, not a line per request onto the disk
// that filled (issue 16).
func TestAuditFailuresLogBounded(t *testing.T) {
	e := newEnvWith(t, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	log := &lines{n: map[string]int{}, suppressed: map[string]uint64{}}
	tok := e.mint("flooder", e.agent("flooder", "mcp:crm:*"), "mcp:crm:*", time.Hour, false)
	// The gateway's clock stands still but for the second the test adds.
	var ahead atomic.Int64
	start := time.Now()
	now := func() time.Time { return start.Add(time.Duration(ahead.Load())) }
	e.regateway(func(c *gateway.Config) {
		c.Events, c.Logger, c.Now = fullLog{}, slog.New(log), now
		c.Policy = denyTool{"delete_customer"}
	})
	call := func(tool string) string {
		return `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + tool + `","arguments":{"name":"x"}}}`
	}
	const n = 50
	for range n {
		if _, body := e.post(tok.AccessToken, "", call("list_customers")); !strings.Contains(body, "could not record the call") {
			t.Fatalf("a call while the store refuses writes: %s", body)
		}
		e.post(tok.AccessToken, "", call("delete_customer"))
	}
	const called, denied = "gateway: call not audited, so not forwarded", "gateway: denial not audited"
	log.mu.Lock()
	if log.n[called] != 1 || log.n[denied] != 1 {
		t.Errorf("%d requests of each kind refused by the store within a second: %d and %d lines, want 1 and 1", n, log.n[called], log.n[denied])
	}
	log.mu.Unlock()
	ahead.Store(int64(time.Second))
	e.post(tok.AccessToken, "", call("list_customers"))
	log.mu.Lock()
	defer log.mu.Unlock()
	if log.n[called] != 2 || log.suppressed[called] != n-1 {
		t.Errorf("a second later: %d lines, suppressed=%d, want 2 and %d", log.n[called], log.suppressed[called], n-1)
	}
}

// denyTool allows everything but calls of one tool.
type denyTool struct{ tool string }

func (d denyTool) Decide(_ context.Context, r policy.Request) policy.Decision {
	return policy.Decision{Allow: r.Tool != d.tool}
}
