package issuer_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/issuer"
)

const helperID = "spiffe://example.org/agent/helper"

// bobsHelper registers bob's agent helper, whose own rule says that
// delegating deletions needs approval (by its owner, bob), and delegates
// alice's task to it: it returns the helper's mandate and key.
func bobsHelper(f *fixture) (*issuer.Token, *issuer.Token) {
	f.t.Helper()
	hk := newKey(f.t)
	f.addAgent("helper", "mcp:crm:*", hk, func(a *mandate.Agent) {
		a.Owner = "bob@example.org"
		a.Approval, _ = mandate.ParseScopeSet("mcp:crm:delete_*")
	})
	root := f.root("mcp:crm:*", time.Minute, false)
	helper, err := f.delegate(root, f.key, hk, helperID, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	f.helperKey = hk
	return root, helper
}

// pendingOf returns the approval a request is told to wait for.
func pendingOf(t *testing.T, err error) *mandate.Approval {
	t.Helper()
	var p *issuer.PendingError
	if !errors.As(err, &p) {
		t.Fatalf("want a pending approval: %v", err)
	}
	return p.Approval
}

// Bob's agent, delegated into alice's task, asks to delegate a deletion
// that its own rule gates: alice's side decides, not bob. Bob is refused
// (and the attempt audited), alice approves, and the delegation goes
// through. What the approval shows: the chain, the task's purpose.
func TestNobodyApprovesTheirOwnAgentsDelegation(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, helper := bobsHelper(f)
	sub := newKey(t)
	gated := func(r *issuer.DelegateRequest) { r.Scope = "mcp:crm:delete_customer" }
	_, err := f.delegate(helper, f.helperKey, sub, "", gated)
	ap := pendingOf(t, err)
	if !slices.Equal(ap.Approvers, []string{"alice@example.org"}) {
		t.Errorf("approvers %v, want alice's side only", ap.Approvers)
	}
	if ap.Action != mandate.ApprovalDelegate || !slices.Equal(ap.Chain, []string{helperID, agentID}) || ap.Purpose != "weekly report" {
		t.Errorf("what the approver sees: action %q chain %v purpose %q", ap.Action, ap.Chain, ap.Purpose)
	}
	if ev := f.lastEvent(mandate.EventApprovalRequested); ev.Details["purpose"] != "weekly report" || !slices.Equal(ev.Chain, ap.Chain) {
		t.Errorf("approval.requested event %+v", ev)
	}
	before := f.events(mandate.EventDecision)
	_, err = f.is.Decide(ctx, ap.ID, "bob@example.org", true, "my agent, my call")
	if mandate.ErrorCode(err) != mandate.EFORBIDDEN {
		t.Fatalf("bob approved his own agent's request: %v", err)
	}
	if ev := f.lastEvent(mandate.EventDecision); f.events(mandate.EventDecision) != before+1 || ev.By != "user:bob@example.org" || ev.Outcome != mandate.OutcomeDeny {
		t.Errorf("bob's attempt is not audited: %+v", ev)
	}
	if _, err := f.is.Decide(ctx, ap.ID, "alice@example.org", true, "fine"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.delegate(helper, f.helperKey, sub, "", func(r *issuer.DelegateRequest) { gated(r); r.ApprovalID = ap.ID }); err != nil {
		t.Fatalf("approved by alice: %v", err)
	}
}

// The rule holds when a person decides and when the approval is used,
// whatever list the approval was stored with.
func TestApprovalRuleCheckedAtDecisionAndUse(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	_, helper := bobsHelper(f)
	// An approval as the lists were made before: bob among its approvers.
	now := f.clk.Now()
	legacy := &mandate.Approval{ID: mandate.NewID(mandate.ApprovalIDPrefix, now), Action: mandate.ApprovalDelegate, Task: helper.Claims.Task,
		ParentMandate: helper.Claims.ID, Agent: helperID, Actor: "jkt:x", Subject: "user:alice@example.org",
		Scope: "mcp:crm:delete_customer", Audience: []string{"mcp:crm"}, Reason: "old rule",
		Approvers: []string{"alice@example.org", "bob@example.org"}, RequestHash: "h", CreatedAt: now, ExpiresAt: now.Add(time.Minute)}
	if err := f.store.CreateApproval(ctx, legacy, mandate.ApprovalLimits{}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.is.Decide(ctx, legacy.ID, "bob@example.org", true, ""); mandate.ErrorCode(err) != mandate.EFORBIDDEN ||
		!strings.Contains(err.Error(), "own agent") {
		t.Fatalf("bob decided a legacy approval: %v", err)
	}
	// An approval that bob approved behind the issuer's back (straight in
	// the store) allows nothing.
	sub := newKey(t)
	gated := func(r *issuer.DelegateRequest) { r.Scope = "mcp:crm:delete_customer" }
	_, err := f.delegate(helper, f.helperKey, sub, "", gated)
	ap := pendingOf(t, err)
	if _, err := f.store.DecideApproval(ctx, ap.ID, mandate.ApprovalApproved, "user:bob@example.org", "", now, nil); err != nil {
		t.Fatal(err)
	}
	_, err = f.delegate(helper, f.helperKey, sub, "", func(r *issuer.DelegateRequest) { gated(r); r.ApprovalID = ap.ID })
	if oauthOf(err) != "access_denied" || !strings.Contains(err.Error(), "allows nothing") {
		t.Fatalf("an approval decided by bob was used: %v", err)
	}
}

// Nobody decides a delegation to their own agent either: alice's lead
// names bob and carol to approve deletions; delegated to bob's agent,
// only carol decides.
func TestRecipientsOwnerDoesNotApprove(t *testing.T) {
	f := newFixture(t)
	lk, hk := newKey(t), newKey(t)
	f.addAgent("lead", "mcp:crm:*", lk, func(a *mandate.Agent) {
		a.Owner = "alice@example.org"
		a.Approval, _ = mandate.ParseScopeSet("mcp:crm:delete_*")
		a.Approvers = []string{"bob@example.org", "carol@example.org"}
	})
	f.addAgent("helper", "mcp:crm:*", hk, func(a *mandate.Agent) { a.Owner = "bob@example.org" })
	root := f.root("mcp:crm:*", time.Minute, false)
	lead, err := f.delegate(root, f.key, lk, "spiffe://example.org/agent/lead", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.delegate(lead, lk, hk, helperID, func(r *issuer.DelegateRequest) { r.Scope = "mcp:crm:delete_customer" })
	ap := pendingOf(t, err)
	if !slices.Equal(ap.Approvers, []string{"carol@example.org"}) {
		t.Errorf("approvers %v, want carol only", ap.Approvers)
	}
	if _, err := f.is.Decide(context.Background(), ap.ID, "bob@example.org", true, ""); mandate.ErrorCode(err) != mandate.EFORBIDDEN {
		t.Errorf("bob approved a delegation to his own agent: %v", err)
	}
}

// One agent cannot bury the approvals of others: past its limit of
// pending approvals, a request is refused clearly, audited, and files
// nothing; others still get theirs.
func TestPendingApprovalLimits(t *testing.T) {
	f := newFixture(t)
	f.limits = mandate.ApprovalLimits{PerAgent: 2, PerTask: 5}
	f.newIssuer()
	_, helper := bobsHelper(f)
	ask := func() error {
		_, err := f.delegate(helper, f.helperKey, newKey(t), "", func(r *issuer.DelegateRequest) { r.Scope = "mcp:crm:delete_customer" })
		return err
	}
	for range 2 {
		pendingOf(t, ask())
	}
	before := f.events(mandate.EventDecision)
	err := ask()
	if oauthOf(err) != "access_denied" || !strings.Contains(err.Error(), "waiting for a person's approval already") {
		t.Fatalf("a request past the limit: %v", err)
	}
	if ev := f.lastEvent(mandate.EventDecision); f.events(mandate.EventDecision) != before+1 || ev.Details["error"] != "access_denied" || ev.Agent != helperID {
		t.Errorf("the refusal is not audited: %+v", ev)
	}
	if list, _ := f.store.Approvals(context.Background(), mandate.ApprovalFilter{Status: mandate.ApprovalPending}); len(list) != 2 {
		t.Errorf("%d pending approvals, want 2", len(list))
	}
	// Another agent of the same task is bound by the task's limit only.
	f.clk.Advance(time.Millisecond)
	root := f.root("mcp:crm:*", time.Minute, false)
	_, err = f.delegate(root, f.key, newKey(t), "", func(r *issuer.DelegateRequest) { r.Scope = "mcp:crm:get_customer" })
	if err != nil {
		t.Fatal(err)
	}
}

// ExpireApprovals denies every approval whose time ran out, however many
// wait (not only the newest thousand).
func TestExpireApprovalsAll(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	const n = 1005
	now := f.clk.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := now.Add(time.Duration(i) * time.Microsecond)
			a := &mandate.Approval{ID: mandate.NewID(mandate.ApprovalIDPrefix, at), Action: mandate.ApprovalMint, Task: fmt.Sprintf("t_%d", i),
				Agent: fmt.Sprintf("spiffe://example.org/agent/a%d", i), Actor: "x", Subject: "user:alice@example.org",
				Approvers: []string{"alice@example.org"}, RequestHash: "h", CreatedAt: at, ExpiresAt: at.Add(time.Second)}
			errs <- f.store.CreateApproval(ctx, a, mandate.ApprovalLimits{}, nil)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	f.clk.Advance(time.Minute)
	if got, err := f.is.ExpireApprovals(ctx); err != nil || got != n {
		t.Fatalf("ExpireApprovals: %d %v, want %d", got, err, n)
	}
}
