package gateway_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/gateway"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// deadlines stands between the server and the gateway, and notes every
// write and flush of an answer made under a write deadline further than a
// minute from its start, or under none once the gateway set one (the
// first three of each answer).
type deadlines struct {
	http.ResponseWriter
	mu       sync.Mutex
	set      bool
	deadline time.Time
	loose    []string
}

func (d *deadlines) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	d.set, d.deadline = true, t
	d.mu.Unlock()
	return http.NewResponseController(d.ResponseWriter).SetWriteDeadline(t)
}

func (d *deadlines) check(what string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.set && len(d.loose) < 3 && (d.deadline.IsZero() || d.deadline.After(time.Now().Add(time.Minute))) {
		left := "none"
		if !d.deadline.IsZero() {
			left = time.Until(d.deadline).Round(time.Second).String()
		}
		d.loose = append(d.loose, what+" with "+left+" left")
	}
}

func (d *deadlines) Write(p []byte) (int, error) {
	d.check("a write")
	return d.ResponseWriter.Write(p)
}

func (d *deadlines) Flush() {
	d.check("a flush")
	http.NewResponseController(d.ResponseWriter).Flush()
}

func (d *deadlines) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// watch serves g through a deadlines per request, and returns what they
// noted.
func watch(srv *httptest.Server, g http.Handler) func() []string {
	var mu sync.Mutex
	var all []*deadlines
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := &deadlines{ResponseWriter: w}
		mu.Lock()
		all = append(all, d)
		mu.Unlock()
		g.ServeHTTP(d, r)
	})
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, d := range all {
			d.mu.Lock()
			out = append(out, d.loose...)
			d.mu.Unlock()
		}
		return out
	}
}

// A client that stops reading an answer holds its connection for one
// write's bound (answerWriteMargin, 30 s), not for the gateway's bounds
// of the upstream (an approval hold, CallTimeout: near 11 minutes by
// default), which the write deadline of the whole answer allows for a
// slow tool. Every write and flush of an answer, a JSON-RPC one, an SSE
// stream's, an HTTP route's body, is made under a deadline at most a
// minute away; before, an SSE stream's had none and the others the whole
// answer's.
func TestSlowReaderBoundedPerWrite(t *testing.T) {
	e := newEnv(t)
	noted := watch(e.gw, e.g)
	key := e.agent("reader", "mcp:crm:*")
	s, err := e.connect(e.mint("reader", key, "mcp:crm:list_customers", time.Minute, false), key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CallTool(context.Background(), &mcp.CallToolParams{Name: "list_customers", Arguments: map[string]any{"name": "x"}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if loose := noted(); len(loose) > 0 {
		t.Errorf("MCP answers: %s", strings.Join(loose, "; "))
	}

	big := strings.Repeat("x", 1<<20)
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, big) }))
	defer api.Close()
	g, err := gateway.New(gateway.Config{HTTPRoutes: []gateway.HTTPRoute{{Name: "files", URL: api.URL}}, Issuer: iss,
		Keys: keySource{e.keys}, PublicURL: e.gw.URL, Policy: allowAll{}, Events: e.store, Tools: e.store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	noted = watch(e.gw, g)
	hkey := e.agent("downloader", "http:files:*:/**")
	tok := e.mint("downloader", hkey, "http:files:GET:/**", time.Minute, true)
	u := e.gw.URL + "/http/files/big"
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("Authorization", "DPoP "+tok.AccessToken)
	req.Header.Set("DPoP", dpop.NewProofMillis(hkey, "GET", u, tok.AccessToken, time.Now()))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(b) != len(big) {
		t.Fatalf("HTTP route: %d, %d bytes", resp.StatusCode, len(b))
	}
	if loose := noted(); len(loose) > 0 {
		t.Errorf("an HTTP route's answer: %s", strings.Join(loose, "; "))
	}
}
