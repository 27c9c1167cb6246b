package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
)

// agentWithFields returns an agent that uses the fields of delegation
// control (a depth limit, scopes needing approval, approvers) and labels.
func agentWithFields(name string) *mandate.Agent {
	a := NewAgent(name)
	a.MaxDepth = 3
	a.Approval, _ = mandate.ParseScopeSet("mcp:crm:delete_* http:crm:GET:/contacts/private/**")
	a.Approvers = []string{"bob@example.org", "carol@example.org"}
	a.Labels = []string{"team:payments", "batch", "tier.1"}
	return a
}

func checkAgentFields(t *testing.T, got, want *mandate.Agent) {
	t.Helper()
	if got.MaxDepth != want.MaxDepth || got.Approval.String() != want.Approval.String() || !slices.Equal(got.Approvers, want.Approvers) ||
		got.Ceiling.String() != want.Ceiling.String() || got.Owner != want.Owner {
		t.Errorf("agent %s: max depth %d, approval %q, approvers %q; want %d, %q, %q",
			got.Name, got.MaxDepth, got.Approval, got.Approvers, want.MaxDepth, want.Approval, want.Approvers)
	}
	// Labels keep their order: they are stored as given.
	if !slices.Equal(got.Labels, want.Labels) {
		t.Errorf("agent %s: labels %q, want %q", got.Name, got.Labels, want.Labels)
	}
}

// The fields of delegation control round-trip, through the cache and
// through the table; an agent without them reads back without them.
func testAgentFields(t *testing.T, s Store) {
	ctx := context.Background()
	a := agentWithFields("controlled")
	if err := s.CreateAgent(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	plain := NewAgent("plain")
	if err := s.CreateAgent(ctx, plain, nil); err != nil {
		t.Fatal(err)
	}
	want := *a
	want.Approvers, want.Labels = slices.Clone(a.Approvers), slices.Clone(a.Labels)
	a.Approvers[0] = "mallory@example.org" // the caller's slices are not the store's
	a.Labels[0] = "team:mallory"
	got, err := s.Agent(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkAgentFields(t, got, &want)
	list, err := s.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("Agents: %d, want 2", len(list))
	}
	checkAgentFields(t, list[0], &want)
	if p := list[1]; p.MaxDepth != 0 || len(p.Approval) != 0 || len(p.Approvers) != 0 || len(p.Labels) != 0 {
		t.Errorf("plain agent: max depth %d, approval %q, approvers %q, labels %q; want none", p.MaxDepth, p.Approval, p.Approvers, p.Labels)
	}
	// A disabled agent keeps them.
	up, err := s.SetAgentStatus(ctx, want.ID, mandate.AgentDisabled, nil)
	if err != nil {
		t.Fatal(err)
	}
	checkAgentFields(t, up, &want)

	bad := NewAgent("deep")
	bad.MaxDepth = mandate.MaxAgentDepth + 1
	wantCode(t, s.CreateAgent(ctx, bad, nil), mandate.EINVALID)
	bad = NewAgent("badapprover")
	bad.Approvers = []string{"bob example.org"}
	wantCode(t, s.CreateAgent(ctx, bad, nil), mandate.EINVALID)
	// A label with a space would not survive a space-separated column:
	// the store refuses it, as it refuses duplicates.
	for _, labels := range [][]string{{"two words"}, {"batch", "batch"}, {""}} {
		bad = NewAgent("badlabel")
		bad.Labels = labels
		wantCode(t, s.CreateAgent(ctx, bad, nil), mandate.EINVALID)
	}
}

// newApproval returns a valid pending approval of a delegation created
// at t0 + i ms.
func newApproval(i int, task string) *mandate.Approval {
	at := t0.Add(time.Duration(i) * time.Millisecond)
	a := mandate.AgentID("example.org", "a")
	return &mandate.Approval{
		ID: mandate.NewID(mandate.ApprovalIDPrefix, at), Status: mandate.ApprovalPending, Action: mandate.ApprovalDelegate, Task: task,
		ParentMandate: mandate.NewID(mandate.MandateIDPrefix, at), Agent: a,
		Actor: "jkt:abc", Subject: "user:alice@example.org", Chain: []string{a, mandate.AgentID("example.org", "root")},
		Purpose: "weekly cleanup, as asked", Risk: 35, Scope: "mcp:crm:delete_contact",
		Audience: []string{"mcp:crm", "mcp:mail"}, TTLMillis: 60000, Reason: "approval: mcp:crm:delete_*",
		Approvers: []string{"bob@example.org", "carol@example.org"}, RequestHash: fmt.Sprintf("hash-%d", i),
		CreatedAt: at, ExpiresAt: at.Add(10 * time.Minute),
	}
}

// newCallApproval returns a valid pending approval of a held tool call,
// with what the person deciding sees of it.
func newCallApproval(i int, task string) *mandate.Approval {
	a := newApproval(i, task)
	a.Action, a.Actor, a.TTLMillis = mandate.ApprovalToolCall, a.Agent, 0
	a.Scope, a.Audience, a.Server, a.Tool = "mcp:crm:delete_customer", []string{"mcp:crm"}, "crm", "delete_customer"
	a.Arguments = []byte(`{"name":"ada","token":"[secret:github_token]","n":[1,2.5e3]}`)
	a.ArgumentsBytes, a.ArgumentsShortened, a.Secrets = 70123, true, []string{"github_token"}
	return a
}

// approver registers email as an active approver, with no event, unless
// it is one already.
func approver(t *testing.T, s Store, email string) {
	t.Helper()
	h := sha256.Sum256([]byte("token of " + email))
	err := s.CreateApprover(context.Background(), &mandate.Approver{Email: email, TokenHash: h[:], CreatedAt: t0}, nil)
	if err != nil && mandate.ErrorCode(err) != mandate.ECONFLICT {
		t.Fatal(err)
	}
}

func create(t *testing.T, s Store, a *mandate.Approval, ev *mandate.Event) {
	t.Helper()
	if err := s.CreateApproval(context.Background(), a, mandate.ApprovalLimits{}, ev); err != nil {
		t.Fatal(err)
	}
}

func checkApproval(t *testing.T, got, want *mandate.Approval) {
	t.Helper()
	if got.Action != want.Action || !slices.Equal(got.Chain, want.Chain) || got.Purpose != want.Purpose || got.Risk != want.Risk ||
		got.Server != want.Server || got.Tool != want.Tool || string(got.Arguments) != string(want.Arguments) ||
		got.ArgumentsBytes != want.ArgumentsBytes || got.ArgumentsShortened != want.ArgumentsShortened || !slices.Equal(got.Secrets, want.Secrets) {
		t.Errorf("approval %s, what the approver sees:\ngot  %+v\nwant %+v", want.ID, got, want)
	}
	if got.ID != want.ID || got.Status != want.Status || got.Task != want.Task || got.ParentMandate != want.ParentMandate ||
		got.Agent != want.Agent || got.Actor != want.Actor || got.Subject != want.Subject || got.Scope != want.Scope ||
		!slices.Equal(got.Audience, want.Audience) || got.TTLMillis != want.TTLMillis || got.Reason != want.Reason ||
		!slices.Equal(got.Approvers, want.Approvers) || got.RequestHash != want.RequestHash ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) || !got.DecidedAt.Equal(want.DecidedAt) ||
		got.DecidedBy != want.DecidedBy || got.Note != want.Note {
		t.Errorf("approval:\ngot  %+v\nwant %+v", got, want)
	}
}

func approvalEvent(typ string, a *mandate.Approval) *mandate.Event {
	ev := event(typ, a.Task, "", a.Agent)
	ev.Details = map[string]any{"approval": a.ID}
	return ev
}

func logSize(s Store) int64 {
	size, _ := s.LogHead()
	return size
}

func testApprovals(t *testing.T, s Store) {
	ctx := context.Background()
	for _, p := range []string{"bob@example.org", "carol@example.org"} {
		approver(t, s, p)
	}
	a := newApproval(1, "t_1")
	create(t, s, a, approvalEvent(mandate.EventApprovalRequested, a))
	wantCode(t, s.CreateApproval(ctx, a, mandate.ApprovalLimits{}, approvalEvent(mandate.EventApprovalRequested, a)), mandate.ECONFLICT)
	for name, mod := range map[string]func(*mandate.Approval){
		"decided":            func(a *mandate.Approval) { a.Status = mandate.ApprovalApproved },
		"unbound":            func(a *mandate.Approval) { a.RequestHash = "" },
		"no id":              func(a *mandate.Approval) { a.ID = "" },
		"bad approver":       func(a *mandate.Approval) { a.Approvers = []string{"not an email"} },
		"no action":          func(a *mandate.Approval) { a.Action = "" },
		"unknown action":     func(a *mandate.Approval) { a.Action = "resources/read" },
		"no agent":           func(a *mandate.Approval) { a.Agent = "" },
		"arguments not JSON": func(a *mandate.Approval) { a.Arguments = []byte(`{"a":`) },
		"arguments too long": func(a *mandate.Approval) {
			a.Arguments = []byte(`"` + strings.Repeat("x", mandate.MaxApprovalArguments) + `"`)
		},
		"chain with a space": func(a *mandate.Approval) { a.Chain = []string{"a b"} },
		"bad limits":         func(a *mandate.Approval) { a.Risk = -1 }, // the limits below
	} {
		b := newApproval(2, "t_1")
		mod(b)
		lim := mandate.ApprovalLimits{}
		if name == "bad limits" {
			lim.PerTask = -1
		}
		if err := s.CreateApproval(ctx, b, lim, approvalEvent(mandate.EventApprovalRequested, b)); mandate.ErrorCode(err) != mandate.EINVALID {
			t.Errorf("%s approval: %v, want EINVALID", name, err)
		}
	}
	if n := logSize(s); n != 1 {
		t.Fatalf("log size %d, want 1: refused approvals append nothing", n)
	}
	got, err := s.Approval(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkApproval(t, got, a)
	_, err = s.Approval(ctx, "ap_nope")
	wantCode(t, err, mandate.ENOTFOUND)

	// More approvals, in two tasks; lists are newest first. A held call
	// keeps what its approver sees.
	b, c := newApproval(2, "t_2"), newCallApproval(3, "t_1")
	for _, x := range []*mandate.Approval{c, b} { // stored out of order
		create(t, s, x, approvalEvent(mandate.EventApprovalRequested, x))
	}
	if got, err := s.Approval(ctx, c.ID); err != nil {
		t.Fatal(err)
	} else {
		checkApproval(t, got, c)
	}
	ids := func(f mandate.ApprovalFilter) []string {
		t.Helper()
		list, err := s.Approvals(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, x := range list {
			out = append(out, x.ID)
		}
		return out
	}
	if got, want := ids(mandate.ApprovalFilter{}), []string{c.ID, b.ID, a.ID}; !slices.Equal(got, want) {
		t.Errorf("all approvals: %v, want %v", got, want)
	}
	if got, want := ids(mandate.ApprovalFilter{Task: "t_1"}), []string{c.ID, a.ID}; !slices.Equal(got, want) {
		t.Errorf("approvals of t_1: %v, want %v", got, want)
	}
	if got, want := ids(mandate.ApprovalFilter{Limit: 2}), []string{c.ID, b.ID}; !slices.Equal(got, want) {
		t.Errorf("two approvals: %v, want %v", got, want)
	}

	// pending -> approved, once.
	at := t0.Add(time.Minute)
	up, err := s.DecideApproval(ctx, a.ID, mandate.ApprovalApproved, "user:bob@example.org", "fine", at, approvalEvent(mandate.EventApprovalGranted, a))
	if err != nil {
		t.Fatal(err)
	}
	want := *a
	want.Status, want.DecidedAt, want.DecidedBy, want.Note = mandate.ApprovalApproved, at, "user:bob@example.org", "fine"
	checkApproval(t, up, &want)
	if got, err := s.Approval(ctx, a.ID); err != nil {
		t.Fatal(err)
	} else {
		checkApproval(t, got, &want)
	}
	size := logSize(s)
	_, err = s.DecideApproval(ctx, a.ID, mandate.ApprovalDenied, "user:carol@example.org", "", at, approvalEvent(mandate.EventApprovalDenied, a))
	wantCode(t, err, mandate.ECONFLICT)
	_, err = s.DecideApproval(ctx, a.ID, mandate.ApprovalApproved, "user:carol@example.org", "", at, approvalEvent(mandate.EventApprovalGranted, a))
	wantCode(t, err, mandate.ECONFLICT)
	// pending -> denied, once.
	if up, err := s.DecideApproval(ctx, b.ID, mandate.ApprovalDenied, "system", "timed out", at, approvalEvent(mandate.EventApprovalDenied, b)); err != nil {
		t.Fatal(err)
	} else if up.Status != mandate.ApprovalDenied || up.DecidedBy != "system" {
		t.Errorf("denied: %+v", up)
	}
	_, err = s.DecideApproval(ctx, b.ID, mandate.ApprovalApproved, "user:bob@example.org", "", at, approvalEvent(mandate.EventApprovalGranted, b))
	wantCode(t, err, mandate.ECONFLICT)
	_, err = s.DecideApproval(ctx, "ap_nope", mandate.ApprovalApproved, "user:bob@example.org", "", at, approvalEvent(mandate.EventApprovalGranted, b))
	wantCode(t, err, mandate.ENOTFOUND)
	// A person who is not an approver decides nothing.
	_, err = s.DecideApproval(ctx, c.ID, mandate.ApprovalApproved, "user:mallory@example.org", "", at, approvalEvent(mandate.EventApprovalGranted, c))
	wantCode(t, err, mandate.EFORBIDDEN)
	for _, to := range []mandate.ApprovalStatus{mandate.ApprovalUsed, mandate.ApprovalPending, "maybe"} {
		_, err = s.DecideApproval(ctx, c.ID, to, "user:bob@example.org", "", at, approvalEvent(mandate.EventApprovalGranted, c))
		wantCode(t, err, mandate.EINVALID)
	}
	if n := logSize(s); n != size+1 {
		t.Errorf("log size %d, want %d: refused decisions append nothing", n, size+1)
	}
	if got, want := ids(mandate.ApprovalFilter{Status: mandate.ApprovalPending}), []string{c.ID}; !slices.Equal(got, want) {
		t.Errorf("pending approvals: %v, want %v", got, want)
	}
	if got, want := ids(mandate.ApprovalFilter{Status: mandate.ApprovalDenied, Task: "t_1"}), []string(nil); !slices.Equal(got, want) {
		t.Errorf("denied approvals of t_1: %v, want none", got)
	}
	granted, err := s.Events(ctx, mandate.EventFilter{Type: mandate.EventApprovalGranted})
	if err != nil {
		t.Fatal(err)
	}
	if len(granted) != 1 || granted[0].Details["approval"] != a.ID {
		t.Errorf("granted events: %+v, want one for %s", granted, a.ID)
	}
}

// Of deciders racing on one approval, exactly one wins.
func testApprovalsConcurrentDecide(t *testing.T, s Store) {
	ctx := context.Background()
	a := newApproval(1, "t_1")
	create(t, s, a, nil)
	const n = 20
	for i := range n {
		approver(t, s, fmt.Sprintf("u%d@example.org", i))
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			to := mandate.ApprovalApproved
			if i%2 == 1 {
				to = mandate.ApprovalDenied
			}
			_, errs[i] = s.DecideApproval(ctx, a.ID, to, fmt.Sprintf("user:u%d@example.org", i), "", t0, approvalEvent(mandate.EventApprovalGranted, a))
		}()
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		if err == nil {
			if won >= 0 {
				t.Fatalf("deciders %d and %d both won", won, i)
			}
			won = i
			continue
		}
		wantCode(t, err, mandate.ECONFLICT)
	}
	if won < 0 {
		t.Fatal("no decider won")
	}
	got, err := s.Approval(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.DecidedBy != fmt.Sprintf("user:u%d@example.org", won) {
		t.Errorf("decided by %s, but decider %d won", got.DecidedBy, won)
	}
	if n := logSize(s); n != 1 {
		t.Errorf("log size %d, want 1", n)
	}
}

func testApprovers(t *testing.T, s Store) {
	ctx := context.Background()
	h := func(token string) []byte { x := sha256.Sum256([]byte(token)); return x[:] }
	bob := &mandate.Approver{Email: "bob@example.org", TokenHash: h("bob's token"), CreatedAt: t0}
	ev := func(a *mandate.Approver) *mandate.Event {
		e := event(mandate.EventApproverAdded, "", "", "")
		e.By = "admin"
		e.Details = map[string]any{"email": a.Email}
		return e
	}
	if err := s.CreateApprover(ctx, bob, ev(bob)); err != nil {
		t.Fatal(err)
	}
	again := &mandate.Approver{Email: "bob@example.org", TokenHash: h("another token"), CreatedAt: t0}
	wantCode(t, s.CreateApprover(ctx, again, ev(again)), mandate.ECONFLICT)
	sameToken := &mandate.Approver{Email: "eve@example.org", TokenHash: h("bob's token"), CreatedAt: t0}
	wantCode(t, s.CreateApprover(ctx, sameToken, ev(sameToken)), mandate.ECONFLICT)
	wantCode(t, s.CreateApprover(ctx, &mandate.Approver{Email: "not an email", TokenHash: h("x")}, nil), mandate.EINVALID)
	wantCode(t, s.CreateApprover(ctx, &mandate.Approver{Email: "dan@example.org", TokenHash: []byte("short")}, nil), mandate.EINVALID)
	carol := &mandate.Approver{Email: "carol@example.org", TokenHash: h("carol's token"), CreatedAt: t0.Add(time.Second)}
	if err := s.CreateApprover(ctx, carol, ev(carol)); err != nil {
		t.Fatal(err)
	}
	if n := logSize(s); n != 2 {
		t.Errorf("log size %d, want 2: refused approvers append nothing", n)
	}

	got, err := s.ApproverByTokenHash(ctx, h("carol's token"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Email != carol.Email || string(got.TokenHash) != string(carol.TokenHash) || !got.CreatedAt.Equal(carol.CreatedAt) {
		t.Errorf("by token hash: %+v, want %+v", got, carol)
	}
	_, err = s.ApproverByTokenHash(ctx, h("a guess"))
	wantCode(t, err, mandate.ENOTFOUND)
	_, err = s.ApproverByTokenHash(ctx, nil)
	wantCode(t, err, mandate.ENOTFOUND)

	list, err := s.Approvers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Email != "bob@example.org" || list[1].Email != "carol@example.org" {
		t.Errorf("Approvers: %+v, want bob, carol", list)
	}
	added, err := s.Events(ctx, mandate.EventFilter{Type: mandate.EventApproverAdded})
	if err != nil {
		t.Fatal(err)
	}
	if len(added) != 2 {
		t.Errorf("%d approver.added events, want 2", len(added))
	}
}

// decided creates an approval and decides it (if to is not pending).
func decided(t *testing.T, s Store, i int, to mandate.ApprovalStatus) *mandate.Approval {
	t.Helper()
	ctx := context.Background()
	a := newApproval(i, "t_1")
	create(t, s, a, nil)
	if to != mandate.ApprovalPending {
		approver(t, s, "bob@example.org")
		if _, err := s.DecideApproval(ctx, a.ID, to, "user:bob@example.org", "", t0, nil); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

func wantStatus(t *testing.T, s Store, id string, want mandate.ApprovalStatus) {
	t.Helper()
	got, err := s.Approval(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != want {
		t.Errorf("approval %s is %s, want %s", id, got.Status, want)
	}
}

// An issuance that uses an approval consumes it: once, only if approved,
// and a refused issuance stores nothing and appends nothing.
func testApprovalIssuance(t *testing.T, s Store) {
	ctx := context.Background()
	notStored := func(rec *mandate.Issuance) {
		t.Helper()
		_, err := s.Issuance(ctx, rec.MandateID)
		wantCode(t, err, mandate.ENOTFOUND)
	}
	ok := decided(t, s, 1, mandate.ApprovalApproved)
	pending := decided(t, s, 2, mandate.ApprovalPending)
	denied := decided(t, s, 3, mandate.ApprovalDenied)

	// The approval stays approved when the issuance fails for its own
	// reason: an event that does not carry the record.
	first := issuance(1, "")
	if err := s.RecordIssuance(ctx, first, issued(first)); err != nil {
		t.Fatal(err)
	}
	bad := issuance(5, first.MandateID)
	bad.ApprovalID = ok.ID
	wantCode(t, s.RecordIssuance(ctx, bad, issued(first)), mandate.EINVALID)
	wantStatus(t, s, ok.ID, mandate.ApprovalApproved)
	size := logSize(s)

	rec := issuance(2, first.MandateID)
	rec.ApprovalID = ok.ID
	if err := s.RecordIssuance(ctx, rec, issued(rec)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Issuance(ctx, rec.MandateID); err != nil {
		t.Fatalf("issuance that used an approval: %v", err)
	}
	wantStatus(t, s, ok.ID, mandate.ApprovalUsed)
	// A used approval cannot be decided again.
	_, err := s.DecideApproval(ctx, ok.ID, mandate.ApprovalDenied, "user:bob@example.org", "", t0, nil)
	wantCode(t, err, mandate.ECONFLICT)

	for name, id := range map[string]string{"used": ok.ID, "pending": pending.ID, "denied": denied.ID, "unknown": "ap_nope"} {
		r := issuance(3, first.MandateID)
		r.ApprovalID = id
		if err := s.RecordIssuance(ctx, r, issued(r)); mandate.ErrorCode(err) != mandate.ECONFLICT {
			t.Errorf("issuance with a %s approval: %v, want ECONFLICT", name, err)
		}
		notStored(r)
	}
	wantStatus(t, s, pending.ID, mandate.ApprovalPending)
	wantStatus(t, s, denied.ID, mandate.ApprovalDenied)
	if n := logSize(s); n != size+1 {
		t.Errorf("log size %d, want %d: refused issuances append nothing", n, size+1)
	}
}

// Writers racing to use one approval, in batches shared with plain
// issuances: exactly one of them succeeds, and the others store nothing.
func testApprovalIssuanceRace(t *testing.T, s Store) {
	ctx := context.Background()
	a := decided(t, s, 1, mandate.ApprovalApproved)
	const racers, plain = 20, 100
	recs := make([]*mandate.Issuance, racers+plain)
	for i := range recs {
		recs[i] = issuance(i, "")
		recs[i].TaskID = fmt.Sprintf("t_%d", i)
		if i < racers {
			recs[i].ApprovalID = a.ID
		}
	}
	errs := make([]error, len(recs))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, rec := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.RecordIssuance(ctx, rec, issued(rec))
		}()
	}
	close(start)
	wg.Wait()
	won := 0
	for i, err := range errs {
		_, gerr := s.Issuance(ctx, recs[i].MandateID)
		switch {
		case err == nil:
			if gerr != nil {
				t.Errorf("issuance %d acknowledged but not found: %v", i, gerr)
			}
			if i < racers {
				won++
			}
		case i >= racers:
			t.Errorf("plain issuance %d: %v", i, err)
		default:
			wantCode(t, err, mandate.ECONFLICT)
			if gerr == nil {
				t.Errorf("issuance %d was refused but stored", i)
			}
		}
	}
	if won != 1 {
		t.Errorf("%d issuances used approval %s, want exactly 1", won, a.ID)
	}
	wantStatus(t, s, a.ID, mandate.ApprovalUsed)
	if n := logSize(s); n != plain+1 {
		t.Errorf("log size %d, want %d", n, plain+1)
	}
}

// Agents' delegation fields, approvals and approvers survive a restart.
func testApprovalsRestart(t *testing.T, s Store, reopen func(*testing.T, Store) Store) {
	ctx := context.Background()
	ag := agentWithFields("kept")
	if err := s.CreateAgent(ctx, ag, nil); err != nil {
		t.Fatal(err)
	}
	a := decided(t, s, 1, mandate.ApprovalApproved)
	c := newCallApproval(2, "t_2")
	create(t, s, c, nil)
	h := sha256.Sum256([]byte("dan's token"))
	if err := s.CreateApprover(ctx, &mandate.Approver{Email: "dan@example.org", TokenHash: h[:], CreatedAt: t0}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DisableApprover(ctx, "bob@example.org", t0.Add(time.Minute), nil); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	if got, err := s.Approval(ctx, c.ID); err != nil {
		t.Fatal(err)
	} else {
		checkApproval(t, got, c)
	}
	// A disabled approver stays disabled.
	bh := sha256.Sum256([]byte("token of bob@example.org"))
	_, err := s.ApproverByTokenHash(ctx, bh[:])
	wantCode(t, err, mandate.EUNAUTHORIZED)
	_, err = s.DecideApproval(ctx, c.ID, mandate.ApprovalApproved, "user:bob@example.org", "", t0, nil)
	wantCode(t, err, mandate.EFORBIDDEN)
	got, err := s.Agent(ctx, ag.ID)
	if err != nil {
		t.Fatal(err)
	}
	checkAgentFields(t, got, ag)
	wantStatus(t, s, a.ID, mandate.ApprovalApproved)
	if ap, err := s.ApproverByTokenHash(ctx, h[:]); err != nil || ap.Email != "dan@example.org" {
		t.Errorf("approver after restart: %+v %v", ap, err)
	}
	rec := issuance(1, "")
	rec.ApprovalID = a.ID
	if err := s.RecordIssuance(ctx, rec, issued(rec)); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, s, a.ID, mandate.ApprovalUsed)
}

// The pending approvals of one registered agent (with its ephemeral
// sub-agents, in any task) and of one task are bounded: a request past a
// limit is a *PendingLimitError and stores nothing, appends nothing.
// Approvals decided or expired do not count.
func testApprovalLimits(t *testing.T, s Store) {
	ctx := context.Background()
	lim := mandate.ApprovalLimits{PerAgent: 3, PerTask: 2}
	reg := mandate.AgentID("example.org", "a")
	other := mandate.AgentID("example.org", "b")
	i := 0
	next := func(task, agent string) *mandate.Approval {
		i++
		a := newApproval(i, task)
		a.Agent = agent
		return a
	}
	refused := func(a *mandate.Approval, of, name string, pending int) {
		t.Helper()
		size := logSize(s)
		err := s.CreateApproval(ctx, a, lim, approvalEvent(mandate.EventApprovalRequested, a))
		var pe *mandate.PendingLimitError
		if !errors.As(err, &pe) || pe.Of != of || pe.Name != name || pe.Pending != pending || mandate.ErrorCode(err) != mandate.EFORBIDDEN {
			t.Fatalf("approval past the %s limit: %v (%+v)", of, err, pe)
		}
		if _, err := s.Approval(ctx, a.ID); mandate.ErrorCode(err) != mandate.ENOTFOUND {
			t.Errorf("a refused approval was stored: %v", err)
		}
		if logSize(s) != size {
			t.Errorf("a refused approval appended its event")
		}
	}
	ok := func(a *mandate.Approval) {
		t.Helper()
		if err := s.CreateApproval(ctx, a, lim, approvalEvent(mandate.EventApprovalRequested, a)); err != nil {
			t.Fatal(err)
		}
	}
	ok(next("t_1", reg))
	ok(next("t_1", reg+mandate.EphemeralSeparator+"7f3a")) // a sub-agent of a
	refused(next("t_1", other), "task", "t_1", 2)          // another agent, the same task
	ok(next("t_2", reg+mandate.EphemeralSeparator+"9c2e"))
	refused(next("t_3", reg), "agent", reg, 3) // a new task does not help
	ok(next("t_3", other))                     // others are not buried

	// A decided approval frees its place; an expired one counts no more
	// (even before the server gets round to denying it).
	approver(t, s, "bob@example.org")
	list, err := s.Approvals(ctx, mandate.ApprovalFilter{Task: "t_1"})
	if err != nil || len(list) != 2 {
		t.Fatalf("approvals of t_1: %v %v", list, err)
	}
	if _, err := s.DecideApproval(ctx, list[0].ID, mandate.ApprovalDenied, "user:bob@example.org", "", t0, nil); err != nil {
		t.Fatal(err)
	}
	ok(next("t_4", reg))
	late := next("t_5", reg)
	late.CreatedAt = list[1].ExpiresAt // t_1's other approval has expired by then
	late.ExpiresAt = late.CreatedAt.Add(time.Minute)
	ok(late)

	// Writers racing for the last places: exactly as many as the limit
	// allows get one.
	lim = mandate.ApprovalLimits{PerAgent: 100, PerTask: 5}
	const racers = 20
	errs := make([]error, racers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for r := range racers {
		a := next("t_race", mandate.AgentID("example.org", "racer"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[r] = s.CreateApproval(ctx, a, lim, nil)
		}()
	}
	close(start)
	wg.Wait()
	won := 0
	for _, err := range errs {
		var pe *mandate.PendingLimitError
		switch {
		case err == nil:
			won++
		case !errors.As(err, &pe):
			t.Errorf("racer: %v", err)
		}
	}
	if list, _ := s.Approvals(ctx, mandate.ApprovalFilter{Task: "t_race"}); won != 5 || len(list) != 5 {
		t.Errorf("%d racers won, %d stored; want 5", won, len(list))
	}
}

// A listing for one approver is filtered before it is cut to its limit,
// so that others' requests cannot push theirs out; names match whole.
func testApprovalsFilter(t *testing.T, s Store) {
	ctx := context.Background()
	var dans []string
	for i := range 40 {
		a := newApproval(i, fmt.Sprintf("t_%d", i))
		a.Agent = mandate.AgentID("example.org", fmt.Sprintf("a%d", i))
		if i == 3 || i == 7 {
			a.Approvers = []string{"carol@example.org", "dan@example.org"}
			dans = append([]string{a.ID}, dans...)
		}
		create(t, s, a, nil)
	}
	list, err := s.Approvals(ctx, mandate.ApprovalFilter{Approver: "dan@example.org", Limit: 5})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range list {
		got = append(got, a.ID)
	}
	if !slices.Equal(got, dans) {
		t.Errorf("dan's approvals %v, want %v", got, dans)
	}
	for _, who := range []string{"an@example.org", "dan@example", "carol@example.org dan@example.org", "%"} {
		if list, err := s.Approvals(ctx, mandate.ApprovalFilter{Approver: who}); err != nil || len(list) != 0 {
			t.Errorf("approvals of %q: %d %v, want none", who, len(list), err)
		}
	}
	// ExpiredBy: those whose time ran out by then.
	first := newApproval(0, "t_0")
	list, err = s.Approvals(ctx, mandate.ApprovalFilter{Status: mandate.ApprovalPending, ExpiredBy: first.ExpiresAt.Add(time.Millisecond)})
	if err != nil || len(list) != 2 {
		t.Errorf("expired approvals: %d %v, want the first two", len(list), err)
	}
}

// A disabled approver's credential finds nobody and their decisions are
// refused, in the transaction of the decision; the system still denies.
func testApproverDisable(t *testing.T, s Store) {
	ctx := context.Background()
	approver(t, s, "bob@example.org")
	approver(t, s, "carol@example.org")
	a, b := newApproval(1, "t_1"), newApproval(2, "t_1")
	create(t, s, a, nil)
	create(t, s, b, nil)
	ev := event(mandate.EventApproverDisabled, "", "", "")
	ev.By, ev.Details = "admin", map[string]any{"email": "bob@example.org"}
	size := logSize(s)
	at := t0.Add(time.Minute)
	got, err := s.DisableApprover(ctx, "bob@example.org", at, ev)
	if err != nil {
		t.Fatal(err)
	}
	if got.Email != "bob@example.org" || !got.DisabledAt.Equal(at) || logSize(s) != size+1 {
		t.Errorf("disabled: %+v, log %d -> %d", got, size, logSize(s))
	}
	_, err = s.DisableApprover(ctx, "bob@example.org", at, ev)
	wantCode(t, err, mandate.ECONFLICT)
	_, err = s.DisableApprover(ctx, "nobody@example.org", at, ev)
	wantCode(t, err, mandate.ENOTFOUND)
	if logSize(s) != size+1 {
		t.Error("a refused disable appended its event")
	}
	h := sha256.Sum256([]byte("token of bob@example.org"))
	_, err = s.ApproverByTokenHash(ctx, h[:])
	wantCode(t, err, mandate.EUNAUTHORIZED)
	_, err = s.DecideApproval(ctx, a.ID, mandate.ApprovalApproved, "user:bob@example.org", "", t0, approvalEvent(mandate.EventApprovalGranted, a))
	wantCode(t, err, mandate.EFORBIDDEN)
	wantStatus(t, s, a.ID, mandate.ApprovalPending)
	if _, err := s.DecideApproval(ctx, a.ID, mandate.ApprovalApproved, "user:carol@example.org", "", t0, nil); err != nil {
		t.Fatalf("another approver: %v", err)
	}
	if _, err := s.DecideApproval(ctx, b.ID, mandate.ApprovalDenied, "system", "timed out undecided", t0, nil); err != nil {
		t.Fatalf("the system: %v", err)
	}
	list, err := s.Approvers(ctx)
	if err != nil || len(list) != 2 || !list[0].DisabledAt.Equal(at) || !list[1].DisabledAt.IsZero() {
		t.Errorf("approvers %+v %v", list, err)
	}
	// Added again, with a new credential: the old one stays refused.
	nh := sha256.Sum256([]byte("bob's new token"))
	if err := s.CreateApprover(ctx, &mandate.Approver{Email: "bob@example.org", TokenHash: nh[:], CreatedAt: at}, nil); err != nil {
		t.Fatalf("re-adding a disabled approver: %v", err)
	}
	if got, err := s.ApproverByTokenHash(ctx, nh[:]); err != nil || got.Email != "bob@example.org" || !got.DisabledAt.IsZero() {
		t.Errorf("the new credential: %+v %v", got, err)
	}
	_, err = s.ApproverByTokenHash(ctx, h[:])
	wantCode(t, err, mandate.ENOTFOUND)
	wantCode(t, s.CreateApprover(ctx, &mandate.Approver{Email: "bob@example.org", TokenHash: h[:], CreatedAt: at}, nil), mandate.ECONFLICT)
}
