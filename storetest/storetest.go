// Package storetest is the conformance suite every storage backend of
// Mandate passes: the same behaviour, tested the same way, whatever the
// engine. A backend's test calls Run with a function that opens a fresh,
// empty store.
//
// It is for tests only.
package storetest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/jose"
	"golang.org/x/mod/sumdb/tlog"
)

// Store is what a backend implements.
type Store interface {
	mandate.AgentStore
	mandate.EventLog
	mandate.EventQuerier
	// LogHead returns the size and root of the committed audit log.
	LogHead() (int64, tlog.Hash)
	// HashReader reads the log's stored hashes.
	HashReader(ctx context.Context) tlog.HashReader
	// ReadEntries returns entries [start, start+n).
	ReadEntries(ctx context.Context, start, n int64) ([][]byte, error)
	mandate.IssuanceLog
	mandate.IssuanceGetter
	mandate.RevocationStore
	mandate.UsedAssertions
	mandate.AssertionRecorder
	mandate.ApprovalStore
	mandate.ApproverStore
}

// Run runs the suite. open returns a new empty store; reopen, if not nil,
// closes a store and opens the same data again (a restart).
func Run(t *testing.T, open func(t *testing.T) Store, reopen func(t *testing.T, s Store) Store) {
	t.Run("Agents", func(t *testing.T) { testAgents(t, open(t)) })
	t.Run("Issuance", func(t *testing.T) { testIssuance(t, open(t)) })
	t.Run("ConcurrentIssuance", func(t *testing.T) { testConcurrentIssuance(t, open(t)) })
	t.Run("UsedAssertions", func(t *testing.T) { testUsedAssertions(t, open(t)) })
	t.Run("Revocations", func(t *testing.T) { testRevocations(t, open(t)) })
	t.Run("InForceBeforeLaterEvents", func(t *testing.T) { testInForceBeforeLaterEvents(t, open(t)) })
	t.Run("AuditLog", func(t *testing.T) { testAuditLog(t, open(t)) })
	t.Run("AuditLogConcurrent", func(t *testing.T) { testAuditLogConcurrent(t, open(t)) })
	t.Run("AgentFields", func(t *testing.T) { testAgentFields(t, open(t)) })
	t.Run("Approvals", func(t *testing.T) { testApprovals(t, open(t)) })
	t.Run("ApprovalsConcurrentDecide", func(t *testing.T) { testApprovalsConcurrentDecide(t, open(t)) })
	t.Run("Approvers", func(t *testing.T) { testApprovers(t, open(t)) })
	t.Run("ApprovalLimits", func(t *testing.T) { testApprovalLimits(t, open(t)) })
	t.Run("ApprovalsFilter", func(t *testing.T) { testApprovalsFilter(t, open(t)) })
	t.Run("ApproverDisable", func(t *testing.T) { testApproverDisable(t, open(t)) })
	t.Run("ApprovalIssuance", func(t *testing.T) { testApprovalIssuance(t, open(t)) })
	t.Run("ApprovalIssuanceRace", func(t *testing.T) { testApprovalIssuanceRace(t, open(t)) })
	if reopen != nil {
		t.Run("Restart", func(t *testing.T) { testRestart(t, open(t), reopen) })
		t.Run("AuditLogRestart", func(t *testing.T) { testAuditLogRestart(t, open(t), reopen) })
		t.Run("ApprovalsRestart", func(t *testing.T) { testApprovalsRestart(t, open(t), reopen) })
	}
}

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

// NewAgent returns a valid agent called name.
func NewAgent(name string) *mandate.Agent {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub := priv.Public().(ed25519.PublicKey)
	ceiling, _ := mandate.ParseScopeSet("mcp:crm:* http:crm:GET:/contacts/**")
	return &mandate.Agent{
		ID: mandate.AgentID("example.org", name), Name: name, Owner: "alice@example.org", Ceiling: ceiling,
		PublicKey: pub, KeyID: jose.Thumbprint(pub), Status: mandate.AgentActive, CreatedAt: t0, UpdatedAt: t0,
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := mandate.ErrorCode(err); got != code {
		t.Fatalf("error %v has code %q, want %q", err, got, code)
	}
}

func testAgents(t *testing.T, s Store) {
	ctx := context.Background()
	a := NewAgent("researcher")
	if err := s.CreateAgent(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.CreateAgent(ctx, a, nil), mandate.ECONFLICT)
	dup := NewAgent("researcher")
	wantCode(t, s.CreateAgent(ctx, dup, nil), mandate.ECONFLICT)
	bad := NewAgent("x")
	bad.Ceiling = nil
	wantCode(t, s.CreateAgent(ctx, bad, nil), mandate.EINVALID)

	got, err := s.Agent(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != a.Name || got.Owner != a.Owner || got.Ceiling.String() != a.Ceiling.String() ||
		string(got.PublicKey) != string(a.PublicKey) || got.KeyID != a.KeyID || got.Status != mandate.AgentActive || !got.CreatedAt.Equal(a.CreatedAt) {
		t.Errorf("got %+v, want %+v", got, a)
	}
	_, err = s.Agent(ctx, mandate.AgentID("example.org", "nobody"))
	wantCode(t, err, mandate.ENOTFOUND)

	if err := s.CreateAgent(ctx, NewAgent("analyst"), nil); err != nil {
		t.Fatal(err)
	}
	list, err := s.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "analyst" || list[1].Name != "researcher" {
		t.Errorf("Agents: %v, want analyst, researcher", list)
	}

	up, err := s.SetAgentStatus(ctx, a.ID, mandate.AgentDisabled, nil)
	if err != nil {
		t.Fatal(err)
	}
	if up.Status != mandate.AgentDisabled {
		t.Errorf("status %s", up.Status)
	}
	if got, _ := s.Agent(ctx, a.ID); got.Status != mandate.AgentDisabled {
		t.Errorf("Agent after disable: %s", got.Status)
	}
	_, err = s.SetAgentStatus(ctx, mandate.AgentID("example.org", "nobody"), mandate.AgentDisabled, nil)
	wantCode(t, err, mandate.ENOTFOUND)
}

func issuance(i int, parent string) *mandate.Issuance {
	return &mandate.Issuance{
		MandateID: mandate.NewID(mandate.MandateIDPrefix, t0) + fmt.Sprintf("%06d", i), TaskID: "t_1", ParentID: parent, AgentID: mandate.AgentID("example.org", "a"),
		Subject: "user:alice@example.org", Scope: "mcp:crm:list", Audience: []string{"mcp:crm"}, KeyID: "k1",
		JKT: "jkt", IssuedAt: t0, ExpiresAt: t0.Add(30 * time.Millisecond), TaskPurpose: "report",
		AssertionID: fmt.Sprintf("a%d", i), AssertionExpiry: t0.Add(time.Minute),
	}
}

func testIssuance(t *testing.T, s Store) {
	ctx := context.Background()
	root := issuance(1, "")
	if err := s.RecordIssuance(ctx, root, issued(root)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Issuance(ctx, root.MandateID)
	if err != nil {
		t.Fatal(err)
	}
	if got.TaskID != root.TaskID || got.AgentID != root.AgentID || got.Scope != root.Scope || len(got.Audience) != 1 ||
		!got.ExpiresAt.Equal(root.ExpiresAt) || !got.IssuedAt.Equal(root.IssuedAt) || got.TaskPurpose != "report" || got.JKT != "jkt" {
		t.Errorf("got %+v, want %+v", got, root)
	}
	// The event is the record: one that does not carry it is refused,
	// and nothing of it stays.
	other := issuance(2, "")
	other.Scope = "mcp:crm:other"
	wantCode(t, s.RecordIssuance(ctx, other, nil), mandate.EINVALID)
	wantCode(t, s.RecordIssuance(ctx, other, issued(root)), mandate.EINVALID)
	wantCode(t, s.RecordIssuance(ctx, other, event(mandate.EventMandateIssued, other.TaskID, other.MandateID, other.AgentID)), mandate.EINVALID)
	if _, err := s.Issuance(ctx, other.MandateID); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Errorf("a refused issuance was stored: %v", err)
	}
	// A child of the task: the task's purpose is its root's.
	child := issuance(4, root.MandateID)
	child.TaskPurpose = ""
	if err := s.RecordIssuance(ctx, child, issued(child)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Issuance(ctx, child.MandateID); err != nil || got.ParentID != root.MandateID || got.TaskPurpose != "report" {
		t.Errorf("child: %+v %v", got, err)
	}
	_, err = s.Issuance(ctx, "m_nope")
	wantCode(t, err, mandate.ENOTFOUND)
}

// Concurrent writers share the log's writes; each record reads back as
// its own.
func testConcurrentIssuance(t *testing.T, s Store) {
	ctx := context.Background()
	const n = 500
	recs := make([]*mandate.Issuance, n)
	for i := range recs {
		recs[i] = issuance(i, "")
		recs[i].TaskID = fmt.Sprintf("t_%d", i)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.RecordIssuance(ctx, recs[i], issued(recs[i]))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("issuance %d: %v", i, err)
			continue
		}
		got, gerr := s.Issuance(ctx, recs[i].MandateID)
		if gerr != nil {
			t.Errorf("issuance %d acknowledged but not found: %v", i, gerr)
		} else if got.TaskID != recs[i].TaskID {
			t.Errorf("issuance %d acknowledged but the record is another's: %+v", i, got)
		}
	}
}

// UsedAssertions finds the recent, unexpired assertions: what an issuer
// needs to refuse replays after a restart.
func testUsedAssertions(t *testing.T, s Store) {
	ctx := context.Background()
	now := time.Now()
	mk := func(at time.Time, jti string, exp time.Time) {
		rec := issuance(0, "")
		rec.MandateID = mandate.NewID(mandate.MandateIDPrefix, at)
		rec.TaskID, rec.AssertionID, rec.AssertionExpiry, rec.IssuedAt = rec.MandateID, jti, exp, at
		if err := s.RecordIssuance(ctx, rec, issued(rec)); err != nil {
			t.Fatal(err)
		}
	}
	mk(now.Add(-time.Hour), "old", now.Add(time.Minute)) // before since: not scanned
	mk(now.Add(-time.Minute), "expired", now.Add(-time.Second))
	mk(now.Add(-time.Minute), "live", now.Add(time.Minute))
	mk(now, "", time.Time{}) // no assertion
	if err := s.RecordAssertion(ctx, mandate.AgentID("example.org", "a"), "revoker", now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordAssertion(ctx, mandate.AgentID("example.org", "a"), "revoker", now.Add(time.Minute)); err != nil {
		t.Fatalf("recording an assertion twice: %v", err)
	}
	if err := s.RecordAssertion(ctx, mandate.AgentID("example.org", "a"), "stale", now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := s.UsedAssertions(ctx, now.Add(-10*time.Minute), now, func(agent, jti string, exp time.Time) error {
		got = append(got, jti)
		if agent != mandate.AgentID("example.org", "a") || exp.Before(now) {
			t.Errorf("%s: agent %s exp %v", jti, agent, exp)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "live" || got[1] != "revoker" {
		t.Errorf("UsedAssertions: %v, want [live revoker]", got)
	}
}

func testRevocations(t *testing.T, s Store) {
	ctx := context.Background()
	r := &mandate.Revocation{MandateID: "m_1", ExpiresAt: time.Now().Add(time.Hour), RevokedAt: time.Now(), RevokedBy: "admin", Reason: "test"}
	if ok, err := s.IsRevoked(ctx, "m_1"); err != nil || ok {
		t.Fatalf("IsRevoked before: %v %v", ok, err)
	}
	if err := s.Revoke(ctx, r, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, r, nil); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	if ok, err := s.IsRevoked(ctx, "m_1"); err != nil || !ok {
		t.Fatalf("IsRevoked after: %v %v", ok, err)
	}
}

// testInForceBeforeLaterEvents: a revocation, and an agent's disabling,
// is in force (IsRevoked, Agent) before Append returns for any event that
// follows its event in the log. The gateway checks a call's mandate again
// once the call's write-ahead record is durable, and relies on this: a
// call recorded after a revocation is never forwarded.
func testInForceBeforeLaterEvents(t *testing.T, s Store) {
	ctx := context.Background()
	a := NewAgent("stopped")
	if err := s.CreateAgent(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	const writers = 64
	type seen struct{ revoked, disabled bool }
	saw := make([]seen, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := s.Append(ctx, event("test.after", fmt.Sprint("t_", i), "", "")); err != nil {
				t.Error(err)
				return
			}
			revoked, err := s.IsRevoked(ctx, "m_stopped")
			if err != nil {
				t.Error(err)
			}
			got, err := s.Agent(ctx, a.ID)
			if err != nil {
				t.Error(err)
				return
			}
			saw[i] = seen{revoked, got.Status == mandate.AgentDisabled}
		}()
	}
	close(start)
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: "m_stopped", ExpiresAt: time.Now().Add(time.Hour), RevokedAt: time.Now()},
		event(mandate.EventMandateRevoked, "", "m_stopped", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetAgentStatus(ctx, a.ID, mandate.AgentDisabled, event(mandate.EventAgentDisabled, "", "", a.ID)); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	evs, err := s.Events(ctx, mandate.EventFilter{Limit: mandate.MaxEventsPerQuery})
	if err != nil {
		t.Fatal(err)
	}
	revokedAt, disabledAt := int64(-1), int64(-1)
	for _, e := range evs {
		switch e.Type {
		case mandate.EventMandateRevoked:
			revokedAt = e.Index
		case mandate.EventAgentDisabled:
			disabledAt = e.Index
		case "test.after":
			var i int
			fmt.Sscanf(e.Task, "t_%d", &i)
			if revokedAt >= 0 && !saw[i].revoked {
				t.Errorf("event %d follows the revocation (%d), yet its writer found the mandate not revoked", e.Index, revokedAt)
			}
			if disabledAt >= 0 && !saw[i].disabled {
				t.Errorf("event %d follows the agent's disabling (%d), yet its writer found the agent active", e.Index, disabledAt)
			}
		}
	}
}

func testRestart(t *testing.T, s Store, reopen func(*testing.T, Store) Store) {
	ctx := context.Background()
	a := NewAgent("keeper")
	if err := s.CreateAgent(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	rec := issuance(1, "")
	if err := s.RecordIssuance(ctx, rec, issued(rec)); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: rec.MandateID, ExpiresAt: time.Now().Add(time.Hour), RevokedAt: time.Now(), RevokedBy: "admin"}, nil); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s)
	if got, err := s.Agent(ctx, a.ID); err != nil || string(got.PublicKey) != string(a.PublicKey) {
		t.Errorf("agent after restart: %v %v", got, err)
	}
	if _, err := s.Issuance(ctx, rec.MandateID); err != nil {
		t.Errorf("issuance after restart: %v", err)
	}
	if ok, _ := s.IsRevoked(ctx, rec.MandateID); !ok {
		t.Error("revocation lost in restart")
	}
}

// issued is the issuance event of rec, which carries the record.
func issued(rec *mandate.Issuance) *mandate.Event { return mandate.NewIssuanceEvent(rec, rec.IssuedAt) }

func event(typ, task, mandateID, agent string) *mandate.Event {
	return &mandate.Event{V: mandate.EventVersion, Time: time.Now().UnixNano(), Type: typ, Task: task, Mandate: mandateID, Agent: agent, Outcome: mandate.OutcomeOK}
}

// checkTree recomputes the tree from the stored entries and compares it
// with the store's head and stored hashes.
func checkTree(t *testing.T, s Store) int64 {
	t.Helper()
	ctx := context.Background()
	size, root := s.LogHead()
	entries, err := s.ReadEntries(ctx, 0, size)
	if err != nil {
		t.Fatal(err)
	}
	mem := map[int64]tlog.Hash{}
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = mem[x]
		}
		return out, nil
	})
	for i, e := range entries {
		hs, err := tlog.StoredHashes(int64(i), e, hr)
		if err != nil {
			t.Fatal(err)
		}
		for j, h := range hs {
			mem[tlog.StoredHashIndex(0, int64(i))+int64(j)] = h
		}
		if _, err := mandate.ParseEvent(e); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	want, err := tlog.TreeHash(size, hr)
	if err != nil {
		t.Fatal(err)
	}
	if root != want {
		t.Fatalf("head root %v, entries hash to %v", root, want)
	}
	if size > 0 {
		stored, err := tlog.TreeHash(size, s.HashReader(ctx))
		if err != nil || stored != want {
			t.Fatalf("stored hashes give root %v (%v), entries %v", stored, err, want)
		}
		// An inclusion proof from the stored hashes checks out.
		p, err := tlog.ProveRecord(size, size-1, s.HashReader(ctx))
		if err != nil {
			t.Fatal(err)
		}
		if err := tlog.CheckRecord(p, size, want, size-1, tlog.RecordHash(entries[size-1])); err != nil {
			t.Fatal(err)
		}
	}
	return size
}

// Events are appended with the change they record, in one transaction: a
// refused change leaves no event.
func testAuditLog(t *testing.T, s Store) {
	ctx := context.Background()
	if size, root := s.LogHead(); size != 0 || root != tlog.Hash(sha256Empty()) {
		t.Fatalf("empty log head %d %v", size, root)
	}
	a := NewAgent("logged")
	if err := s.CreateAgent(ctx, a, event(mandate.EventAgentRegistered, "", "", a.ID)); err != nil {
		t.Fatal(err)
	}
	// Refused: the agent exists. Its event must not be appended.
	wantCode(t, s.CreateAgent(ctx, a, event(mandate.EventAgentRegistered, "", "", a.ID)), mandate.ECONFLICT)
	rec := issuance(1, "")
	rec.AgentID = a.ID
	if err := s.RecordIssuance(ctx, rec, issued(rec)); err != nil {
		t.Fatal(err)
	}
	// Refused: the event does not carry the record.
	wantCode(t, s.RecordIssuance(ctx, rec, event(mandate.EventMandateIssued, rec.TaskID, rec.MandateID, a.ID)), mandate.EINVALID)
	if _, err := s.SetAgentStatus(ctx, a.ID, mandate.AgentDisabled, event(mandate.EventAgentDisabled, "", "", a.ID)); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: rec.MandateID, ExpiresAt: time.Now().Add(time.Hour), RevokedAt: time.Now()},
		event(mandate.EventMandateRevoked, rec.TaskID, rec.MandateID, a.ID)); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, event(mandate.EventKeyRotated, "", "", "")); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.Append(ctx, &mandate.Event{V: 1, Type: "Not A Type"}), mandate.EINVALID)
	if size := checkTree(t, s); size != 5 {
		t.Fatalf("log size %d, want 5 (refused changes append nothing)", size)
	}
	byTask, err := s.Events(ctx, mandate.EventFilter{Task: rec.TaskID})
	if err != nil {
		t.Fatal(err)
	}
	if len(byTask) != 2 || byTask[0].Type != mandate.EventMandateIssued || byTask[1].Type != mandate.EventMandateRevoked || byTask[0].Index != 1 {
		t.Errorf("events of the task: %+v", byTask)
	}
	byAgent, _ := s.Events(ctx, mandate.EventFilter{Agent: a.ID})
	byMandate, _ := s.Events(ctx, mandate.EventFilter{Mandate: rec.MandateID, Type: mandate.EventMandateRevoked})
	last, _ := s.Events(ctx, mandate.EventFilter{Limit: 2, Last: true})
	none, _ := s.Events(ctx, mandate.EventFilter{Since: time.Now().Add(time.Hour)})
	if len(byAgent) != 4 || len(byMandate) != 1 || len(last) != 2 || last[1].Type != mandate.EventKeyRotated || len(none) != 0 {
		t.Errorf("queries: agent %d, mandate %d, last %+v, future %d", len(byAgent), len(byMandate), last, len(none))
	}
}

func sha256Empty() [32]byte { return sha256.Sum256(nil) }

// Concurrent appends each get one position, and the tree is consistent.
func testAuditLogConcurrent(t *testing.T, s Store) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 300 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if i%3 == 0 {
				rec := issuance(i, "")
				err = s.RecordIssuance(ctx, rec, issued(rec))
			} else {
				err = s.Append(ctx, event(mandate.EventDecision, fmt.Sprintf("t_%d", i), "", ""))
			}
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if size := checkTree(t, s); size != 300 {
		t.Errorf("log size %d, want 300", size)
	}
}

// The log survives a restart: same head, and appends continue the tree.
func testAuditLogRestart(t *testing.T, s Store, reopen func(*testing.T, Store) Store) {
	ctx := context.Background()
	for i := range 37 {
		if err := s.Append(ctx, event(mandate.EventDecision, fmt.Sprintf("t_%d", i), "", "")); err != nil {
			t.Fatal(err)
		}
	}
	size, root := s.LogHead()
	s = reopen(t, s)
	if size2, root2 := s.LogHead(); size2 != size || root2 != root {
		t.Fatalf("head after restart %d %v, before %d %v", size2, root2, size, root)
	}
	if err := s.Append(ctx, event(mandate.EventDecision, "t_x", "", "")); err != nil {
		t.Fatal(err)
	}
	if n := checkTree(t, s); n != 38 {
		t.Errorf("size %d", n)
	}
}
