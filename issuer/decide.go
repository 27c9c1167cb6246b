package issuer

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
)

// DeniedError is a refusal by policy: OAuth access_denied (RFC 6749
// §5.2), with the decision that denied, so that its audit event can name
// the determining policies and the policy set.
type DeniedError struct {
	Action   string // policy.ActionMintRoot or policy.ActionDelegate
	Decision policy.Decision
}

func (e *DeniedError) Error() string {
	why := strings.Join(e.Decision.Reasons, "; ")
	if len(e.Decision.Policies) == 0 { // a default deny says so itself
		if why == "" {
			why = "no policy permits " + e.Action
		}
		return "policy denies " + e.Action + ": " + why
	}
	return "policy " + strings.Join(e.Decision.Policies, ", ") + " denies " + e.Action + ": " + why
}

// Unwrap lets mandate.ErrorCode and the OAuth mapping see it as
// access_denied.
func (e *DeniedError) Unwrap() error {
	return &mandate.Error{Code: mandate.EFORBIDDEN, OAuth: "access_denied", Message: e.Error()}
}

// decision asks policy about r. Without a Config.Policy it allows
// unconditionally: only the ceilings and the attenuation rules apply.
// ok is false when there is no policy to ask.
func (is *Issuer) decision(ctx context.Context, r policy.Request) (d policy.Decision, ok bool) {
	if is.cfg.Policy == nil {
		return policy.Decision{Allow: true}, false
	}
	return is.cfg.Policy.Decide(ctx, r), true
}

// agentInfo describes agent to policy; for an ephemeral agent id, reg is
// the registered agent it descends from.
func agentInfo(id string, reg *mandate.Agent) policy.AgentInfo {
	return policy.AgentInfo{
		ID: id, Name: reg.Name, Owner: reg.Owner, Labels: reg.Labels,
		Ephemeral: id != reg.ID, Registered: reg.ID,
	}
}

// policyApproval returns the approval rule that a decision needing
// approval adds: the determining policies' reasons. Who decides is
// mandate.ApprovalParties' rule, with no agent's own rule asking.
func policyApproval(d policy.Decision) string {
	rule := "policy " + strings.Join(d.Policies, ", ") + " requires approval"
	reasons := d.Reasons
	if n := len(reasons); n > 0 && reasons[n-1] == policy.ReasonApproval {
		reasons = reasons[:n-1]
	}
	if len(reasons) > 0 {
		rule += ": " + strings.Join(reasons, "; ")
	}
	return rule
}

// joinRules joins the reasons two rules give for an approval.
func joinRules(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// policyDetails adds what decided an allowed issuance to its event's
// details: the policy set's hash and the determining policies.
func policyDetails(details map[string]any, d policy.Decision) {
	audit := d.AuditDetails()
	details["policy_set"] = audit["policy_set"]
	details["policies"] = audit["policies"]
	if v, ok := audit["max_ttl_ms"]; ok {
		details["max_ttl_ms"] = v
	}
}

// capTTL cuts ttl to a decision's lifetime cap (@max_ttl_ms).
func capTTL(ttl time.Duration, d policy.Decision) time.Duration {
	if d.MaxTTL > 0 && ttl > d.MaxTTL {
		return d.MaxTTL
	}
	return ttl
}

// oauthCodeOf returns the OAuth error code err carries, or "".
func oauthCodeOf(err error) string {
	var e *mandate.Error
	if errors.As(err, &e) {
		return e.OAuth
	}
	return ""
}

// refusalEvent is the decision event of a refused mint or delegation:
// the OAuth error, and for a policy denial the decision's details.
func refusalEvent(action string, err error, now time.Time) *mandate.Event {
	ev := &mandate.Event{
		V: mandate.EventVersion, Time: now.UnixNano(), Type: mandate.EventDecision,
		Action: action, Outcome: mandate.OutcomeDeny, Reason: mandate.ClipReason(mandate.ErrorMessage(err)),
	}
	if de, ok := err.(*DeniedError); ok {
		ev.Details = de.Decision.AuditDetails()
		ev.Details["error"] = "access_denied"
	} else if e, ok := err.(*mandate.Error); ok && e.OAuth != "" {
		ev.Details = map[string]any{"error": e.OAuth}
	}
	return ev
}
