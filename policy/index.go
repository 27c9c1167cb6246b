package policy

import (
	"iter"
	"slices"

	"github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/types"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// actionIndex holds the policies whose scope can match one action, split
// so that a decision evaluates only those that can match its resource.
// Cedar's decision does not depend on the order or on policies that cannot
// match, so evaluating fewer is exact: a policy whose resource scope is
// resource == R (or in R, for an R without members: Tool, Resource, Task)
// is in byResource[R]; one whose scope is resource in Server::"s" is in
// byServer["s"], since a tool or resource is a member of its server only;
// all others are general.
type actionIndex struct {
	general    policyList
	byResource map[types.EntityUID]policyList
	byServer   map[string]policyList
	size       int
}

func (x *actionIndex) add(e *entry) {
	x.size++
	var uid types.EntityUID
	switch sc := e.ast.Resource.(type) {
	case xast.ScopeTypeEq:
		uid = sc.Entity
	case xast.ScopeTypeIn:
		uid = sc.Entity
	case xast.ScopeTypeIsIn:
		uid = sc.Entity
	default:
		x.general = append(x.general, e)
		return
	}
	if _, eq := e.ast.Resource.(xast.ScopeTypeEq); !eq && uid.Type == typeServer {
		x.byServer[string(uid.ID)] = append(x.byServer[string(uid.ID)], e)
		return
	}
	if _, eq := e.ast.Resource.(xast.ScopeTypeEq); eq || uid.Type == typeTool || uid.Type == typeResource || uid.Type == typeTask {
		x.byResource[uid] = append(x.byResource[uid], e)
		return
	}
	x.general = append(x.general, e)
}

// candidates are the policies to evaluate for one request.
type candidates [3]policyList

func (c *candidates) All() iter.Seq2[cedar.PolicyID, *cedar.Policy] {
	return func(yield func(cedar.PolicyID, *cedar.Policy) bool) {
		for _, l := range c {
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
	for _, l := range c {
		for _, e := range l {
			if e.usesArgs {
				return true
			}
		}
	}
	return false
}

func (x *actionIndex) candidates(resource types.EntityUID, server string, hasServer bool) *candidates {
	c := &candidates{x.general, x.byResource[resource]}
	if hasServer {
		c[2] = x.byServer[server]
	}
	return c
}

func buildIndex(entries policyList) map[string]*actionIndex {
	idx := make(map[string]*actionIndex, len(actions))
	for _, a := range actions {
		x := &actionIndex{byResource: map[types.EntityUID]policyList{}, byServer: map[string]policyList{}}
		for _, e := range entries {
			if e.actions == nil || slices.Contains(e.actions, a) {
				x.add(e)
			}
		}
		idx[a] = x
	}
	return idx
}
