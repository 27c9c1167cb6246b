package mandate

import "context"

// Settler is an enforcement point's registry of effects in flight: the
// gateway's requests to its upstreams. A revoker (a revocation, an agent
// disabled) calls Settle once its change is in force, and answers only
// after it returned, so that nothing of what it stopped reaches an
// upstream after the answer, as an RCU grace period waits out the readers
// that started before it.
type Settler interface {
	// Settle returns once every effect in flight whose mandate is no longer
	// valid has been sent whole or cut off: each such effect passed its
	// last check before the change, and none can start after it. Effects
	// still being sent at the implementation's bound are cut off (never
	// sent whole) and counted as Stopped. Settle never fails: ctx ending
	// cuts off what is left at once.
	Settle(ctx context.Context) Settled
}

// Settled says what a Settle waited for.
type Settled struct {
	// Sent counts the effects of no longer valid mandates that were being
	// sent when Settle began and were sent whole before it returned.
	Sent int `json:"sent"`
	// Stopped counts those still being sent at the bound, which were cut
	// off: their requests did not reach the upstream whole.
	Stopped int `json:"stopped"`
	// Unconfirmed counts those cut off that had not yet confirmed they
	// stopped when Settle returned (an upstream connection that does not
	// close at once); they cannot complete their request, but a part of it
	// may still be on its way.
	Unconfirmed int `json:"unconfirmed,omitempty"`
}

// Add returns the sum of s and o.
func (s Settled) Add(o Settled) Settled {
	return Settled{Sent: s.Sent + o.Sent, Stopped: s.Stopped + o.Stopped, Unconfirmed: s.Unconfirmed + o.Unconfirmed}
}
