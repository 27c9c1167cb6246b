package policy

import (
	"iter"
	"slices"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// actionIndex holds the policies whose action scope can match one action,
// split so that a decision evaluates only those that can match its request.
// Cedar's decision depends neither on the order of evaluation nor on
// policies that cannot match, so evaluating fewer is exact:
//
//   - a policy whose resource scope is resource == R (or in R, for an R
//     without members: a Tool, Resource or Task) is in byResource[R];
//   - one whose resource scope is resource in Server::"s" is in
//     byServer["s"]: a tool or resource is a member of its server only;
//   - one with a when condition whose top-level conjunct is
//     resource.labels.contains("l") is in byLabel["l"], for the actions
//     whose resource carries Request.ToolLabels: the conjunct is false
//     without the label, and && stops there, so the policy neither matches
//     nor fails to evaluate;
//   - all others are general.
type actionIndex struct {
	general    policyList
	byResource map[types.EntityUID]policyList
	byServer   map[string]policyList
	byLabel    map[string]policyList
	labelled   policyList // every policy of byLabel, for requests with many labels
	size       int
}

// maxIndexLabels is the most labels a request's tool may have for the label
// index to be used; beyond it, every labelled policy is evaluated.
const maxIndexLabels = 16

func newActionIndex() *actionIndex {
	return &actionIndex{
		byResource: map[types.EntityUID]policyList{},
		byServer:   map[string]policyList{},
		byLabel:    map[string]policyList{},
	}
}

func (x *actionIndex) add(e *entry, labelled bool) {
	x.size++
	var uid types.EntityUID
	eq := false
	switch sc := e.ast.Resource.(type) {
	case xast.ScopeTypeEq:
		uid, eq = sc.Entity, true
	case xast.ScopeTypeIn:
		uid = sc.Entity
	case xast.ScopeTypeIsIn:
		uid = sc.Entity
	}
	switch {
	case uid.Type == typeServer && !eq:
		x.byServer[string(uid.ID)] = append(x.byServer[string(uid.ID)], e)
	case eq || uid.Type == typeTool || uid.Type == typeResource || uid.Type == typeTask:
		x.byResource[uid] = append(x.byResource[uid], e)
	case labelled && e.label != "":
		x.byLabel[e.label] = append(x.byLabel[e.label], e)
		x.labelled = append(x.labelled, e)
	default:
		x.general = append(x.general, e)
	}
}

// requiredLabel returns a label that the resource must carry for p to
// match: the literal of a top-level conjunct resource.labels.contains("l")
// of one of its when conditions; "" if there is none.
func requiredLabel(p *xast.Policy) string {
	for _, c := range p.Conditions {
		if c.Condition != xast.ConditionWhen {
			continue
		}
		var parts []xast.IsNode
		conjuncts(c.Body, &parts)
		for _, n := range parts {
			ct, ok := n.(xast.NodeTypeContains)
			if !ok {
				continue
			}
			acc, ok := ct.Left.(xast.NodeTypeAccess)
			if !ok || acc.Value != "labels" {
				continue
			}
			if v, ok := acc.Arg.(xast.NodeTypeVariable); !ok || v.Name != "resource" {
				continue
			}
			if lit, ok := ct.Right.(xast.NodeValue); ok {
				if s, ok := lit.Value.(types.String); ok {
					return string(s)
				}
			}
		}
	}
	return ""
}

// candidates are the policies to evaluate for one request, as lists.
type candidates struct {
	lists []policyList
	buf   [8]policyList
}

func (c *candidates) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, l := range c.lists {
			for _, e := range l {
				if !yield(cedar.PolicyID(e.id), e.policy) {
					return
				}
			}
		}
	}
}

// usesArgs reports whether any candidate reads the tool arguments.
func (c *candidates) usesArgs() bool {
	for _, l := range c.lists {
		for _, e := range l {
			if e.usesArgs {
				return true
			}
		}
	}
	return false
}

func (x *actionIndex) candidates(r *Request, resource types.EntityUID) *candidates {
	c := &candidates{}
	c.lists = append(c.buf[:0], x.general, x.byResource[resource])
	if r.Action != ActionMintRoot && r.Action != ActionDelegate {
		c.lists = append(c.lists, x.byServer[r.Server])
	}
	if len(x.labelled) == 0 {
		return c
	}
	if len(r.ToolLabels) > maxIndexLabels {
		return c.add(x.labelled)
	}
	for i, l := range r.ToolLabels {
		if !slices.Contains(r.ToolLabels[:i], l) { // each bucket once
			c.add(x.byLabel[l])
		}
	}
	return c
}

func (c *candidates) add(l policyList) *candidates {
	if len(l) > 0 {
		c.lists = append(c.lists, l)
	}
	return c
}

// labelledActions are the actions whose resource carries
// Request.ToolLabels as resource.labels.
var labelledActions = []string{ActionCallTool, ActionReadResource, ActionGetPrompt, ActionHTTPRequest}

func buildIndex(entries policyList) map[string]*actionIndex {
	idx := make(map[string]*actionIndex, len(actions))
	for _, e := range entries {
		e.label = requiredLabel(e.ast)
	}
	for _, a := range actions {
		x := newActionIndex()
		labelled := slices.Contains(labelledActions, a)
		for _, e := range entries {
			if e.actions == nil || slices.Contains(e.actions, a) {
				x.add(e, labelled)
			}
		}
		idx[a] = x
	}
	return idx
}
