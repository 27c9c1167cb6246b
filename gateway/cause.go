package gateway

import (
	"context"

	"github.com/mandatehq/mandate/policy"
)

// Why a request was refused, as its decision event's details "cause"
// says, where it is the caller's own asking: the monitor counts these
// refusals as probing (repeated-denials), and no other (docs/monitor.md).
// A refusal that the system or someone else caused (the audit log or the
// store unavailable, a tool whose definition changed, a method the gateway
// does not pass, a person's no, a task held or stopped by the monitor)
// carries no cause of these: an agent is not quarantined for it.
const (
	// causeScope: the mandate's scopes do not cover what was asked.
	causeScope = "scope"
	// causePolicy: policy refuses the request for what it asks.
	causePolicy = "policy"
	// causeRisk: policy refuses it only because of the risk score, which
	// others may have raised (whoever presents a task's stolen mandates
	// raises the task's risk, not its agent's).
	causeRisk = "risk"
)

// policyCause says why policy denied req: for what it asks, or only for
// its risk (the same request at risk 0 is allowed).
func (g *Gateway) policyCause(ctx context.Context, req policy.Request) string {
	if req.Risk <= 0 {
		return causePolicy
	}
	req.Risk = 0
	if g.cfg.Policy.Decide(ctx, req).Allow {
		return causeRisk
	}
	return causePolicy
}
