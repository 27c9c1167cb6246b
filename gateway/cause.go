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
// carries no cause, or one the monitor does not count (risk, task): an
// agent is not quarantined for it.
const (
	// causeScope: the mandate's scopes do not cover what was asked.
	causeScope = "scope"
	// causePolicy: policy refuses the request for what it asks.
	causePolicy = "policy"
	// causeRisk: policy refuses it only because of the risk score, which
	// others may have raised (whoever presents a task's stolen mandates
	// raises the task's risk, not its agent's).
	causeRisk = "risk"
	// causeTask: policy refuses it only because of what the task did
	// before (context.labels and context.history), which any agent of the
	// task may have caused: a sibling's read of confidential data, the
	// sends its other agents made.
	causeTask = "task"
)

// policyCause says why policy denied req: for what it asks, only for its
// risk (the same request at risk 0 is allowed), or only for what its
// task did before (allowed at risk 0 with the task's labels and counters
// taken away). own are the labels of req that the request itself carries
// (the secrets in its arguments), which stay.
func (g *Gateway) policyCause(ctx context.Context, req policy.Request, own []string) string {
	if req.Risk > 0 {
		req.Risk = 0
		if g.cfg.Policy.Decide(ctx, req).Allow {
			return causeRisk
		}
	}
	if len(req.History) == 0 && len(req.Labels) == len(own) {
		return causePolicy
	}
	req.History, req.Labels = nil, own
	if g.cfg.Policy.Decide(ctx, req).Allow {
		return causeTask
	}
	return causePolicy
}
