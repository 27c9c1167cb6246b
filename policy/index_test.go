package policy

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cedar-policy/cedar-go"
)

// reference decides r the plain way: every policy of the set, entities and
// context built afresh with the arguments, no index, no cache.
func reference(t *testing.T, s *Set, r Request) (allow bool, ids []string, errs int) {
	t.Helper()
	es, req, err := cedarRequest(&r, nil)
	if err != nil {
		return false, nil, -1
	}
	dec, diag := cedar.Authorize(s.entries, es, req)
	if len(diag.Errors) > 0 {
		for _, e := range diag.Errors {
			if !slices.Contains(ids, string(e.PolicyID)) {
				ids = append(ids, string(e.PolicyID))
			}
		}
		return false, ids, len(diag.Errors)
	}
	for _, reason := range diag.Reasons {
		ids = append(ids, string(reason.PolicyID))
	}
	return dec == cedar.Allow, ids, 0
}

// TestIndexExact: the indexes and caches of Decide change how much is
// evaluated, never the outcome: over many varied requests against several
// sets (generated, default, examples), Decide and the plain evaluation
// agree on the outcome and the determining policies.
func TestIndexExact(t *testing.T) {
	sets := map[string]*Set{}
	for _, n := range []int{30, 1000} {
		s, err := NewSet(benchPolicies(n))
		if err != nil {
			t.Fatal(err)
		}
		sets[fmt.Sprint("bench", n)] = s
	}
	s, err := NewSet(DefaultPolicies())
	if err != nil {
		t.Fatal(err)
	}
	sets["default"] = s
	dirs, _ := filepath.Glob("../examples/policies/*")
	for _, dir := range dirs {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			s, err := LoadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			sets[filepath.Base(dir)] = s
		}
	}
	sets["labels"] = mustSet(t, `
permit (principal, action in [Action::"CallTool", Action::"ReadResource", Action::"HttpRequest", Action::"ListTools"], resource);
forbid (principal, action, resource is Tool) when { resource.labels.contains("a") && resource.labels.contains("b") };
forbid (principal, action == Action::"CallTool", resource) when { context.risk > 3 && resource.labels.contains("c") };
forbid (principal, action == Action::"HttpRequest", resource) when { resource.labels.contains("a") } unless { resource.labels.contains("b") };
forbid (principal, action == Action::"ReadResource", resource) when { resource.labels.contains("d") || resource.labels.contains("a") };
forbid (principal, action == Action::"CallTool", resource == Tool::"srv1:tool1") when { resource.labels.contains("b") };
forbid (principal, action == Action::"CallTool", resource in Server::"srv2") when { resource.labels.contains("c") };
forbid (principal, action == Action::"CallTool", resource) when { context.args has n && context.args.n > 2 };
`)
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(ss ...string) string { return ss[rng.IntN(len(ss))] }
	var labels []string
	for i := range 40 {
		labels = append(labels, fmt.Sprint("label", i*10+3), fmt.Sprint("destructive-", i*10+6))
	}
	labels = append(labels, "a", "b", "c", "d", "read_only", "destructive", "external_send", "deploy", "write")
	agents := []string{"spiffe://acme.example/agent/o", "spiffe://acme.example/agent/o/sub/1", "spiffe://acme.example/agent/o/sub/1/sub/2"}
	for name, s := range sets {
		t.Run(name, func(t *testing.T) {
			for i := range 3000 {
				depth := rng.IntN(4) + 1
				chain := []string{}
				for d := depth - 1; d >= 0; d-- {
					chain = append(chain, agents[min(d, 2)])
				}
				var tl []string
				for range rng.IntN(4) {
					tl = append(tl, labels[rng.IntN(len(labels))])
				}
				if rng.IntN(20) == 0 {
					tl = append(tl, labels[:20]...) // more than maxIndexLabels
				}
				r := Request{
					Action:     pick(actions[:]...),
					Subject:    "user:alice@acme.example",
					Agent:      AgentInfo{ID: chain[0], Owner: pick("alice@acme.example", "owner8@acme.example"), Labels: []string{pick("team-0", "team-1", "prod", "ops", "batch", "no-delegation")}},
					Chain:      chain,
					Task:       "t_1",
					Server:     pick("srv0", "srv1", "srv2", "github", "mail", "payments", "crm", "api", "web"),
					Tool:       pick("tool0", "tool1", "tool30", "send_email", "transfer", "delete_branch", "deploy", "list_issues"),
					Resource:   pick("GET /x", "POST /y", "DELETE /z", "file:///a"),
					ToolLabels: tl,
					Risk:       rng.IntN(100),
					Labels:     []string{pick("internal", "confidential", "secret-5")},
					History:    map[string]int64{"sinks": int64(rng.IntN(30))},
					Scopes:     []string{pick("mcp:srv0:*", "mcp:srv3:*")},
					Args:       map[string]any{"to": pick("a@acme.example", "e@evil.example"), "n": float64(rng.IntN(5)), "amount": float64(rng.IntN(2000)), "currency": "EUR", "payee": "DE89370400440532013000", "branch": pick("main", "x")},
					Time:       timeAt(rng.IntN(7 * 24)),
				}
				if rng.IntN(3) == 0 {
					r.Tool = fmt.Sprint("tool", rng.IntN(1000))
				}
				d := s.Decide(r)
				allow, ids, errs := reference(t, s, r)
				slices.SortFunc(ids, func(a, b string) int { return s.byID[a].index - s.byID[b].index })
				if d.Allow != allow || !slices.Equal(d.Policies, ids) || (len(d.Errors) > 0) != (errs > 0) {
					t.Fatalf("request %d %+v:\nDecide %v %v %q\nplain  %v %v errors %d", i, r, d.Allow, d.Policies, d.Errors, allow, ids, errs)
				}
			}
		})
	}
}
