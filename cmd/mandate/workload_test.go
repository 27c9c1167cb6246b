package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/client"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/jose"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// fakeClock is the time of a whole server and its agents: it moves only
// when the test moves it, so that hours of work cost nothing.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// workloadConfig is the configuration an operator would write for the
// benign workload's servers: labels on the tools, and the rule that makes
// mail to the organisation's own domain an internal send.
const workloadConfig = `gateway:
  mcp:
    - name: crm
      url: %s
      tools:
        list_customers: [read_only, data:customer-data]
        get_customer: [read_only, data:customer-data]
        search_docs: [read_only]
    - name: mail
      url: %s
      tools:
        send_email: [external_send]
      internal:
        send_email:
          recipients: [to, cc]
          domains: [acme.example]
          content: [subject, body]
`

// workloadServers are the workload's CRM and mail servers (the official
// MCP Go SDK), behind httptest servers.
func workloadServers(t *testing.T) (crm, mail string) {
	srv := mcp.NewServer(&mcp.Implementation{Name: "crm", Version: "1"}, nil)
	mcp.AddTool(srv, &mcp.Tool{Name: "list_customers", Description: "Lists the customers' ids and names."},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			return text("c1 Ada Lovelace\nc2 Grace Hopper\nc3 Alan Turing"), nil, nil
		})
	mcp.AddTool(srv, &mcp.Tool{Name: "get_customer", Description: "A customer's record."},
		func(_ context.Context, _ *mcp.CallToolRequest, in struct {
			ID string `json:"id"`
		}) (*mcp.CallToolResult, any, error) {
			return text(`{"id":"` + in.ID + `","name":"Ada Lovelace","email":"ada@example.org","plan":"enterprise","renewal":"2027-03-01"}`), nil, nil
		})
	mcp.AddTool(srv, &mcp.Tool{Name: "search_docs", Description: "Searches the product documentation."},
		func(_ context.Context, _ *mcp.CallToolRequest, in struct {
			Query string `json:"query"`
		}) (*mcp.CallToolResult, any, error) {
			return text("Release 4.2 adds scheduled exports; see https://docs.acme.example/exports for " + in.Query), nil, nil
		})
	out := mcp.NewServer(&mcp.Implementation{Name: "mail", Version: "1"}, nil)
	mcp.AddTool(out, &mcp.Tool{Name: "send_email", Description: "Sends an e-mail."},
		func(_ context.Context, _ *mcp.CallToolRequest, in struct {
			To      string   `json:"to"`
			Cc      []string `json:"cc,omitempty"`
			Subject string   `json:"subject"`
			Body    string   `json:"body"`
		}) (*mcp.CallToolResult, any, error) {
			return text("sent to " + in.To), nil, nil
		})
	serve := func(s *mcp.Server) string {
		h := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return s }, nil))
		t.Cleanup(h.Close)
		return h.URL
	}
	return serve(srv), serve(out)
}

// A benign workload, as a user's agents would run it, through the real
// issuer, the default policy set, the gateway and the monitor with their
// shipped defaults: eight orchestrators run tasks in waves, each task
// delegating to one to three sub-agents (some two hops down), reading
// customer data and mailing reports to colleagues (internal sends), or
// reading the docs and mailing customers (sends out of tasks that read
// nothing sensitive), with jitter between calls and pauses between waves,
// over hours of (injected) time. It must raise no alert and meet no denial:
// stricter defaults are tuned against it.
func TestBenignWorkloadThroughTheServer(t *testing.T) {
	const (
		agents   = 8 // orchestrators, running a task each at once
		notifier = 3 // orchestrators 0..2 notify customers; the others report
	)
	tasks := 200 // 25 waves
	if raceEnabled {
		tasks = 48 // .ci/run runs the whole workload without the race detector too
	}
	ctx := context.Background()
	clock := &fakeClock{t: time.Now().Truncate(time.Millisecond)}
	start := clock.Now()
	crmURL, mailURL := workloadServers(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "mandate.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, workloadConfig, crmURL, mailURL), 0o600); err != nil {
		t.Fatal(err)
	}
	m := NewMain()
	m.Addr, m.DataDir, m.Now = "127.0.0.1:0", filepath.Join(dir, "data"), clock.Now
	m.Stdout, m.Stderr = testWriter{t}, testWriter{t}
	m.LogLevel = slog.LevelError // a test log line per request would cost more than the work
	if err := m.loadConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if err := m.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
	orchestrators := make([]*client.Client, agents)
	for i := range orchestrators {
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		name := fmt.Sprintf("orchestrator-%d", i)
		if _, err := admin.CreateAgent(ctx, httpapi.AgentRequest{Name: name, Owner: "alice@acme.example",
			Ceiling: []string{"mcp:crm:*", "mcp:mail:*"}, PublicKey: jose.NewPublicJWK(key.Public().(ed25519.PublicKey))}); err != nil {
			t.Fatal(err)
		}
		c, err := client.New(client.Config{Issuer: m.URL, AgentID: mandate.AgentID(m.TrustDomain, name), Key: key, DPoP: true, Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		orchestrators[i] = c
	}

	var mu sync.Mutex
	var failures []string
	calls, internal, external := 0, 0, 0
	fail := func(format string, args ...any) {
		mu.Lock()
		failures = append(failures, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	// session runs calls in one MCP session of md to server, listing the
	// tools first (as clients do), with jitter before each call.
	session := func(r *mrand.Rand, md *client.Mandate, server string, do ...func(*mcp.ClientSession) error) {
		cs, err := mcpSessionAt(ctx, m.URL, server, md, clock.Now)
		if err != nil {
			fail("%s session of %s: %v", server, md.Claims.ClientID, err)
			return
		}
		defer cs.Close()
		if _, err := cs.ListTools(ctx, nil); err != nil {
			fail("tools/list on %s: %v", server, err)
		}
		for _, f := range do {
			clock.Advance(100*time.Millisecond + time.Duration(r.Int64N(int64(900*time.Millisecond))))
			if err := f(cs); err != nil {
				fail("%s: %v", md.Claims.ClientID, err)
			}
			mu.Lock()
			calls++
			mu.Unlock()
		}
	}
	call := func(tool string, args map[string]any) func(*mcp.ClientSession) error {
		return func(cs *mcp.ClientSession) error {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
			if err == nil && res.IsError {
				err = fmt.Errorf("%s answered an error", tool)
			}
			return err
		}
	}
	// delegate hands scope to a new ephemeral sub-agent, for half what
	// is left of the parent's life.
	delegate := func(r *mrand.Rand, o *client.Client, parent *client.Mandate, scope string) *client.Mandate {
		clock.Advance(time.Duration(1+r.IntN(50)) * time.Millisecond)
		ttl := parent.ExpiresIn(clock.Now()).Truncate(time.Millisecond) / 2
		md, err := o.Delegate(ctx, parent, client.NewEphemeral(), client.Request{Scope: scope, TTL: ttl}, client.DelegateOptions{})
		if err != nil {
			fail("delegate %s: %v", scope, err)
		}
		return md
	}
	// task runs one task of orchestrator i.
	task := func(r *mrand.Rand, i int) {
		o := orchestrators[i]
		subs := 1 + r.IntN(3)
		if i < notifier {
			root, err := o.Root(ctx, client.Request{Scope: "mcp:crm:search_docs mcp:mail:send_email", TTL: 20 * time.Minute, Purpose: "tell customers about the release"})
			if err != nil {
				fail("root: %v", err)
				return
			}
			reader := delegate(r, o, root, "mcp:crm:search_docs")
			if reader == nil {
				return
			}
			session(r, reader, "crm", call("search_docs", map[string]any{"query": "exports"}))
			if subs == 3 { // two hops down: reads only
				if deep := delegate(r, o, reader, "mcp:crm:search_docs"); deep != nil {
					session(r, deep, "crm", call("search_docs", map[string]any{"query": "scheduling"}))
				}
			}
			sender := root
			if subs >= 2 {
				if sender = delegate(r, o, root, "mcp:mail:send_email"); sender == nil {
					return
				}
			}
			session(r, sender, "mail", call("send_email", map[string]any{"to": "ada@example.org", "subject": "Release 4.2",
				"body": "Scheduled exports are here: https://docs.acme.example/exports"}))
			mu.Lock()
			external++
			mu.Unlock()
			return
		}
		root, err := o.Root(ctx, client.Request{Scope: "mcp:crm:list_customers mcp:crm:get_customer mcp:mail:send_email", TTL: 20 * time.Minute, Purpose: "weekly customer report"})
		if err != nil {
			fail("root: %v", err)
			return
		}
		reader := delegate(r, o, root, "mcp:crm:list_customers mcp:crm:get_customer")
		if reader == nil {
			return
		}
		reads := []func(*mcp.ClientSession) error{call("list_customers", map[string]any{})}
		for k := range 1 + r.IntN(3) {
			reads = append(reads, call("get_customer", map[string]any{"id": fmt.Sprintf("c%d", k+1)}))
		}
		session(r, reader, "crm", reads...)
		if subs == 3 {
			if deep := delegate(r, o, reader, "mcp:crm:get_customer"); deep != nil {
				session(r, deep, "crm", call("get_customer", map[string]any{"id": "c2"}))
			}
		}
		mailer := root
		if subs >= 2 {
			if mailer = delegate(r, o, root, "mcp:mail:send_email"); mailer == nil {
				return
			}
		}
		args := map[string]any{"to": "team@acme.example", "subject": "Weekly report",
			"body": "Renewals: Ada Lovelace <ada@example.org> 2027-03-01 (enterprise)"}
		if r.IntN(2) == 0 {
			args["cc"] = []string{"bob@acme.example", "carol@acme.example"}
		}
		session(r, mailer, "mail", call("send_email", args))
		mu.Lock()
		internal++
		mu.Unlock()
	}
	// Work comes in waves: each orchestrator runs a task at once, then
	// there is a pause of one to eight minutes. (A pause is taken between
	// waves, not by one worker in the middle of another's requests: the
	// clock is everyone's, and the clients' credentials live for a minute.)
	rs := make([]*mrand.Rand, agents)
	for w := range rs {
		rs[w] = mrand.New(mrand.NewPCG(uint64(w), 18))
	}
	pause := mrand.New(mrand.NewPCG(99, 18))
	for range tasks / agents {
		var wg sync.WaitGroup
		for w := range agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				task(rs[w], w)
			}()
		}
		wg.Wait()
		clock.Advance(time.Minute + time.Duration(pause.Int64N(int64(7*time.Minute))))
	}
	for _, f := range failures {
		t.Error(f)
	}
	if t.Failed() {
		t.FailNow()
	}
	// The monitor reads the log in order: once the alert of a last, known
	// detection (a revoked mandate presented) is in, it has seen the
	// workload. That alert is the only one allowed.
	marker, err := orchestrators[0].Root(ctx, client.Request{Scope: "mcp:crm:search_docs", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Revoke(ctx, httpapi.RevocationRequest{Mandate: marker.Claims.ID, Reason: "the end of the workload"}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, m.URL+"/mcp/crm", nil)
	if resp, err := (presenting{marker, clock.Now}).RoundTrip(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the revoked marker: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	awaitEvent(t, m, url.Values{"type": {mandate.EventAlert}, "task": {marker.Claims.Task}}, func(mandate.LoggedEvent) bool { return true })
	if n := m.Monitor.Dropped(); n != 0 {
		t.Fatalf("the monitor dropped %d events: it did not see the whole workload", n)
	}
	evs, err := m.Store.Events(ctx, mandate.EventFilter{Limit: mandate.MaxEventsPerQuery, Type: mandate.EventAlert})
	if err != nil {
		t.Fatal(err)
	}
	alerts := 0
	for _, e := range evs {
		if e.Task != marker.Claims.Task {
			alerts++
			t.Errorf("alert %s on task %s: %s", e.Details["detector"], e.Task, e.Reason)
		}
	}
	denials := 0
	for _, typ := range []string{mandate.EventDecision, mandate.EventApprovalRequested} {
		evs, err := m.Store.Events(ctx, mandate.EventFilter{Limit: mandate.MaxEventsPerQuery, Type: typ})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Task != marker.Claims.Task {
				denials++
				t.Errorf("%s %s on task %s: %s", e.Type, e.Resource, e.Task, e.Reason)
			}
		}
	}
	agentsActive := 0
	if list, err := admin.Agents(ctx); err == nil {
		for _, a := range list {
			if a.Status == string(mandate.AgentActive) {
				agentsActive++
			}
		}
	}
	if agentsActive != agents {
		t.Errorf("%d of %d orchestrators active", agentsActive, agents)
	}
	t.Logf("benign workload through the server: %d tasks, %d tool calls (%d internal sends, %d sends out) over %v of the server's time; %d alerts, %d denials",
		tasks, calls, internal, external, clock.Now().Sub(start).Round(time.Minute), alerts, denials)
}
