package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the time-windows example's time zone, on any machine

	"github.com/cedar-policy/cedar-go/types"

	"github.com/mandatehq/mandate"
)

func TestSchemaLoads(t *testing.T) {
	s, err := baseSchema()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range actions {
		if _, ok := s.Actions[mustAction(a)]; !ok {
			t.Errorf("schema lacks action %s", a)
		}
	}
	for _, et := range []string{"User", "Agent", "Task", "Server", "Tool", "Resource"} {
		if _, ok := s.Entities[typeFor(et)]; !ok {
			t.Errorf("schema lacks entity type %s", et)
		}
	}
}

// TestDefaultSet runs the default set's cases (testdata/default.tests.json)
// and checks that the set written by Open is the embedded one.
func TestDefaultSet(t *testing.T) {
	runTestFile(t, "testdata/default.tests.json")
}

// TestExamples runs every example policy set's test file.
func TestExamples(t *testing.T) {
	dirs, err := filepath.Glob("../examples/policies/*")
	if err != nil {
		t.Fatal(err)
	}
	var n int
	for _, dir := range dirs {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		n++
		t.Run(filepath.Base(dir), func(t *testing.T) {
			if diags := Check(dir); len(diags) > 0 {
				t.Fatalf("check: %v", diags)
			}
			runTestFile(t, filepath.Join(dir, "tests.json"))
		})
	}
	if n < 6 {
		t.Errorf("%d example sets, want at least 6", n)
	}
}

func runTestFile(t *testing.T, file string) {
	t.Helper()
	res, err := RunTests(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Cases) == 0 {
		t.Fatal("no cases")
	}
	for _, c := range res.Cases {
		if !c.Pass {
			t.Errorf("%s: %s: %v; reasons %q", file, c.Name, c.Problems, c.Got.Reasons)
		}
	}
}

// TestRunTestsReportsFailures: a wrong expectation fails its case, and only
// that one, saying how.
func TestRunTestsReportsFailures(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.cedar", `@id("tools") permit (principal, action == Action::"CallTool", resource);`)
	write(t, dir, "tests.json", `{"cases": [
		{"name": "right", "request": {"action": "CallTool", "agent": {"id": "a"}}, "expect": "allow", "policies": ["tools"]},
		{"name": "wrong outcome", "request": {"action": "CallTool", "agent": {"id": "a"}}, "expect": "deny"},
		{"name": "wrong policies", "request": {"action": "CallTool", "agent": {"id": "a"}}, "expect": "allow", "policies": ["other"]},
		{"name": "bad expect", "request": {"action": "CallTool"}, "expect": "permit"},
		{"name": "misspelt field", "request": {"acton": "CallTool"}, "expect": "deny"}
	]}`)
	res, err := RunTests(filepath.Join(dir, "tests.json"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Passed != 1 || res.Failed != 4 || res.OK() {
		t.Fatalf("passed %d, failed %d:\n%s", res.Passed, res.Failed, res)
	}
	for i, want := range []string{"", "got allow, want deny", "determining policies [tools], want [other]", `expect is "permit"`, `unknown field "acton"`} {
		got := strings.Join(res.Cases[i].Problems, "; ")
		if !strings.Contains(got, want) || (want == "" && got != "") {
			t.Errorf("case %d: problems %q, want %q", i, got, want)
		}
	}
	if !strings.Contains(res.String(), "FAIL wrong outcome") {
		t.Errorf("String:\n%s", res)
	}
}

func TestRunTestsInvalidSet(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.cedar", `permit (principal, action == Action::"Nope", resource);`)
	write(t, dir, "tests.json", `{"cases": []}`)
	_, err := RunTests(filepath.Join(dir, "tests.json"))
	var ie *InvalidSetError
	if !errors.As(err, &ie) || mandate.ErrorCode(err) != mandate.EINVALID {
		t.Fatalf("err = %v", err)
	}
}

// TestCheck: each kind of problem is reported with the file, line and column
// of the policy, or of the syntax error.
func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		name, src string
		want      string // file:line:col: ... prefix and a part of the message
		wantMsg   string
	}{
		{"syntax", "permit (principal, action, resource)\nwhen { context.risk = };", "p.cedar:2:", "syntax error"},
		{"unknown attribute", "\n\n@id(\"x\")\npermit (principal, action == Action::\"CallTool\", resource)\nwhen { context.riks > 5 };", "p.cedar:3:1: policy x:", "attribute `riks` in context"},
		{"unknown entity attribute", "permit (principal, action == Action::\"CallTool\", resource)\nwhen { principal.role == \"admin\" };", "p.cedar:1:1: policy p.cedar#1:", "attribute `role` on entity type `Agent`"},
		{"unknown action", "permit (principal, action == Action::\"DeleteAll\", resource);", "p.cedar:1:1:", "unrecognized action"},
		{"unknown entity type", "permit (principal is Admin, action, resource);", "p.cedar:1:1:", "Admin"},
		{"wrong resource for action", "permit (principal, action == Action::\"MintRoot\", resource is Tool);", "p.cedar:1:1:", "unable to find an applicable action"},
		{"type error", "permit (principal, action == Action::\"CallTool\", resource)\nwhen { context.risk like \"high\" };", "p.cedar:1:1:", "unexpected type"},
		{"unguarded argument", "permit (principal, action == Action::\"CallTool\", resource)\nwhen { context.args.to like \"*@acme.example\" };", "p.cedar:1:1:", "optional attribute `args.to`"},
		{"argument as two types", "permit (principal, action == Action::\"CallTool\", resource)\nwhen { context.args has n && context.args.n like \"x\" };\n\npermit (principal, action == Action::\"CallTool\", resource)\nwhen { context.args has n && context.args.n > 3 };", "p.cedar:4:1: policy p.cedar#2:", "context.args.n is used as a Long here but as a String in policy p.cedar#1"},
		{"argument as entity", "permit (principal, action == Action::\"CallTool\", resource)\nwhen { context.args has a && principal in context.args.a };", "p.cedar:1:1:", "used as an entity"},
		{"misspelt annotation", "@aproval(\"required\")\npermit (principal, action == Action::\"CallTool\", resource);", "p.cedar:1:1:", "unknown annotation @aproval; hint: did you mean @approval?"},
		{"approval value", "@approval(\"yes\")\npermit (principal, action == Action::\"CallTool\", resource);", "p.cedar:1:1:", `@approval("yes") is not understood`},
		{"approval on forbid", "@approval(\"required\")\nforbid (principal, action == Action::\"CallTool\", resource);", "p.cedar:1:1:", "permit policies only"},
		{"max ttl", "@max_ttl_ms(\"soon\")\npermit (principal, action == Action::\"Delegate\", resource);", "p.cedar:1:1:", "positive number of milliseconds"},
		{"duplicate id", "@id(\"a\")\npermit (principal, action == Action::\"CallTool\", resource);\n@id(\"a\")\nforbid (principal, action == Action::\"CallTool\", resource);", "p.cedar:3:1: policy a:", "the ID is used twice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, "p.cedar", tt.src)
			diags := Check(dir)
			if len(diags) == 0 {
				t.Fatal("no diagnostics")
			}
			want := filepath.Join(dir, tt.want)
			var found bool
			for _, d := range diags {
				found = found || strings.HasPrefix(d.String(), want) && strings.Contains(d.String(), tt.wantMsg)
			}
			if !found {
				t.Errorf("diagnostics %q; want one starting %q containing %q", diags, want, tt.wantMsg)
			}
		})
	}
}

func TestCheckGoodAndOwnAnnotations(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.cedar", "@id(\"a\") @x_owner(\"secteam\") @reason(\"because\")\npermit (principal, action == Action::\"CallTool\", resource);")
	write(t, dir, "b.cedar", "// nothing but a comment\n")
	write(t, dir, ".c.cedar", "this is an editor's swap file, not read")
	write(t, dir, "notes.txt", "not read either")
	if diags := Check(dir); len(diags) != 0 {
		t.Fatal(diags)
	}
	s, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Files(); !slices.Equal(got, []string{"a.cedar", "b.cedar"}) {
		t.Errorf("files %v", got)
	}
	if s.Len() != 1 {
		t.Errorf("%d policies", s.Len())
	}
}

func TestCheckMissingDir(t *testing.T) {
	diags := Check(filepath.Join(t.TempDir(), "nope"))
	if len(diags) != 1 || !strings.Contains(diags[0].Message, "cannot read the policy directory") {
		t.Fatal(diags)
	}
}

// TestDecisions covers the decision rules: default deny, forbid wins,
// approval, lifetime caps, policy errors deny, determining policies in set
// order, the set's hash.
func TestDecisions(t *testing.T) {
	set := mustSet(t, `
@id("tools") permit (principal, action == Action::"CallTool", resource);
@id("delegate") @max_ttl_ms("60000") permit (principal, action == Action::"Delegate", resource);
@id("delegate-short") @max_ttl_ms("5000") permit (principal, action == Action::"Delegate", resource) when { principal.ephemeral };
@id("gated") @approval("required") @reason("deletion needs approval") permit (principal, action == Action::"CallTool", resource) when { resource.name == "delete" };
@id("no-evil") forbid (principal, action == Action::"CallTool", resource) when { resource.name == "evil" };
@id("no-evil-too") forbid (principal, action == Action::"CallTool", resource) when { resource.labels.contains("evil") };
@id("overflow") forbid (principal, action == Action::"CallTool", resource) when { resource.name == "overflow" && context.risk * 9223372036854775807 > 0 };
@id("typed-arg") forbid (principal, action == Action::"CallTool", resource) when { context.args has n && context.args.n > 5 };
`)
	base := Request{Action: ActionCallTool, Agent: AgentInfo{ID: "spiffe://acme.example/agent/a"}, Server: "s", Tool: "read"}
	for _, tt := range []struct {
		name     string
		mod      func(*Request)
		want     string
		policies []string
		maxTTL   time.Duration
		reason   string
	}{
		{"permit", func(r *Request) {}, OutcomeAllow, []string{"tools"}, 0, "permitted by tools"},
		{"default deny", func(r *Request) { r.Action = ActionListTools }, OutcomeDeny, nil, 0, "no policy permits ListTools: denied by default"},
		{"unknown action", func(r *Request) { r.Action = "Format" }, OutcomeDeny, nil, 0, `unknown action "Format"`},
		{"approval", func(r *Request) { r.Tool = "delete" }, OutcomeApproval, []string{"tools", "gated"}, 0, "deletion needs approval"},
		{"forbid wins", func(r *Request) { r.Tool = "evil"; r.ToolLabels = []string{"evil"} }, OutcomeDeny, []string{"no-evil", "no-evil-too"}, 0, "forbidden by no-evil"},
		{"lifetime cap", func(r *Request) { r.Action = ActionDelegate }, OutcomeAllow, []string{"delegate"}, time.Minute, ""},
		{"smallest cap", func(r *Request) { r.Action = ActionDelegate; r.Agent.Ephemeral = true }, OutcomeAllow, []string{"delegate", "delegate-short"}, 5 * time.Second, ""},
		{"evaluation error denies", func(r *Request) { r.Tool = "overflow"; r.Risk = 2 }, OutcomeDeny, []string{"overflow"}, 0, "failed to evaluate"},
		{"argument of the wrong type denies", func(r *Request) { r.Args = map[string]any{"n": "five"} }, OutcomeDeny, []string{"typed-arg"}, 0, "a policy error denies"},
		{"argument of the right type", func(r *Request) { r.Args = map[string]any{"n": float64(3)} }, OutcomeAllow, []string{"tools"}, 0, ""},
		{"argument over the limit", func(r *Request) { r.Args = map[string]any{"n": float64(6)} }, OutcomeDeny, []string{"typed-arg"}, 0, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := base
			tt.mod(&r)
			d := set.Decide(r)
			if d.Outcome() != tt.want || !slices.Equal(d.Policies, tt.policies) || d.MaxTTL != tt.maxTTL || d.SetHash != set.Hash() {
				t.Errorf("got %s %v max %v hash %s, want %s %v max %v", d.Outcome(), d.Policies, d.MaxTTL, d.SetHash, tt.want, tt.policies, tt.maxTTL)
			}
			if tt.reason != "" && !strings.Contains(strings.Join(d.Reasons, "; "), tt.reason) {
				t.Errorf("reasons %q, want %q", d.Reasons, tt.reason)
			}
			if (len(d.Errors) > 0) != strings.Contains(tt.reason, "evaluate") && strings.Contains(tt.reason, "evaluate") {
				t.Errorf("errors %q", d.Errors)
			}
		})
	}
}

// TestEntities checks the mapping of a Request onto entities and context
// (docs/policy.md), attribute by attribute.
func TestEntities(t *testing.T) {
	set := mustSet(t, `
@id("all") permit (principal, action == Action::"CallTool", resource)
when {
  principal == Agent::"spiffe://acme.example/agent/o/sub/1" &&
  principal in Agent::"spiffe://acme.example/agent/o" &&
  principal.id == "spiffe://acme.example/agent/o/sub/1" &&
  principal.name == "o" &&
  principal.owner == User::"alice@acme.example" &&
  principal.labels.contains("blue") &&
  principal.ephemeral &&
  principal.registered == "spiffe://acme.example/agent/o" &&
  resource == Tool::"github:create_issue" &&
  resource in Server::"github" &&
  resource.server == Server::"github" &&
  resource.server.name == "github" &&
  resource.name == "create_issue" &&
  resource.labels.contains("write") &&
  context.subject == User::"alice@acme.example" &&
  context.task == Task::"t_1" &&
  context.task.purpose == "report" &&
  context.task.subject == User::"alice@acme.example" &&
  context.chain.contains("spiffe://acme.example/agent/o") &&
  context.depth == 2 &&
  context.purpose == "report" &&
  context.time.hour == 9 && context.time.minute == 30 && context.time.weekday == 1 &&
  context.time.unix == 1772443800 &&
  context.risk == 42 &&
  context.dpop &&
  context.labels.contains("pii") &&
  context.history.calls == 7 && context.history.sinks == 0 &&
  context.scopes.isEmpty() &&
  context.ttl_ms == 1500 &&
  context.args has q && context.args.q == "x" &&
  context.args has opts && context.args.opts has deep && context.args.opts.deep.contains(3)
};
`)
	r := Request{
		Action: ActionCallTool, Subject: "user:alice@acme.example",
		Agent: AgentInfo{ID: "spiffe://acme.example/agent/o/sub/1", Name: "o", Owner: "alice@acme.example", Labels: []string{"blue"}},
		Chain: []string{"spiffe://acme.example/agent/o/sub/1", "spiffe://acme.example/agent/o"},
		Task:  "t_1", Purpose: "report", Server: "github", Tool: "create_issue", ToolLabels: []string{"write"},
		Args: map[string]any{"q": "x", "opts": map[string]any{"deep": []any{json.Number("3"), nil}}, "gone": nil},
		Risk: 42, DPoP: true, Labels: []string{"pii"}, History: map[string]int64{"calls": 7, "unknown": 3},
		TTL: 1500 * time.Millisecond, Time: time.Date(2026, 3, 2, 9, 30, 0, 0, time.UTC),
	}
	if d := set.Decide(r); !d.Allow {
		x := set.Explain(r)
		t.Fatalf("%+v\n%s", d, x)
	}
}

func TestActionResources(t *testing.T) {
	set := mustSet(t, `
permit (principal, action == Action::"MintRoot", resource == Task::"t_1");
permit (principal, action == Action::"Delegate", resource is Task) when { resource.subject == User::"a@b.example" };
permit (principal, action == Action::"ListTools", resource == Server::"s");
permit (principal, action == Action::"ReadResource", resource == Resource::"s:file:///etc/motd");
permit (principal, action == Action::"GetPrompt", resource in Server::"s") when { resource.name == "summarize" };
permit (principal, action == Action::"HttpRequest", resource) when { resource.name like "GET /v1/*" && resource.server == Server::"s" };
`)
	for _, r := range []Request{
		{Action: ActionMintRoot, Task: "t_1"},
		{Action: ActionDelegate, Task: "t_2", Subject: "user:a@b.example"},
		{Action: ActionListTools, Server: "s"},
		{Action: ActionReadResource, Server: "s", Resource: "file:///etc/motd"},
		{Action: ActionGetPrompt, Server: "s", Resource: "summarize"},
		{Action: ActionHTTPRequest, Server: "s", Resource: "GET /v1/items"},
	} {
		if d := set.Decide(r); !d.Allow {
			t.Errorf("%s: %v\n%s", r.Action, d.Reasons, set.Explain(r))
		}
		r.Server = "other"
		r.Task = "t_3"
		r.Subject = ""
		if d := set.Decide(r); d.Allow {
			t.Errorf("%s on another server or task allowed", r.Action)
		}
	}
}

func TestArgsLimits(t *testing.T) {
	set := mustSet(t, `
permit (principal, action == Action::"CallTool", resource);
forbid (principal, action == Action::"CallTool", resource) when { context.args has x && context.args.x == "no" };
`)
	deep := map[string]any{}
	cur := deep
	for range MaxArgsDepth + 1 {
		next := map[string]any{}
		cur["a"] = next
		cur = next
	}
	okDeep := map[string]any{}
	cur = okDeep
	for range MaxArgsDepth - 1 {
		next := map[string]any{}
		cur["a"] = next
		cur = next
	}
	many := make([]any, MaxArgsElements)
	for i := range many {
		many[i] = float64(i)
	}
	for _, tt := range []struct {
		name string
		args map[string]any
		want string // "" for allow
	}{
		{"deep", deep, "nested more than 16 levels deep"},
		{"just deep enough", okDeep, ""},
		{"many", map[string]any{"a": many}, "more than 1000 values"},
		{"just enough", map[string]any{"a": many[:MaxArgsElements-1]}, ""},
		{"long", map[string]any{"a": strings.Repeat("x", MaxArgsBytes)}, "more than 65536 bytes of text"},
		{"long keys", map[string]any{strings.Repeat("k", MaxArgsBytes/2+1): "", strings.Repeat("j", MaxArgsBytes/2): ""}, "more than 65536 bytes"},
		{"invalid UTF-8", map[string]any{"a": "\xff"}, "not valid UTF-8"},
		{"NaN", map[string]any{"a": nan()}, "NaN or infinite"},
		{"not JSON", map[string]any{"a": struct{}{}}, "Go type struct {} is not JSON"},
		{"bad number", map[string]any{"a": json.Number("1x")}, "does not parse"},
		{"odd unicode is just text", map[string]any{"a": "\u202eevil\u0000\U0001F600", "\u0301": []string{"é", "é"}}, ""},
		{"the forbid still applies", map[string]any{"x": "no"}, "forbidden by"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := set.Decide(Request{Action: ActionCallTool, Agent: AgentInfo{ID: "a"}, Args: tt.args})
			if tt.want == "" {
				if !d.Allow {
					t.Fatalf("denied: %v", d.Reasons)
				}
				return
			}
			if d.Allow || !strings.Contains(strings.Join(d.Reasons, "; "), tt.want) {
				t.Fatalf("got %s %q, want deny %q", d.Outcome(), d.Reasons, tt.want)
			}
		})
	}
	// Policies that do not read the arguments still refuse them beyond
	// the limits.
	noArgs := mustSet(t, `permit (principal, action == Action::"CallTool", resource);`)
	if d := noArgs.Decide(Request{Action: ActionCallTool, Args: deep}); d.Allow || !strings.Contains(d.Reasons[0], "tool arguments refused") {
		t.Fatalf("%+v", d)
	}
}

func nan() float64 { z := 0.0; return z / z }

func TestExplain(t *testing.T) {
	set, err := NewSet(DefaultPolicies())
	if err != nil {
		t.Fatal(err)
	}
	r := Request{
		Action: ActionCallTool, Agent: AgentInfo{ID: "spiffe://acme.example/agent/o/sub/1/sub/2", Ephemeral: true},
		Chain:  []string{"spiffe://acme.example/agent/o/sub/1/sub/2", "spiffe://acme.example/agent/o/sub/1", "spiffe://acme.example/agent/o"},
		Server: "github", Tool: "create_issue", ToolLabels: []string{"write"},
	}
	x := set.Explain(r)
	if x.Decision.Outcome() != OutcomeDeny || !strings.Contains(x.Summary, "forbid deep-sub-agents-read-only matched") || !strings.Contains(x.Summary, "permits that matched: call-tools") {
		t.Fatalf("%s", x)
	}
	want := map[string]string{
		"mint-root":                  "not applicable: its action scope does not include CallTool",
		"call-tools":                 "matched",
		"destructive-needs-approval": "not matched: when `resource.labels.contains(\"destructive\")` is false",
		"deep-sub-agents-read-only":  "matched",
		"stop-at-high-risk":          "not matched: when `context.risk >= 90` is false",
	}
	for _, p := range x.Policies {
		w, ok := want[p.ID]
		if !ok {
			continue
		}
		got := p.Result
		if p.Why != "" {
			got += ": " + p.Why
		}
		if got != w {
			t.Errorf("%s: %q, want %q", p.ID, got, w)
		}
	}
	if !strings.Contains(x.String(), "* forbid deep-sub-agents-read-only (default.cedar:") {
		t.Errorf("String:\n%s", x)
	}

	// A scope that does not hold, an unless that does, an error.
	set = mustSet(t, `
@id("scope") permit (principal == Agent::"b", action == Action::"CallTool", resource);
@id("unless") permit (principal, action == Action::"CallTool", resource) unless { principal.ephemeral };
@id("err") forbid (principal, action == Action::"CallTool", resource) when { context.args has n && context.args.n > 1 };
`)
	x = set.Explain(Request{Action: ActionCallTool, Agent: AgentInfo{ID: "a", Ephemeral: true}, Args: map[string]any{"n": "x"}})
	for i, w := range []string{
		"not matched: principal scope `principal == Agent::\"b\"` does not hold for Agent::\"a\"",
		"not matched: unless `principal.ephemeral` holds",
		"error: ",
	} {
		got := x.Policies[i].Result + ": " + x.Policies[i].Why
		if !strings.HasPrefix(got, w) {
			t.Errorf("%s: %q, want %q", x.Policies[i].ID, got, w)
		}
	}
	if !strings.Contains(x.Summary, "err failed to evaluate") {
		t.Errorf("summary %q", x.Summary)
	}
}

func TestRequestJSON(t *testing.T) {
	r := benchRequest()
	r.Args = map[string]any{"to": "bob@acme.example", "n": json.Number("2")}
	r.TTL = 1500 * time.Millisecond
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Request
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(back)
	if !bytes.Equal(b, b2) || !back.Time.Equal(r.Time) || back.TTL != r.TTL {
		t.Fatalf("%s\n%s", b, b2)
	}
	if err := json.Unmarshal([]byte(`{"action":"CallTool","tol":"x"}`), &back); err == nil {
		t.Fatal("unknown field accepted")
	}
}

func TestSchemaExported(t *testing.T) {
	s := Schema()
	s[0] = 'X'
	if bytes.Equal(s, Schema()) {
		t.Fatal("Schema returns the embedded bytes themselves")
	}
}

func TestDecisionForEngine(t *testing.T) {
	e, err := Open(Config{Dir: t.TempDir(), Logger: discard(), Location: mustLoc(t, "Europe/Berlin"),
		Now: func() time.Time { return time.Date(2026, 3, 2, 22, 30, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	// Through the engine, a zero time is the engine's now, and the hour is
	// in the engine's zone: 22:30 UTC is 23:30 in Berlin.
	hourSet := mustSet(t, `permit (principal, action == Action::"CallTool", resource) when { context.time.hour == 23 && context.time.weekday == 1 };`)
	if d := hourSet.Decide(Request{Action: ActionCallTool, Time: e.time(time.Time{})}); !d.Allow {
		t.Fatalf("engine time %v: %v", e.time(time.Time{}), d.Reasons)
	}
	if d := e.Decide(context.Background(), Request{Action: ActionCallTool, Agent: AgentInfo{ID: "a"}, Server: "s", Tool: "t"}); !d.Allow || d.SetHash != e.Set().Hash() {
		t.Fatalf("%+v", d)
	}
}

func mustAction(a string) types.EntityUID { return types.NewEntityUID(typeAction, types.String(a)) }

func typeFor(s string) types.EntityType { return types.EntityType(s) }

func mustLoc(t *testing.T, name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func mustSet(t testing.TB, src string) *Set {
	t.Helper()
	s, err := NewSet(map[string][]byte{"test.cedar": []byte(src)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func write(t testing.TB, dir, name, data string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestAuditDetails: the details of a decision or a load always make an
// event that the audit log accepts, however many policies decided.
func TestAuditDetails(t *testing.T) {
	var many strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&many, "@id(\"%s-%d\") @reason(\"%s\") forbid (principal, action == Action::\"CallTool\", resource);\n", strings.Repeat("é", 60), i, strings.Repeat("ü", 255))
	}
	set := mustSet(t, many.String())
	d := set.Decide(Request{Action: ActionCallTool})
	if len(d.Policies) != 2000 {
		t.Fatalf("%d policies", len(d.Policies))
	}
	ev := &mandate.Event{V: mandate.EventVersion, Time: 1, Type: mandate.EventDecision, Details: d.AuditDetails()}
	if _, err := mandate.MarshalEvent(ev); err != nil {
		t.Fatal(err)
	}
	if got := ev.Details["policies_total"]; got != int64(2000) {
		t.Fatalf("policies_total %v", got)
	}
	set = mustSet(t, `@id("a") @max_ttl_ms("1500") permit (principal, action == Action::"Delegate", resource);`)
	d = set.Decide(Request{Action: ActionDelegate})
	got := d.AuditDetails()
	if got["outcome"] != "allow" || got["max_ttl_ms"] != int64(1500) || got["policy_set"] != set.Hash() || !slices.Equal(got["policies"].([]string), []string{"a"}) {
		t.Fatalf("%v", got)
	}

	dir := t.TempDir()
	write(t, dir, "bad.cedar", strings.Repeat("permit (principal, action == Action::\"Nope\", resource);\n", 500))
	_, err := Open(Config{Dir: dir, Logger: discard(), OnLoad: func(r LoadResult) {
		ev := &mandate.Event{V: mandate.EventVersion, Time: 1, Type: mandate.EventPolicyLoaded, Outcome: mandate.OutcomeDeny, Details: r.AuditDetails()}
		if _, err := mandate.MarshalEvent(ev); err != nil {
			t.Fatal(err)
		}
		if ev.Details["outcome"] != "refused" || len(ev.Details["problems"].([]string)) != 32 {
			t.Fatalf("%v", ev.Details)
		}
	}})
	if err == nil {
		t.Fatal("loaded")
	}
}
