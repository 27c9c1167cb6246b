package policy

import (
	"fmt"
	"iter"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/ast"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// Explanation says how a decision came about: the decision, a summary of
// why, and what each policy of the set did with the request.
type Explanation struct {
	Decision Decision
	Summary  string
	Policies []PolicyTrace // every policy of the set, in set order
}

// Results of one policy in a [PolicyTrace].
const (
	TraceMatched       = "matched"        // scope and conditions hold
	TraceNotMatched    = "not matched"    // Why says which part does not hold
	TraceError         = "error"          // failed to evaluate: Why says how
	TraceNotApplicable = "not applicable" // its action scope excludes the action
)

// PolicyTrace is what one policy did with the request.
type PolicyTrace struct {
	ID          string
	Effect      string // "permit" or "forbid"
	File        string
	Line, Col   int
	Result      string // one of the Trace* constants
	Why         string // for TraceNotMatched and TraceError
	Determining bool   // among the policies that determined the decision
	Approval    bool   // a permit annotated @approval("required")
	MaxTTL      time.Duration
}

// Explain decides r as [Set.Decide] does and says why, policy by policy:
// for each policy that did not match, the first part of its scope or
// conditions that does not hold. It is slower than Decide and meant for
// people (mandate policy explain), not the request path.
func (s *Set) Explain(r Request) Explanation {
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	d, _ := s.decide(&r)
	x := Explanation{Decision: d}
	es, req, err := cedarRequest(&r, s.cache)
	_, known := s.byAction[r.Action]
	var matchedPermits, matchedForbids []string
	for _, e := range s.entries {
		t := PolicyTrace{
			ID: e.id, Effect: "permit", File: e.path, Line: e.pos.Line, Col: e.pos.Column,
			Approval: e.approval, MaxTTL: e.maxTTL, Determining: slices.Contains(d.Policies, e.id),
		}
		if e.ast.Effect == xast.EffectForbid {
			t.Effect = "forbid"
		}
		switch {
		case !known || err != nil:
			t.Result, t.Why = TraceNotApplicable, "the request was not evaluated"
		case e.actions != nil && !slices.Contains(e.actions, r.Action):
			t.Result, t.Why = TraceNotApplicable, "its action scope does not include "+r.Action
		default:
			ok, evalErr := eval1(e.policy, es, req)
			switch {
			case evalErr != "":
				t.Result, t.Why = TraceError, evalErr
			case ok:
				t.Result = TraceMatched
				if t.Effect == "permit" {
					matchedPermits = append(matchedPermits, e.id)
				} else {
					matchedForbids = append(matchedForbids, e.id)
				}
			default:
				t.Result, t.Why = TraceNotMatched, whyNot(e.ast, es, req)
			}
		}
		x.Policies = append(x.Policies, t)
	}
	x.Summary = summary(&r, d, s.applicable(r.Action), matchedPermits, matchedForbids, known && err == nil)
	return x
}

func summary(r *Request, d Decision, applicable int, permits, forbids []string, evaluated bool) string {
	switch {
	case !evaluated:
		return "denied without evaluating any policy: " + strings.Join(d.Reasons, "; ")
	case len(d.Errors) > 0:
		return fmt.Sprintf("denied: %s failed to evaluate, and a policy error denies whatever the other policies say", strings.Join(d.Policies, ", "))
	case !d.Allow && len(forbids) > 0:
		s := fmt.Sprintf("denied: forbid %s matched, and a forbid wins over any permit", strings.Join(forbids, ", "))
		if len(permits) > 0 {
			s += fmt.Sprintf(" (permits that matched: %s)", strings.Join(permits, ", "))
		}
		return s
	case !d.Allow:
		return fmt.Sprintf("denied by default: %d policies of the set apply to %s, and no permit among them matched", applicable, r.Action)
	case d.NeedsApproval:
		return fmt.Sprintf("allowed after a person's approval: permit %s matched, no forbid did, and a permit that matched is annotated @approval(\"required\")", strings.Join(permits, ", "))
	default:
		s := fmt.Sprintf("allowed: permit %s matched and no forbid did", strings.Join(permits, ", "))
		if d.MaxTTL > 0 {
			s += fmt.Sprintf("; lifetime capped at %v by @max_ttl_ms", d.MaxTTL)
		}
		return s
	}
}

// String is the explanation as mandate policy explain prints it.
func (x Explanation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "decision: %s\n", x.Decision.Outcome())
	fmt.Fprintf(&b, "why: %s\n", x.Summary)
	if x.Decision.MaxTTL > 0 {
		fmt.Fprintf(&b, "max ttl: %v\n", x.Decision.MaxTTL)
	}
	fmt.Fprintf(&b, "policy set: %s\n", x.Decision.SetHash)
	for _, t := range x.Policies {
		mark := " "
		if t.Determining {
			mark = "*"
		}
		fmt.Fprintf(&b, "%s %-6s %s (%s:%d:%d): %s", mark, t.Effect, t.ID, t.File, t.Line, t.Col, t.Result)
		if t.Why != "" {
			b.WriteString(": " + t.Why)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

type onePolicy struct {
	id string
	p  *cedar.Policy
}

func (o onePolicy) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) { yield(cedar.PolicyID(o.id), o.p) }
}

// eval1 evaluates one policy alone: whether it matched, or its error.
func eval1(p *cedar.Policy, es cedar.EntityGetter, req cedar.Request) (bool, string) {
	_, diag := cedar.Authorize(onePolicy{"p", p}, es, req)
	if len(diag.Errors) > 0 {
		return false, diag.Errors[0].Message
	}
	return len(diag.Reasons) > 0, ""
}

// whyNot finds the first part of a policy that does not hold: its
// principal, action or resource scope, a conjunct of a when condition, or
// an unless condition that holds.
func whyNot(p *xast.Policy, es cedar.EntityGetter, req cedar.Request) string {
	all := xast.ScopeTypeAll{}
	for _, sc := range []struct {
		name string
		pol  *xast.Policy
		uid  cedar.EntityUID
	}{
		{"principal", &xast.Policy{Effect: xast.EffectPermit, Principal: p.Principal, Action: all, Resource: all}, req.Principal},
		{"action", &xast.Policy{Effect: xast.EffectPermit, Principal: all, Action: p.Action, Resource: all}, req.Action},
		{"resource", &xast.Policy{Effect: xast.EffectPermit, Principal: all, Action: all, Resource: p.Resource}, req.Resource},
	} {
		if ok, _ := eval1(cedar.NewPolicyFromAST((*ast.Policy)(sc.pol)), es, req); !ok {
			return fmt.Sprintf("%s scope `%s` does not hold for %s", sc.name, scopeText(sc.pol, sc.name), sc.uid)
		}
	}
	var prefix []xast.ConditionType
	for _, c := range p.Conditions {
		if c.Condition == xast.ConditionUnless {
			next := append(slices.Clone(prefix), c)
			if ok, _ := evalConds(next, es, req); !ok {
				return fmt.Sprintf("unless `%s` holds", nodeText(c.Body))
			}
			prefix = next
			continue
		}
		var parts []xast.IsNode
		conjuncts(c.Body, &parts)
		var acc xast.IsNode
		for _, part := range parts {
			if acc == nil {
				acc = part
			} else {
				acc = xast.NodeTypeAnd{BinaryNode: xast.BinaryNode{Left: acc, Right: part}}
			}
			if ok, _ := evalConds(append(slices.Clone(prefix), xast.ConditionType{Condition: xast.ConditionWhen, Body: acc}), es, req); !ok {
				return fmt.Sprintf("when `%s` is false", nodeText(part))
			}
		}
		prefix = append(prefix, c)
	}
	return "it does not hold" // not reached: the whole policy did not match
}

func evalConds(conds []xast.ConditionType, es cedar.EntityGetter, req cedar.Request) (bool, string) {
	all := xast.ScopeTypeAll{}
	return eval1(cedar.NewPolicyFromAST((*ast.Policy)(&xast.Policy{Effect: xast.EffectPermit, Principal: all, Action: all, Resource: all, Conditions: conds})), es, req)
}

func conjuncts(n xast.IsNode, out *[]xast.IsNode) {
	if a, ok := n.(xast.NodeTypeAnd); ok {
		conjuncts(a.Left, out)
		conjuncts(a.Right, out)
		return
	}
	*out = append(*out, n)
}

// scopeText prints one scope of p as Cedar; the others are "principal",
// "action" and "resource".
func scopeText(p *xast.Policy, which string) string {
	text := string(cedar.NewPolicyFromAST((*ast.Policy)(p)).MarshalCedar())
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, which) {
			return strings.TrimSuffix(line, ",")
		}
	}
	return which
}

// nodeText prints an expression as Cedar.
func nodeText(n xast.IsNode) string {
	all := xast.ScopeTypeAll{}
	p := &xast.Policy{Effect: xast.EffectPermit, Principal: all, Action: all, Resource: all,
		Conditions: []xast.ConditionType{{Condition: xast.ConditionWhen, Body: n}}}
	text := string(cedar.NewPolicyFromAST((*ast.Policy)(p)).MarshalCedar())
	if i := strings.Index(text, "when {"); i >= 0 {
		text = text[i+len("when {"):]
		text = strings.TrimSuffix(strings.TrimSpace(text), "};")
	}
	return newlineRE.ReplaceAllString(strings.TrimSpace(text), " ")
}

var newlineRE = regexp.MustCompile(`\s*\n\s*`)

func (s *Set) applicable(action string) int {
	if x := s.byAction[action]; x != nil {
		return x.size
	}
	return 0
}
