package issuer_test

import (
	"context"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/issuer"
)

// A delegation of a DPoP-bound parent refused for its proof is recorded
// as a refusal of that parent naming the check, as the gateway names it:
// whether the sender proved the parent's key. A sender looping on one
// parent and check is recorded once a minute.
func TestDelegationProofRefusals(t *testing.T) {
	f := newFixture(t)
	thief := newKey(t)
	for _, tc := range []struct {
		name, check string
		proof       func() string
	}{
		{"no proof", "dpop-bearer", func() string { return "" }},
		{"the thief's key", "dpop-key", func() string { return dpop.NewProof(thief, "POST", tokenURL, "", f.clk.Now()) }},
		{"garbage", "dpop-key", func() string { return "not.a.proof" }},
		{"the holder's proof for another URL", "dpop-proof", func() string { return dpop.NewProof(f.key, "POST", tokenURL+"x", "", f.clk.Now()) }},
		{"the holder's stale proof", "dpop-proof", func() string {
			return dpop.NewProof(f.key, "POST", tokenURL, "", f.clk.Now().Add(-time.Hour))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := f.root("mcp:crm:list", time.Minute, true)
			for range 3 { // a loop on one parent: recorded once
				if _, err := f.delegate(parent, f.key, newKey(t), "", func(r *issuer.DelegateRequest) { r.DPoP = tc.proof() }); oauthOf(err) != "invalid_dpop_proof" {
					t.Fatalf("%v", err)
				}
			}
			got := refusalsOf(t, f, parent.Claims.ID)
			if len(got) != 1 || got[0].Details["refused"] != tc.check || got[0].Task != parent.Claims.Task || got[0].Action != "delegate" {
				t.Fatalf("refusals of %s: %+v", parent.Claims.ID, got)
			}
		})
	}
	t.Run("a replayed proof", func(t *testing.T) {
		parent := f.root("mcp:crm:list", time.Minute, true)
		proof := dpop.NewProof(f.key, "POST", tokenURL, "", f.clk.Now())
		if _, err := f.delegate(parent, f.key, newKey(t), "", func(r *issuer.DelegateRequest) { r.DPoP = proof }); err != nil {
			t.Fatal(err)
		}
		// The whole request again, fresh actor token and all: refused for
		// its proof, before anything is checked on the holder's authority.
		if _, err := f.delegate(parent, f.key, newKey(t), "", func(r *issuer.DelegateRequest) { r.DPoP = proof }); oauthOf(err) != "invalid_dpop_proof" {
			t.Fatalf("%v", err)
		}
		if got := refusalsOf(t, f, parent.Claims.ID); len(got) != 1 || got[0].Details["refused"] != "dpop-replay" {
			t.Fatalf("refusals: %+v", got)
		}
	})
}

// refusalsOf returns the refused delegations the audit log records of a
// parent mandate.
func refusalsOf(t *testing.T, f *fixture, parent string) []*mandate.Event {
	t.Helper()
	evs, err := f.store.Events(context.Background(), mandate.EventFilter{Type: mandate.EventDecision, Mandate: parent, Limit: mandate.MaxEventsPerQuery})
	if err != nil {
		t.Fatal(err)
	}
	var out []*mandate.Event
	for _, e := range evs {
		if e.Event.Outcome == mandate.OutcomeDeny {
			out = append(out, e.Event)
		}
	}
	return out
}
