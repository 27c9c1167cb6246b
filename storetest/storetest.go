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
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/jose"
)

// Store is what a backend implements.
type Store interface {
	mandate.AgentStore
	mandate.IssuanceLog
	mandate.IssuanceGetter
	mandate.RevocationStore
	mandate.UsedAssertions
	mandate.AssertionRecorder
}

// Run runs the suite. open returns a new empty store; reopen, if not nil,
// closes a store and opens the same data again (a restart).
func Run(t *testing.T, open func(t *testing.T) Store, reopen func(t *testing.T, s Store) Store) {
	t.Run("Agents", func(t *testing.T) { testAgents(t, open(t)) })
	t.Run("Issuance", func(t *testing.T) { testIssuance(t, open(t)) })
	t.Run("ConcurrentIssuance", func(t *testing.T) { testConcurrentIssuance(t, open(t)) })
	t.Run("UsedAssertions", func(t *testing.T) { testUsedAssertions(t, open(t)) })
	t.Run("Revocations", func(t *testing.T) { testRevocations(t, open(t)) })
	if reopen != nil {
		t.Run("Restart", func(t *testing.T) { testRestart(t, open(t), reopen) })
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
	if err := s.CreateAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	wantCode(t, s.CreateAgent(ctx, a), mandate.ECONFLICT)
	dup := NewAgent("researcher")
	wantCode(t, s.CreateAgent(ctx, dup), mandate.ECONFLICT)
	bad := NewAgent("x")
	bad.Ceiling = nil
	wantCode(t, s.CreateAgent(ctx, bad), mandate.EINVALID)

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

	if err := s.CreateAgent(ctx, NewAgent("analyst")); err != nil {
		t.Fatal(err)
	}
	list, err := s.Agents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != "analyst" || list[1].Name != "researcher" {
		t.Errorf("Agents: %v, want analyst, researcher", list)
	}

	up, err := s.SetAgentStatus(ctx, a.ID, mandate.AgentDisabled)
	if err != nil {
		t.Fatal(err)
	}
	if up.Status != mandate.AgentDisabled {
		t.Errorf("status %s", up.Status)
	}
	if got, _ := s.Agent(ctx, a.ID); got.Status != mandate.AgentDisabled {
		t.Errorf("Agent after disable: %s", got.Status)
	}
	_, err = s.SetAgentStatus(ctx, mandate.AgentID("example.org", "nobody"), mandate.AgentDisabled)
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
	if err := s.RecordIssuance(ctx, root); err != nil {
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
	// The same mandate ID twice: the second is refused and nothing of it stays.
	again := *root
	again.Scope = "mcp:crm:other"
	wantCode(t, s.RecordIssuance(ctx, &again), mandate.ECONFLICT)
	if got, _ := s.Issuance(ctx, root.MandateID); got.Scope != root.Scope {
		t.Errorf("a refused write changed the record: %+v", got)
	}
	// A child of the task.
	if err := s.RecordIssuance(ctx, issuance(4, root.MandateID)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Issuance(ctx, "m_nope")
	wantCode(t, err, mandate.ENOTFOUND)
}

// Concurrent writers share transactions; one bad write fails alone.
func testConcurrentIssuance(t *testing.T, s Store) {
	ctx := context.Background()
	const n = 500
	recs := make([]*mandate.Issuance, n)
	for i := range recs {
		recs[i] = issuance(i, "")
		recs[i].TaskID = fmt.Sprintf("t_%d", i)
	}
	dup := map[int]bool{}
	for i := 7; i < n; i += 50 { // a duplicate ID in the middle of a batch
		recs[i].MandateID = recs[0].MandateID
		dup[i] = true
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.RecordIssuance(ctx, recs[i])
		}()
	}
	wg.Wait()
	conflicts := 0
	for i, err := range errs {
		if err != nil {
			wantCode(t, err, mandate.ECONFLICT)
			conflicts++
			continue
		}
		got, gerr := s.Issuance(ctx, recs[i].MandateID)
		if gerr != nil {
			t.Errorf("issuance %d acknowledged but not found: %v", i, gerr)
		} else if got.TaskID != recs[i].TaskID {
			t.Errorf("issuance %d acknowledged but the record is another's: %+v", i, got)
		}
	}
	// The shared ID is stored once: all but one of its writers conflict.
	if conflicts != len(dup) {
		t.Errorf("%d conflicts, want %d", conflicts, len(dup))
	}
}

// UsedAssertions finds the recent, unexpired assertions: what an issuer
// needs to refuse replays after a restart.
func testUsedAssertions(t *testing.T, s Store) {
	ctx := context.Background()
	now := time.Now()
	mk := func(issued time.Time, jti string, exp time.Time) {
		rec := issuance(0, "")
		rec.MandateID = mandate.NewID(mandate.MandateIDPrefix, issued)
		rec.TaskID, rec.AssertionID, rec.AssertionExpiry, rec.IssuedAt = rec.MandateID, jti, exp, issued
		if err := s.RecordIssuance(ctx, rec); err != nil {
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
	if err := s.Revoke(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, r); err != nil {
		t.Fatalf("revoking twice: %v", err)
	}
	if ok, err := s.IsRevoked(ctx, "m_1"); err != nil || !ok {
		t.Fatalf("IsRevoked after: %v %v", ok, err)
	}
}

func testRestart(t *testing.T, s Store, reopen func(*testing.T, Store) Store) {
	ctx := context.Background()
	a := NewAgent("keeper")
	if err := s.CreateAgent(ctx, a); err != nil {
		t.Fatal(err)
	}
	rec := issuance(1, "")
	if err := s.RecordIssuance(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: rec.MandateID, ExpiresAt: time.Now().Add(time.Hour), RevokedAt: time.Now(), RevokedBy: "admin"}); err != nil {
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
