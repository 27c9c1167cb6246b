package issuer_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/policy"
)

// usePolicy makes the fixture's issuer decide with the policy set text.
func (f *fixture) usePolicy(text string) *policy.Engine {
	f.t.Helper()
	dir := filepath.Join(f.t.TempDir(), "policies")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "test.cedar"), []byte(text), 0o600); err != nil {
		f.t.Fatal(err)
	}
	e, err := policy.Open(policy.Config{Dir: dir, Now: f.clk.Now})
	if err != nil {
		f.t.Fatal(err)
	}
	f.policy = e
	f.newIssuer()
	return e
}

// lastEvent returns the newest audit event of a type.
func (f *fixture) lastEvent(typ string) *mandate.Event {
	f.t.Helper()
	evs, err := f.store.Events(context.Background(), mandate.EventFilter{Type: typ, Last: true, Limit: 1})
	if err != nil || len(evs) == 0 {
		f.t.Fatalf("no %s event: %v", typ, err)
	}
	return evs[0].Event
}

const mintPolicies = `
@id("mint-root")
permit (principal is Agent, action == Action::"MintRoot", resource is Task)
when { !principal.ephemeral };

@id("no-email-tasks")
@reason("no task may send e-mail")
forbid (principal, action == Action::"MintRoot", resource)
when { context.scopes.contains("mcp:email:send") };

@id("quick-tasks")
@max_ttl_ms("1000")
permit (principal, action == Action::"MintRoot", resource)
when { context.purpose == "quick" };

@id("delegate-once")
permit (principal, action == Action::"Delegate", resource)
when { context.depth <= 2 };
`

// Policy decides every root mint: a forbid refuses with access_denied and
// a decision event naming the policy and the set, without issuing or
// burning the assertion; an allowed mint's event names what allowed it;
// @max_ttl_ms cuts the lifetime.
func TestPolicyDecidesMintRoot(t *testing.T) {
	f := newFixture(t)
	e := f.usePolicy(mintPolicies)
	hash := e.Set().Hash()
	ctx := context.Background()

	tok, err := f.is.MintRoot(ctx, f.request(nil))
	if err != nil {
		t.Fatal(err)
	}
	ev := f.lastEvent(mandate.EventMandateIssued)
	if ev.Mandate != tok.Claims.ID || ev.Details["policy_set"] != hash || fmt.Sprint(ev.Details["policies"]) != "[mint-root]" {
		t.Errorf("issued event details %v, want policy_set %s and policies [mint-root]", ev.Details, hash)
	}

	issued, decisions := f.log.count(), f.events(mandate.EventDecision)
	assertion := f.assertion(nil)
	_, err = f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.ClientAssertion, r.Scope = assertion, "mcp:email:send" }))
	var denied *issuer.DeniedError
	if !errors.As(err, &denied) || oauthOf(err) != "access_denied" || !strings.Contains(err.Error(), "no-email-tasks") ||
		!strings.Contains(err.Error(), "no task may send e-mail") {
		t.Fatalf("forbidden mint: %v", err)
	}
	if f.log.count() != issued {
		t.Error("a denied mint was issued")
	}
	if f.events(mandate.EventDecision) != decisions+1 {
		t.Fatal("the denial is not audited")
	}
	ev = f.lastEvent(mandate.EventDecision)
	if ev.Action != "mint" || ev.Outcome != mandate.OutcomeDeny || ev.Agent != agentID || ev.Details["policy_set"] != hash ||
		fmt.Sprint(ev.Details["policies"]) != "[no-email-tasks]" || ev.Details["error"] != "access_denied" {
		t.Errorf("decision event %+v", ev)
	}
	// The refused request did not use the assertion up.
	if _, err := f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.ClientAssertion = assertion })); err != nil {
		t.Fatalf("the assertion of a denied request: %v", err)
	}

	tok, err = f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.TaskPurpose, r.TTL = "quick", 5*time.Second }))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Lifetime; got != time.Second {
		t.Errorf("lifetime %v under @max_ttl_ms 1000", got)
	}
	if ev := f.lastEvent(mandate.EventMandateIssued); fmt.Sprint(ev.Details["max_ttl_ms"]) != "1000" {
		t.Errorf("issued event details %v lack max_ttl_ms", ev.Details)
	}

	// Delegation: depth 2 is permitted, depth 3 is not (default deny).
	root := f.root("mcp:crm:*", time.Minute, false)
	child, err := f.delegate(root, f.key, newKey(t), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if ev := f.lastEvent(mandate.EventMandateDelegated); fmt.Sprint(ev.Details["policies"]) != "[delegate-once]" {
		t.Errorf("delegated event details %v", ev.Details)
	}
	_, err = f.delegate(child, nil, newKey(t), "", nil)
	if !errors.As(err, &denied) || oauthOf(err) != "access_denied" || !strings.Contains(err.Error(), "denied by default") {
		t.Fatalf("depth 3: %v", err)
	}
	ev = f.lastEvent(mandate.EventDecision)
	if ev.Action != "delegate" || ev.Mandate != child.Claims.ID || ev.Details["policy_set"] != hash || ev.Details["outcome"] != "deny" {
		t.Errorf("decision event %+v", ev)
	}
}

// A permit annotated @approval("required") makes a root mint wait for a
// person: the approval reserves the task, the agent's owner decides, and
// the approved request (polled with a fresh assertion) gets its mandate
// once.
func TestPolicyApprovalMintRoot(t *testing.T) {
	f := newFixture(t)
	f.usePolicy(`
@id("mint")
permit (principal, action == Action::"MintRoot", resource)
unless { context.scopes.contains("mcp:crm:delete_customer") };

@id("deleting-needs-a-person")
@approval("required")
@reason("a task that deletes customers needs its owner's approval")
permit (principal, action == Action::"MintRoot", resource)
when { context.scopes.contains("mcp:crm:delete_customer") };
`)
	ctx := context.Background()
	gated := func(r *issuer.RootRequest) { r.Scope, r.TTL = "mcp:crm:delete_customer", time.Minute }
	_, err := f.is.MintRoot(ctx, f.request(gated))
	var pending *issuer.PendingError
	if !errors.As(err, &pending) || oauthOf(err) != "authorization_pending" || !strings.Contains(err.Error(), "fresh client assertion") {
		t.Fatalf("gated mint: %v", err)
	}
	ap := pending.Approval
	if ap.ParentMandate != "" || ap.Task == "" || fmt.Sprint(ap.Approvers) != "[alice@example.org]" ||
		!strings.Contains(ap.Reason, "deleting-needs-a-person") {
		t.Errorf("approval %+v", ap)
	}
	if ev := f.lastEvent(mandate.EventApprovalRequested); ev.Action != "mint" || ev.Task != ap.Task || ev.Details["purpose"] != "weekly report" {
		t.Errorf("approval.requested event %+v", ev)
	}
	withID := func(r *issuer.RootRequest) { gated(r); r.ApprovalID = ap.ID }
	if _, err := f.is.MintRoot(ctx, f.request(withID)); !errors.As(err, &pending) {
		t.Fatalf("poll before the decision: %v", err)
	}
	if _, err := f.is.Decide(ctx, ap.ID, "alice@example.org", true, ""); err != nil {
		t.Fatal(err)
	}
	// Bound to its request.
	for name, mod := range map[string]func(*issuer.RootRequest){
		"other scopes":  func(r *issuer.RootRequest) { withID(r); r.Scope = "mcp:crm:delete_customer mcp:crm:list_customers" },
		"other purpose": func(r *issuer.RootRequest) { withID(r); r.TaskPurpose = "something else" },
		"other ttl":     func(r *issuer.RootRequest) { withID(r); r.TTL = 2 * time.Minute },
	} {
		if _, err := f.is.MintRoot(ctx, f.request(mod)); oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), "another request") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.ApprovalID = ap.ID })); oauthOf(err) != "invalid_request" {
		t.Errorf("approval_id on a request that needs none: %v", err)
	}
	tok, err := f.is.MintRoot(ctx, f.request(withID))
	if err != nil {
		t.Fatalf("approved: %v", err)
	}
	if tok.Claims.Task != ap.Task {
		t.Errorf("task %s, want the approval's %s", tok.Claims.Task, ap.Task)
	}
	if ev := f.lastEvent(mandate.EventMandateIssued); ev.Details["approval"] != ap.ID || ev.Task != ap.Task {
		t.Errorf("issued event %+v", ev)
	}
	if _, err := f.is.MintRoot(ctx, f.request(withID)); oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), "used already") {
		t.Errorf("approval reused: %v", err)
	}
}

// Policy approval and lifetime caps apply to delegation too: the
// delegating agents' approvers decide, and the child lives no longer than
// @max_ttl_ms allows.
func TestPolicyApprovalAndCapDelegate(t *testing.T) {
	f := newFixture(t)
	f.usePolicy(`
@id("mint")
permit (principal, action == Action::"MintRoot", resource);

@id("delegate")
permit (principal, action == Action::"Delegate", resource);

@id("ephemeral-briefly")
@max_ttl_ms("2000")
permit (principal, action == Action::"Delegate", resource)
when { principal.ephemeral };

@id("deleting-needs-a-person")
@approval("required")
permit (principal, action == Action::"Delegate", resource)
when { context.scopes.contains("mcp:crm:delete_customer") };
`)
	ctx := context.Background()
	root := f.root("mcp:crm:*", time.Minute, false)
	child, err := f.delegate(root, f.key, newKey(t), "", func(r *issuer.DelegateRequest) { r.TTL = 30 * time.Second })
	if err != nil {
		t.Fatal(err)
	}
	if got := child.Lifetime; got != 2*time.Second {
		t.Errorf("ephemeral child lives %v under @max_ttl_ms 2000", got)
	}
	sub := newKey(t)
	gated := func(r *issuer.DelegateRequest) { r.Scope = "mcp:crm:delete_customer" }
	_, err = f.delegate(root, f.key, sub, "", gated)
	var pending *issuer.PendingError
	if !errors.As(err, &pending) {
		t.Fatalf("gated delegation: %v", err)
	}
	ap := pending.Approval
	if fmt.Sprint(ap.Approvers) != "[alice@example.org]" || !strings.Contains(ap.Reason, "deleting-needs-a-person") {
		t.Errorf("approval %+v", ap)
	}
	if _, err := f.is.Decide(ctx, ap.ID, "alice@example.org", true, ""); err != nil {
		t.Fatal(err)
	}
	tok, err := f.delegate(root, f.key, sub, "", func(r *issuer.DelegateRequest) { gated(r); r.ApprovalID = ap.ID })
	if err != nil {
		t.Fatalf("approved: %v", err)
	}
	ev := f.lastEvent(mandate.EventMandateDelegated)
	if ev.Mandate != tok.Claims.ID || ev.Details["approval"] != ap.ID ||
		fmt.Sprint(ev.Details["policies"]) != "[delegate ephemeral-briefly deleting-needs-a-person]" {
		t.Errorf("delegated event details %v", ev.Details)
	}
}

// A refused mint of an authenticated agent is a decision event; the
// refusals of a replayed assertion, which anyone who saw it can send, are
// rate-limited so that they cannot flood the log.
func TestMintRefusalsAudited(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	before := f.events(mandate.EventDecision)
	if _, err := f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.Scope = "mcp:github:delete_repo" })); oauthOf(err) != "invalid_scope" {
		t.Fatalf("outside the ceiling: %v", err)
	}
	ev := f.lastEvent(mandate.EventDecision)
	if f.events(mandate.EventDecision) != before+1 || ev.Action != "mint" || ev.Agent != agentID || ev.Details["error"] != "invalid_scope" {
		t.Fatalf("refusal event %+v", ev)
	}
	req := f.request(nil)
	if _, err := f.is.MintRoot(ctx, req); err != nil {
		t.Fatal(err)
	}
	before = f.events(mandate.EventDecision)
	for range 300 {
		if _, err := f.is.MintRoot(ctx, req); oauthOf(err) != "invalid_client" {
			t.Fatalf("replay: %v", err)
		}
	}
	if n := f.events(mandate.EventDecision) - before; n == 0 || n > 150 {
		t.Errorf("%d decision events for 300 replays of one assertion", n)
	}
}
