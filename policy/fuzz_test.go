package policy

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// argsSet reads arguments in several ways, so that conversion is exercised
// through evaluation too.
const argsSet = `
permit (principal, action == Action::"CallTool", resource)
when { context.args has to && context.args.to like "*@acme.example" };
forbid (principal, action == Action::"CallTool", resource)
when { context.args has n && context.args.n > 10 };
forbid (principal, action == Action::"CallTool", resource)
when { context.args has tags && context.args.tags.contains("secret") };
forbid (principal, action == Action::"CallTool", resource)
when { context.args has o && context.args.o has p && context.args.o.p == "x" };
`

// FuzzArgs feeds untrusted tool arguments, decoded from arbitrary JSON as a
// gateway would, through conversion and a decision: no panic; the work is
// bounded (a conversion past the limits is refused, with the deny saying
// why); the check that stands in for conversion when no policy reads the
// arguments accepts exactly what conversion accepts.
func FuzzArgs(f *testing.F) {
	for _, seed := range []string{
		`{"to": "bob@acme.example"}`,
		`{"to": "bob@acme.example", "n": 11}`,
		`{"n": 1e400, "m": -0.5, "k": 12345678901234567890}`,
		`{"tags": ["a", "secret", null, 1, true, {"x": []}]}`,
		`{"o": {"p": "x", "q": [[[[[[[[[[[[[[[[[[[["deep"]]]]]]]]]]]]]]]]]]]}}`,
		`{"to": "\u202e@acme.example\u0000", "\u0301": "é", "emoji": "\ud83d\ude00"}`,
		`{"a": ` + strings.Repeat(`[`, 40) + strings.Repeat(`]`, 40) + `}`,
		`{"big": [` + strings.Repeat(`0,`, 1500) + `0]}`,
		`{"long": "` + strings.Repeat("x", 70000) + `"}`,
		`{"to": "\xff\xfe"}`,
		`{}`,
		`[]`,
		`null`,
	} {
		f.Add([]byte(seed))
	}
	set, err := NewSet(map[string][]byte{"f.cedar": []byte(argsSet)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, useNumber := range []bool{false, true} {
			dec := json.NewDecoder(bytes.NewReader(data))
			if useNumber {
				dec.UseNumber()
			}
			var args map[string]any
			if dec.Decode(&args) != nil {
				return
			}
			rec, convErr := convertArgs(args)
			checkErr := checkArgs(args)
			if (convErr == nil) != (checkErr == nil) {
				t.Fatalf("convert: %v; check: %v", convErr, checkErr)
			}
			if convErr == nil && rec.Len() > MaxArgsElements {
				t.Fatalf("%d attributes", rec.Len())
			}
			d := set.Decide(Request{Action: ActionCallTool, Agent: AgentInfo{ID: "a"}, Server: "s", Tool: "t", Args: args})
			if convErr != nil {
				if d.Allow || len(d.Reasons) != 1 || !strings.HasPrefix(d.Reasons[0], "tool arguments refused: ") {
					t.Fatalf("args refused (%v) but decision %+v", convErr, d)
				}
			}
			if d.Allow && len(d.Errors) > 0 {
				t.Fatalf("allowed with errors: %+v", d)
			}
		}
	})
}

// FuzzPolicyText: any policy text either loads or is refused with
// diagnostics; a set that loads decides without panicking.
func FuzzPolicyText(f *testing.F) {
	for _, name := range []string{"defaults/default.cedar", "../examples/policies/argument-constraints/policies.cedar"} {
		if b, err := defaultOrFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(argsSet))
	f.Add([]byte(`@id("x") @approval("required") @max_ttl_ms("1") permit (principal in Agent::"a", action in [Action::"CallTool"], resource is Tool in Server::"s") unless { context.args has a && context.args.a.b.c == 1 };`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := NewSet(map[string][]byte{"f.cedar": data})
		if err != nil {
			return
		}
		for _, a := range actions {
			s.Decide(Request{Action: a, Agent: AgentInfo{ID: "a"}, Server: "s", Tool: "t", Args: map[string]any{"a": map[string]any{"b": "c"}, "to": "x"}})
		}
	})
}
