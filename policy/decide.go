package policy

import (
	"fmt"
	"slices"
	"time"

	"github.com/cedar-policy/cedar-go"
)

// Decide evaluates r against the set. It never fails: a request it cannot
// evaluate (an unknown action, tool arguments beyond the limits) and a
// policy that fails to evaluate both give a deny that says why. The hour,
// minute and weekday of context.time are taken in r.Time's location; a
// zero r.Time is now, in UTC. Safe for concurrent use.
func (s *Set) Decide(r Request) Decision {
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	d, _ := s.decide(&r)
	return d
}

// decide is Decide, also returning the Cedar diagnostic for Explain.
func (s *Set) decide(r *Request) (d Decision, diag cedar.Diagnostic) {
	defer func() {
		// A bug in evaluation denies; it does not take the caller down.
		if p := recover(); p != nil {
			d = Decision{SetHash: s.hash, Errors: []string{fmt.Sprint("internal error: ", p)},
				Reasons: []string{"internal error while deciding: denied"}}
		}
	}()
	d = Decision{SetHash: s.hash}
	x, ok := s.byAction[r.Action]
	if !ok {
		d.Reasons = []string{fmt.Sprintf("unknown action %q: denied", r.Action)}
		return d, cedar.Diagnostic{}
	}
	es := buildEntities(r, s.cache)
	cands := x.candidates(r, es.resource)
	req, err := es.request(r, s.cache, cands.usesArgs())
	if err != nil {
		d.Reasons = []string{err.Error() + ": denied"}
		return d, cedar.Diagnostic{}
	}
	dec, diag := cedar.Authorize(cands, es, req)
	// The index changes the order of evaluation: report in set order.
	slices.SortFunc(diag.Errors, func(a, b cedar.DiagnosticError) int {
		return s.byID[string(a.PolicyID)].index - s.byID[string(b.PolicyID)].index
	})
	slices.SortFunc(diag.Reasons, func(a, b cedar.DiagnosticReason) int {
		return s.byID[string(a.PolicyID)].index - s.byID[string(b.PolicyID)].index
	})
	if len(diag.Errors) > 0 {
		// Policy error → deny, whatever the other policies say: a forbid
		// that cannot be evaluated must not let a request through.
		for _, e := range diag.Errors {
			id := string(e.PolicyID)
			if !slices.Contains(d.Policies, id) {
				d.Policies = append(d.Policies, id)
			}
			d.Errors = append(d.Errors, id+": "+e.Message)
			d.Reasons = append(d.Reasons, fmt.Sprintf("policy %s failed to evaluate (%s): a policy error denies", id, e.Message))
		}
		return d, diag
	}
	if len(diag.Reasons) == 0 {
		d.Reasons = []string{"no policy permits " + r.Action + ": denied by default"}
		return d, diag
	}
	d.Allow = dec == cedar.Allow
	for _, reason := range diag.Reasons {
		e := s.byID[string(reason.PolicyID)]
		d.Policies = append(d.Policies, e.id)
		switch {
		case e.reason != "":
			d.Reasons = append(d.Reasons, e.reason)
		case d.Allow:
			d.Reasons = append(d.Reasons, "permitted by "+e.id)
		default:
			d.Reasons = append(d.Reasons, "forbidden by "+e.id)
		}
		if !d.Allow {
			continue
		}
		if e.approval {
			d.NeedsApproval = true
		}
		if e.maxTTL > 0 && (d.MaxTTL == 0 || e.maxTTL < d.MaxTTL) {
			d.MaxTTL = e.maxTTL
		}
	}
	if d.NeedsApproval {
		d.Reasons = append(d.Reasons, ReasonApproval)
	}
	return d, diag
}

// ReasonApproval is the last of a decision's reasons when it needs
// approval.
const ReasonApproval = "a person must approve first"
