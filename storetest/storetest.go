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
}

// Run runs the suite. open returns a new empty store; reopen, if not nil,
// closes a store and opens the same data again (a restart).
func Run(t *testing.T, open func(t *testing.T) Store, reopen func(t *testing.T, s Store) Store) {
	t.Run("Agents", func(t *testing.T) { testAgents(t, open(t)) })
	t.Run("Issuance", func(t *testing.T) { testIssuance(t, open(t)) })
	t.Run("ConcurrentIssuance", func(t *testing.T) { testConcurrentIssuance(t, open(t)) })
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
		MandateID: fmt.Sprintf("m_%06d", i), TaskID: "t_1", ParentID: parent, AgentID: mandate.AgentID("example.org", "a"),
		Subject: "user:alice@example.org", Scope: "mcp:crm:list", Audience: []string{"mcp:crm"}, KeyID: "k1",
		JKT: "jkt", IssuedAt: t0, ExpiresAt: t0.Add(30 * time.Millisecond), TaskPurpose: "report",
		AssertionID: fmt.Sprintf("a%d", i),
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
	// The same assertion twice: the second is refused and nothing of it stays.
	again := issuance(2, "")
	again.TaskID, again.AssertionID = "t_2", root.AssertionID
	wantCode(t, s.RecordIssuance(ctx, again), mandate.ECONFLICT)
	_, err = s.Issuance(ctx, again.MandateID)
	wantCode(t, err, mandate.ENOTFOUND)
	// The same assertion ID from another agent is another assertion.
	other := issuance(3, "")
	other.TaskID, other.AssertionID, other.AgentID = "t_3", root.AssertionID, mandate.AgentID("example.org", "b")
	if err := s.RecordIssuance(ctx, other); err != nil {
		t.Fatal(err)
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
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := issuance(i, "")
			rec.TaskID = fmt.Sprintf("t_%d", i)
			if i%50 == 7 { // a replayed assertion in the middle of a batch
				rec.AssertionID = "a0"
			}
			errs[i] = s.RecordIssuance(ctx, rec)
		}()
	}
	wg.Wait()
	conflicts := 0
	for i, err := range errs {
		_, gerr := s.Issuance(ctx, fmt.Sprintf("m_%06d", i))
		switch {
		case err == nil && gerr != nil:
			t.Errorf("issuance %d acknowledged but not found: %v", i, gerr)
		case err != nil && gerr == nil && i != 0:
			t.Errorf("issuance %d refused (%v) but stored", i, err)
		case err != nil:
			wantCode(t, err, mandate.ECONFLICT)
			conflicts++
		}
	}
	// a0 is used by issuance 0 or by one of the replays, whichever came
	// first; all the others with a0 conflict.
	if conflicts != n/50 {
		t.Errorf("%d conflicts, want %d", conflicts, n/50)
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
	again := issuance(2, "")
	again.TaskID, again.AssertionID = "t_2", rec.AssertionID
	wantCode(t, s.RecordIssuance(ctx, again), mandate.ECONFLICT)
}
