package gateway_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/sqlite"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// syncBuffer is a log destination that tests read while the gateway
// writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// brokenStore is a real SQLite store whose agents table was taken away
// under it: what it answers for an agent it has not cached is SQLite's
// own failure ("no such table: agents").
func brokenStore(t *testing.T) *sqlite.Store {
	t.Helper()
	path := filepath.Join(t.TempDir(), "broken.db")
	st, err := sqlite.Open(context.Background(), sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("ALTER TABLE agents RENAME TO agents_moved_by_test"); err != nil {
		t.Fatal(err)
	}
	return st
}

// When the store fails, a caller of the gateway is told that it cannot
// be served and nothing of why: not in a JSON-RPC error, nor a
// WWW-Authenticate challenge, nor a body, nor the audit log (which the
// public may read); the gateway's log has the cause.
func TestGatewayCausesStayInTheLog(t *testing.T) {
	e := newEnv(t)
	broken := brokenStore(t)
	var logs syncBuffer
	api := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer api.Close()
	key := e.agent("unlucky", "mcp:crm:* http:api:GET:/**")
	lookup := e.mint("unlucky", key, "mcp:crm:list_customers http:api:GET:/**", time.Minute, false)
	revocation := e.mint("unlucky", key, "mcp:crm:list_customers", time.Minute, false)
	e.regateway(func(c *gateway.Config) {
		c.HTTPRoutes = []gateway.HTTPRoute{{Name: "api", URL: api.URL}}
		c.Agents = broken
		c.Revoked = func(ctx context.Context, c *mandate.Claims) error {
			if c.ID != revocation.Claims.ID {
				return nil
			}
			_, err := broken.Agents(ctx) // the store's failure, as a revocation check meets it
			return err
		}
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	const cause = "no such table"
	var answers strings.Builder
	record := func(resp *http.Response, body string) {
		resp.Header.Write(&answers)
		answers.WriteString(body + "\n")
	}
	// The agent lookup of a call fails: a JSON-RPC error.
	resp, body := e.post(lookup.AccessToken, "", initialize)
	record(resp, body)
	if !strings.Contains(body, `"code":-32002`) {
		t.Errorf("the agent lookup failed, and the answer is %d %s", resp.StatusCode, body)
	}
	// The same on an HTTP route: a 403 and its challenge.
	req, _ := http.NewRequest("GET", e.gw.URL+"/http/api/x", nil)
	req.Header.Set("Authorization", "Bearer "+lookup.AccessToken)
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r2.Body)
	r2.Body.Close()
	record(r2, string(b))
	// The revocation check fails: a 401 and its challenge.
	resp, body = e.post(revocation.AccessToken, "", initialize)
	record(resp, body)
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "unknown") {
		t.Errorf("the revocation check failed, and the answer is %d %v", resp.StatusCode, resp.Header)
	}
	if strings.Contains(answers.String(), cause) || strings.Contains(answers.String(), "SQL") {
		t.Errorf("a cause reached a caller:\n%s", answers.String())
	}
	unknown := 0
	for _, ev := range e.events(mandate.EventDecision) {
		b, _ := json.Marshal(ev.Event)
		if bytes.Contains(b, []byte(cause)) {
			t.Errorf("a cause is in the audit log: %s", b)
		}
		if ev.Mandate == revocation.Claims.ID && ev.Details["refused"] == "revocation-unknown" {
			unknown++
		}
	}
	if unknown != 1 {
		t.Errorf("%d refusals of the mandate whose revocation status was unknown in the audit log, want 1", unknown)
	}
	if strings.Count(logs.String(), cause) < 2 {
		t.Errorf("the causes are not in the gateway's log:\n%s", logs.String())
	}
}

// A stdio server that cannot be started is a JSON-RPC error (-32002,
// try again later) that names the server, not the command's path nor the
// exec error; the log has them.
func TestStdioStartFailureStaysInTheLog(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(t.TempDir(), "private-tools-7f3a")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := filepath.Join(dir, "server")
	if err := os.WriteFile(cmd, []byte("#!/bin/sh\nexit 0\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	g, err := gateway.New(gateway.Config{
		StdioRoutes: []gateway.StdioRoute{{Name: "local", Command: []string{cmd}}},
		Issuer:      iss, Keys: keySource{e.keys}, PublicURL: e.gw.URL, Policy: allowAll{}, Events: e.store, Tools: e.store,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	e.gw.Config.Handler, e.g = g, g
	os.Remove(cmd) // gone after the gateway started: the next start fails
	key := e.agent("local-user", "mcp:local:*")
	tok := e.mint("local-user", key, "mcp:local:pid", time.Minute, false)
	req, _ := http.NewRequest("POST", e.gw.URL+"/mcp/local", strings.NewReader(initialize))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"code":-32002`) || strings.Contains(string(body), "private-tools") || !strings.Contains(string(body), "local") {
		t.Errorf("%d %s", resp.StatusCode, body)
	}
	if !strings.Contains(logs.String(), "private-tools") {
		t.Errorf("the log lacks the cause:\n%s", logs.String())
	}
}

// A holder's own refused requests, however many, do not use up what the
// audit log takes of the refusals of genuine mandates presented without
// their key: an agent that floods the gateway with requests it knows are
// refused (new tasks past its bound) cannot so hide its use of a stolen
// DPoP-bound mandate, which the monitor reads as theft. What a flood hid
// is counted in the next refusal recorded.
func TestOwnRefusalsHideNoStolenMandate(t *testing.T) {
	e := newEnvWith(t, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	clk := &clock{t: time.Now().Add(10 * time.Second)} // it stands: no refill
	e.regateway(func(c *gateway.Config) {
		c.MaxTasksPerAgent = 1
		c.Now = clk.Now
	})
	const ping = `{"jsonrpc":"2.0","id":1,"method":"ping"}`
	key := e.agent("flooder", "mcp:crm:*")
	codes := map[int]int{}
	for range 150 {
		resp, _ := e.post(e.mint("flooder", key, "mcp:crm:*", time.Minute, false).AccessToken, "", ping)
		codes[resp.StatusCode]++
	}
	if codes[http.StatusTooManyRequests] != 149 {
		t.Fatalf("the flood: %v", codes)
	}
	stolen := e.mint("victim", e.agent("victim", "mcp:crm:*"), "mcp:crm:*", time.Minute, true)
	if resp, _ := e.post(stolen.AccessToken, "", ping); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a bound mandate without its proof: %d", resp.StatusCode)
	}
	found := 0
	for _, ev := range e.events(mandate.EventDecision) {
		if ev.Mandate == stolen.Claims.ID && ev.Details["refused"] == "dpop-bearer" {
			found++
		}
	}
	if found != 1 {
		t.Errorf("%d refusals of the stolen mandate in the log after the flood, want 1", found)
	}
	// A second later, the next refusal of the flood's kind says how many
	// were not recorded.
	clk.Advance(time.Second)
	last := e.mint("flooder", key, "mcp:crm:*", time.Minute, false)
	e.post(last.AccessToken, "", ping)
	if got := e.refusalsOf(last.Claims.ID, "task-state-full"); len(got) != 1 || fmt.Sprint(got[0].Details["dropped"]) != "49" {
		t.Errorf("the refusal after the flood: %+v", got)
	}
}

// A refusal of a request whose names are longer than an audit event can
// hold (a tool's name, a method of 70 KB, within the body's limit) is
// recorded all the same, the names cut: a caller cannot make its
// refusals unaudited (and unseen by the monitor) by their size.
func TestHugeNamesRefusedAudited(t *testing.T) {
	e := newEnvWith(t, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	key := e.agent("padder", "mcp:crm:*")
	tok := e.mint("padder", key, "mcp:crm:list_customers", time.Minute, false)
	huge := strings.Repeat("x", 70_000)
	for _, msg := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + huge + `","arguments":{}}}`,
		`{"jsonrpc":"2.0","id":1,"method":"x/` + huge + `"}`,
	} {
		if _, body := e.post(tok.AccessToken, "", msg); !strings.Contains(body, `"code":-32`) {
			t.Fatalf("%.100s", body)
		}
	}
	if n := len(e.events(mandate.EventDecision)); n != 2 {
		t.Errorf("%d of the 2 refusals audited", n)
	}
}
