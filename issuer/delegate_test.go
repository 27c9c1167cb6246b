package issuer_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
)

const writerID = "spiffe://example.org/agent/writer"

func newKey(t testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// addAgent registers another agent; mod may change it before.
func (f *fixture) addAgent(name, ceiling string, key ed25519.PrivateKey, mod func(*mandate.Agent)) *mandate.Agent {
	f.t.Helper()
	c, err := mandate.ParseScopeSet(ceiling)
	if err != nil {
		f.t.Fatal(err)
	}
	pub := key.Public().(ed25519.PublicKey)
	a := &mandate.Agent{ID: mandate.AgentID("example.org", name), Name: name, Owner: name + "-owner@example.org", Ceiling: c,
		PublicKey: pub, KeyID: jose.Thumbprint(pub), Status: mandate.AgentActive, CreatedAt: f.clk.Now(), UpdatedAt: f.clk.Now()}
	if mod != nil {
		mod(a)
	}
	if err := f.store.CreateAgent(context.Background(), a, nil); err != nil {
		f.t.Fatal(err)
	}
	return a
}

// root mints a root mandate of the researcher agent.
func (f *fixture) root(scope string, ttl time.Duration, bound bool) *issuer.Token {
	f.t.Helper()
	tok, err := f.is.MintRoot(context.Background(), f.request(func(r *issuer.RootRequest) {
		r.Scope, r.TTL = scope, ttl
		if bound {
			r.DPoP = dpop.NewProof(f.key, "POST", tokenURL, "", f.clk.Now())
		}
	}))
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// actorToken builds an actor token by hand, for a delegation from the
// mandate subject (its par): registered (iss = sub = id) if id is set,
// ephemeral (jwk header, no iss) otherwise.
func (f *fixture) actorToken(subject string, key ed25519.PrivateKey, id string, mod func(map[string]any)) string {
	now := f.clk.Now()
	c := map[string]any{"aud": iss, "exp": now.Add(time.Minute).Unix(), "jti": mandate.NewID("x", now), "par": jtiOf(subject)}
	h := jose.Header{Typ: mandate.TypActorToken}
	if id != "" {
		c["iss"], c["sub"] = id, id
	} else {
		jwk := jose.NewPublicJWK(key.Public().(ed25519.PublicKey))
		h.JWK = &jwk
	}
	if mod != nil {
		mod(c)
	}
	b, _ := json.Marshal(c)
	return jose.Sign(key, h, b)
}

// jtiOf is the jti of a JWT, read without verifying it ("" if none).
func jtiOf(token string) string {
	jws, err := jose.Parse(token)
	if err != nil {
		return ""
	}
	var c struct {
		ID string `json:"jti"`
	}
	json.Unmarshal(jws.Payload, &c)
	return c.ID
}

func (f *fixture) delegate(parent *issuer.Token, holder, actor ed25519.PrivateKey, actorID string, mod func(*issuer.DelegateRequest)) (*issuer.Token, error) {
	r := issuer.DelegateRequest{
		SubjectToken: parent.AccessToken, SubjectTokenType: issuer.TokenTypeJWT,
		ActorToken: f.actorToken(parent.AccessToken, actor, actorID, nil), ActorTokenType: issuer.TokenTypeJWT,
	}
	if parent.Claims.Confirm != nil {
		r.DPoP = dpop.NewProof(holder, "POST", tokenURL, "", f.clk.Now())
	}
	if mod != nil {
		mod(&r)
	}
	return f.is.Delegate(context.Background(), r)
}

// events counts the audit events of a type.
func (f *fixture) events(typ string) int {
	f.t.Helper()
	evs, err := f.store.Events(context.Background(), mandate.EventFilter{Type: typ, Limit: mandate.MaxEventsPerQuery})
	if err != nil {
		f.t.Fatal(err)
	}
	return len(evs)
}

func TestDelegateEphemeralChain(t *testing.T) {
	f := newFixture(t)
	root := f.root("mcp:crm:* mcp:email:send", time.Minute, true)
	k1, k2 := newKey(t), newKey(t)
	child, err := f.delegate(root, f.key, k1, "", func(r *issuer.DelegateRequest) {
		r.Scope, r.TTL = "mcp:crm:list_customers mcp:crm:get_customer", 30*time.Second
	})
	if err != nil {
		t.Fatal(err)
	}
	c := child.Claims
	if !strings.HasPrefix(c.ClientID, agentID+"/sub/") || c.Subject != root.Claims.Subject || c.Task != root.Claims.Task || c.Parent != root.Claims.ID {
		t.Errorf("identity: client_id %s sub %s task %s par %s", c.ClientID, c.Subject, c.Task, c.Parent)
	}
	if got := c.Actor.Chain(); len(got) != 2 || got[0] != c.ClientID || got[1] != agentID {
		t.Errorf("chain %v", got)
	}
	if c.Confirm == nil || c.Confirm.JKT != jose.Thumbprint(k1.Public().(ed25519.PublicKey)) || child.TokenType != "DPoP" {
		t.Errorf("child of a bound parent must be bound to the actor's key: %+v", c.Confirm)
	}
	if len(c.Audience) != 1 || c.Audience[0] != "mcp:crm" {
		t.Errorf("aud %v, want the parent's audience narrowed to what the scopes reach", c.Audience)
	}
	// The grandchild, delegated by the ephemeral agent with its own key.
	f.clk.Advance(time.Millisecond)
	gc, err := f.delegate(child, k1, k2, "", func(r *issuer.DelegateRequest) {
		r.Scope, r.TTL = "mcp:crm:get_customer", 30*time.Millisecond
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := gc.Claims.Actor.Chain(); len(got) != 3 || got[1] != c.ClientID || !strings.HasPrefix(got[0], c.ClientID+"/sub/") {
		t.Errorf("grandchild chain %v", got)
	}
	if got := gc.Lifetime; got != 30*time.Millisecond {
		t.Errorf("grandchild ttl %v", got)
	}
	if n := f.events(mandate.EventMandateDelegated); n != 2 {
		t.Errorf("%d mandate.delegated events, want 2", n)
	}
	if n := f.is.LiveEphemeral(); n != 2 {
		t.Errorf("%d live ephemeral agents, want 2", n)
	}
	f.clk.Advance(time.Minute)
	if got := f.is.Ephemeral(); len(got) != 0 {
		t.Errorf("ephemeral agents outlive their mandates: %v", got)
	}
}

func TestDelegateRegisteredActor(t *testing.T) {
	f := newFixture(t)
	wk := newKey(t)
	f.addAgent("writer", "mcp:crm:get_customer", wk, nil)
	root := f.root("mcp:crm:*", time.Minute, false)
	child, err := f.delegate(root, f.key, wk, writerID, nil)
	if err == nil {
		t.Fatalf("delegating the parent's whole scope to an actor whose ceiling is narrower: issued %s", child.Claims.Scope)
	}
	child, err = f.delegate(root, f.key, wk, writerID, func(r *issuer.DelegateRequest) { r.Scope = "mcp:crm:get_customer" })
	if err != nil {
		t.Fatal(err)
	}
	if child.Claims.ClientID != writerID || child.TokenType != "Bearer" || child.Claims.Confirm != nil {
		t.Errorf("registered actor: %+v type %s", child.Claims, child.TokenType)
	}
	if !child.Claims.Expiry.Equal(root.Claims.Expiry.Time) {
		t.Errorf("default lifetime must be cut to the parent's: %v vs %v", child.Claims.Expiry, root.Claims.Expiry)
	}
}

// TestDelegateRefusals: every escalation and forgery is refused with a
// precise OAuth error, audited, and nothing is issued.
func TestDelegateRefusals(t *testing.T) {
	other := newKey(t)
	tests := []struct {
		name  string
		setup func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest))
		oauth string
		msg   string
	}{
		{"wider scope", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			return f.root("mcp:crm:list_customers", time.Minute, false), func(r *issuer.DelegateRequest) { r.Scope = "mcp:crm:*" }
		}, "invalid_scope", "not within the parent"},
		{"scope of another server", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			return f.root("mcp:crm:list_customers", time.Minute, false), func(r *issuer.DelegateRequest) { r.Scope = "mcp:email:send" }
		}, "invalid_scope", "not within the parent"},
		{"other audience", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			return f.root("mcp:crm:*", time.Minute, false), func(r *issuer.DelegateRequest) { r.Resources = []string{"mcp:email"} }
		}, "invalid_target", "reached"},
		{"longer ttl", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			return f.root("mcp:crm:*", time.Second, false), func(r *issuer.DelegateRequest) { r.TTL = 2 * time.Second }
		}, "invalid_request", "outlive the parent"},
		{"self-delegation", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			return f.root("mcp:crm:*", time.Minute, false), func(r *issuer.DelegateRequest) { r.ActorToken = f.actorToken(r.SubjectToken, f.key, agentID, nil) }
		}, "invalid_grant", "twice in the chain"},
		{"forged parent", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			tok := f.root("mcp:crm:*", time.Minute, false)
			jws, _ := jose.Parse(tok.AccessToken)
			forged := jose.Sign(other, jose.Header{Typ: "at+jwt", Kid: f.keys.Active().ID}, jws.Payload)
			return tok, func(r *issuer.DelegateRequest) { r.SubjectToken = forged }
		}, "invalid_grant", "signature"},
		{"expired parent", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			tok := f.root("mcp:crm:*", 30*time.Millisecond, false)
			f.clk.Advance(30 * time.Millisecond)
			return tok, nil
		}, "invalid_grant", "expired"},
		{"actor proof for another key", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			f.addAgent("writer", "mcp:crm:*", newKey(t), nil)
			return f.root("mcp:crm:*", time.Minute, false), func(r *issuer.DelegateRequest) { r.ActorToken = f.actorToken(r.SubjectToken, other, writerID, nil) }
		}, "invalid_grant", "signature"},
		{"ephemeral key not on the curve", withEphemeralX("AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "invalid_grant", "not a point"},
		{"ephemeral key of small order", withEphemeralX("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), "invalid_grant", "small order"},
		{"actor token for another endpoint", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			return f.root("mcp:crm:*", time.Minute, false), func(r *issuer.DelegateRequest) {
				r.ActorToken = f.actorToken(r.SubjectToken, other, "", func(c map[string]any) { c["aud"] = "https://elsewhere/token" })
			}
		}, "invalid_grant", "aud"},
		{"disabled actor", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			a := f.addAgent("writer", "mcp:crm:*", other, nil)
			if _, err := f.store.SetAgentStatus(context.Background(), a.ID, mandate.AgentDisabled, nil); err != nil {
				t.Fatal(err)
			}
			return f.root("mcp:crm:*", time.Minute, false), func(r *issuer.DelegateRequest) { r.ActorToken = f.actorToken(r.SubjectToken, other, writerID, nil) }
		}, "invalid_grant", "disabled"},
		{"disabled parent agent", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			tok := f.root("mcp:crm:*", time.Minute, false)
			if _, err := f.store.SetAgentStatus(context.Background(), agentID, mandate.AgentDisabled, nil); err != nil {
				t.Fatal(err)
			}
			return tok, nil
		}, "invalid_grant", "disabled"},
		{"revoked parent", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			tok := f.root("mcp:crm:*", time.Minute, false)
			if err := f.store.Revoke(context.Background(), &mandate.Revocation{MandateID: tok.Claims.ID, ExpiresAt: tok.Claims.Expiry.Time, RevokedAt: f.clk.Now(), RevokedBy: "admin"}, nil); err != nil {
				t.Fatal(err)
			}
			return tok, nil
		}, "invalid_grant", "revoked"},
		{"bound parent without a proof", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			return f.root("mcp:crm:*", time.Minute, true), func(r *issuer.DelegateRequest) { r.DPoP = "" }
		}, "invalid_dpop_proof", "DPoP-bound"},
		{"bound parent, proof by another key", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			return f.root("mcp:crm:*", time.Minute, true), func(r *issuer.DelegateRequest) { r.DPoP = dpop.NewProof(other, "POST", tokenURL, "", f.clk.Now()) }
		}, "invalid_dpop_proof", "not signed by the key"},
		{"subject token type", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			return f.root("mcp:crm:*", time.Minute, false), func(r *issuer.DelegateRequest) { r.SubjectTokenType = "urn:x" }
		}, "invalid_request", "subject_token_type"},
		// What a mandate is issued for is written down for everyone who
		// audits it: never a credential.
		{"a scope naming a credential", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			return f.root("mcp:crm:*", time.Minute, false), func(r *issuer.DelegateRequest) { r.Scope = "mcp:crm:AKIAIOSFODNN7EXAMPLE" }
		}, "invalid_scope", "scope holds what looks like a secret (aws_access_key_id)"},
		{"a resource naming a credential", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			return f.root("mcp:crm:*", time.Minute, false), func(r *issuer.DelegateRequest) { r.Resources = []string{"mcp:AKIAIOSFODNN7EXAMPLE"} }
		}, "invalid_target", "resource holds what looks like a secret (aws_access_key_id)"},
		{"a DPoP proof as actor token", func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
			return f.root("mcp:crm:*", time.Minute, false), func(r *issuer.DelegateRequest) {
				r.ActorToken = dpop.NewProof(other, "POST", tokenURL, "", f.clk.Now())
			}
		}, "invalid_grant", "not an actor token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			parent, mod := tt.setup(f)
			issued, denials := f.log.count(), f.events(mandate.EventDecision)
			tok, err := f.delegate(parent, f.key, other, "", mod)
			if err == nil {
				t.Fatalf("issued %+v", tok.Claims)
			}
			var e *mandate.Error
			if !errors.As(err, &e) || e.OAuth != tt.oauth || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("error %v (oauth %q), want %s mentioning %q", err, oauthOf(err), tt.oauth, tt.msg)
			}
			if f.log.count() != issued {
				t.Error("something was issued")
			}
			if f.events(mandate.EventDecision) != denials+1 {
				t.Error("the refusal is not in the audit log")
			}
		})
	}
}

func oauthOf(err error) string {
	var e *mandate.Error
	if errors.As(err, &e) {
		return e.OAuth
	}
	return ""
}

func TestDelegateDepthLimit(t *testing.T) {
	f := newFixture(t)
	tok := f.root("mcp:crm:*", time.Minute, false)
	holder := f.key
	for depth := 2; depth <= issuer.DefaultMaxDepth; depth++ {
		k := newKey(t)
		var err error
		if tok, err = f.delegate(tok, holder, k, "", nil); err != nil {
			t.Fatalf("depth %d: %v", depth, err)
		}
		holder = k
	}
	_, err := f.delegate(tok, holder, newKey(t), "", nil)
	if oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), "over its limit of 5") {
		t.Fatalf("depth %d: %v", issuer.DefaultMaxDepth+1, err)
	}
}

func TestDelegateAgentDepthLimit(t *testing.T) {
	f := newFixture(t)
	wk := newKey(t)
	f.addAgent("writer", "mcp:crm:*", wk, func(a *mandate.Agent) { a.MaxDepth = 2 })
	tok := f.root("mcp:crm:*", time.Minute, false)
	child, err := f.delegate(tok, f.key, wk, writerID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.delegate(child, wk, newKey(t), "", nil); oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), "limit of 2") {
		t.Fatalf("the writer's limit of 2 does not hold: %v", err)
	}
}

// TestDelegateRevokedAncestor: once a mandate is revoked, nothing below it
// can delegate, whether the issuer remembers the chain or reads it back
// from the issuance records after a restart.
func TestDelegateRevokedAncestor(t *testing.T) {
	for _, restart := range []bool{false, true} {
		f := newFixture(t)
		root := f.root("mcp:crm:*", time.Minute, false)
		k1, k2 := newKey(t), newKey(t)
		child, err := f.delegate(root, f.key, k1, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		grandchild, err := f.delegate(child, k1, k2, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.store.Revoke(context.Background(), &mandate.Revocation{MandateID: root.Claims.ID, ExpiresAt: root.Claims.Expiry.Time, RevokedAt: f.clk.Now(), RevokedBy: "admin"}, nil); err != nil {
			t.Fatal(err)
		}
		if restart {
			f.store.Close()
			f.open()
		}
		for _, p := range []*issuer.Token{child, grandchild} {
			if _, err := f.delegate(p, k2, newKey(t), "", nil); oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), root.Claims.ID+", an ancestor") {
				t.Errorf("restart=%v: delegating below a revoked root: %v", restart, err)
			}
		}
		// The refusals name the task, for the monitor's dead-mandate-use.
		evs, _ := f.store.Events(context.Background(), mandate.EventFilter{Type: mandate.EventDecision, Task: root.Claims.Task, Limit: 10})
		if len(evs) != 2 || evs[0].Details["refused"] != "revocation" || evs[0].Mandate != child.Claims.ID {
			t.Errorf("restart=%v: the refusals' events: %+v", restart, evs)
		}
	}
	// An expired parent: its task too, with how long ago it expired.
	f := newFixture(t)
	root := f.root("mcp:crm:*", time.Minute, false)
	f.clk.Advance(2 * time.Minute)
	if _, err := f.delegate(root, f.key, newKey(t), "", nil); oauthOf(err) != "invalid_grant" {
		t.Fatalf("an expired parent: %v", err)
	}
	evs, _ := f.store.Events(context.Background(), mandate.EventFilter{Type: mandate.EventDecision, Task: root.Claims.Task, Limit: 10})
	if len(evs) != 1 || evs[0].Details["refused"] != "exp" || evs[0].Details["expired_ms"] == nil {
		t.Errorf("the expired parent's refusal: %+v", evs)
	}
}

// TestDelegateShortest: the shortest lifetime, 10 ms, is granted.
func TestDelegateShortest(t *testing.T) {
	f := newFixture(t)
	f.clk.Advance(123456 * time.Nanosecond) // a clock between two milliseconds
	child, err := f.delegate(f.root("mcp:crm:*", time.Minute, false), f.key, newKey(t), "", func(r *issuer.DelegateRequest) { r.TTL = issuer.MinTTL })
	if err != nil {
		t.Fatal(err)
	}
	if got := child.Lifetime; got != issuer.MinTTL {
		t.Errorf("ttl %v", got)
	}
}

func TestDelegateEphemeralKeyLoop(t *testing.T) {
	f := newFixture(t)
	k := newKey(t)
	child, err := f.delegate(f.root("mcp:crm:*", time.Minute, false), f.key, k, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.delegate(child, k, k, "", nil); oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), "cannot delegate to itself") {
		t.Fatalf("an ephemeral agent delegating to its own key: %v", err)
	}
}

func TestDelegateActorTokenReplay(t *testing.T) {
	f := newFixture(t)
	root := f.root("mcp:crm:*", time.Minute, false)
	k := newKey(t)
	at := f.actorToken(root.AccessToken, k, "", nil)
	use := func(r *issuer.DelegateRequest) { r.ActorToken = at }
	if _, err := f.delegate(root, f.key, k, "", use); err != nil {
		t.Fatal(err)
	}
	if _, err := f.delegate(root, f.key, k, "", use); oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), "replay") {
		t.Fatalf("replayed actor token: %v", err)
	}
}

// TestDelegateParentCache: a parent signed here is not verified again,
// but one presented after a restart (not in the cache) is, from the store.
func TestDelegateParentAfterRestart(t *testing.T) {
	f := newFixture(t)
	root := f.root("mcp:crm:*", time.Minute, false)
	f.store.Close()
	f.open()
	if _, err := f.delegate(root, f.key, newKey(t), "", nil); err != nil {
		t.Fatal(err)
	}
}

// TestApprovalFlow: a delegation of a gated scope waits for a person
// (the approver the gating agent names: its owner is the task's human);
// the approval is bound to that request and used once.
func TestApprovalFlow(t *testing.T) {
	f := newFixture(t)
	wk := newKey(t)
	f.addAgent("writer", "mcp:crm:*", wk, func(a *mandate.Agent) {
		a.Owner = "alice@example.org"
		a.Approval, _ = mandate.ParseScopeSet("mcp:crm:delete_*")
		a.Approvers = []string{"bob@example.org"}
	})
	root := f.root("mcp:crm:*", time.Minute, false)
	writer, err := f.delegate(root, f.key, wk, writerID, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Anything not gated passes at once, even below the gating agent.
	if _, err := f.delegate(writer, wk, newKey(t), "", func(r *issuer.DelegateRequest) { r.Scope = "mcp:crm:get_customer" }); err != nil {
		t.Fatal(err)
	}
	sub := newKey(t)
	gated := func(r *issuer.DelegateRequest) { r.Scope = "mcp:crm:delete_customer" }
	_, err = f.delegate(writer, wk, sub, "", gated)
	var pending *issuer.PendingError
	if !errors.As(err, &pending) || oauthOf(err) != "authorization_pending" {
		t.Fatalf("gated delegation: %v", err)
	}
	ap := pending.Approval
	if ap.Status != mandate.ApprovalPending || len(ap.Approvers) != 1 || ap.Approvers[0] != "bob@example.org" || !strings.Contains(ap.Reason, "delete_*") {
		t.Errorf("approval %+v", ap)
	}
	withID := func(r *issuer.DelegateRequest) { gated(r); r.ApprovalID = ap.ID }
	// Polling before the decision: still pending.
	if _, err := f.delegate(writer, wk, sub, "", withID); !errors.As(err, &pending) {
		t.Fatalf("poll: %v", err)
	}
	// Not an approver: refused and audited.
	denials := f.events(mandate.EventDecision)
	if _, err := f.is.Decide(context.Background(), ap.ID, "carol@example.org", true, ""); mandate.ErrorCode(err) != mandate.EFORBIDDEN {
		t.Fatalf("a non-approver approved: %v", err)
	}
	if f.events(mandate.EventDecision) != denials+1 {
		t.Error("the attempt by a non-approver is not audited")
	}
	// A note is prose for the people who audit the decision: one holding
	// a credential is refused, and the approval is still pending.
	if _, err := f.is.Decide(context.Background(), ap.ID, "bob@example.org", false, "it used ghp_"+strings.Repeat("a1B2", 9)); mandate.ErrorCode(err) != mandate.EINVALID ||
		!strings.Contains(err.Error(), "note holds what looks like a secret (github_token)") {
		t.Fatalf("a note holding a credential: %v", err)
	}
	if got, _ := f.store.Approval(context.Background(), ap.ID); got.Status != mandate.ApprovalPending || f.events(mandate.EventApprovalDenied) != 0 {
		t.Fatalf("after a refused note: %+v", got)
	}
	// A waiting request returns as soon as Bob decides.
	done := make(chan error, 1)
	go func() {
		_, err := f.delegate(writer, wk, sub, "", func(r *issuer.DelegateRequest) { withID(r); r.Wait = 10 * time.Second })
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if _, err := f.is.Decide(context.Background(), ap.ID, "bob@example.org", true, "ok for the cleanup"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("after approval: %v", err)
	}
	if n := f.events(mandate.EventApprovalGranted); n != 1 {
		t.Errorf("%d approval.granted events", n)
	}
	// A first request that waits gets its mandate once approved, with the
	// actor token it came with.
	sub2 := newKey(t)
	go func() {
		time.Sleep(20 * time.Millisecond)
		list, _ := f.store.Approvals(context.Background(), mandate.ApprovalFilter{Status: mandate.ApprovalPending})
		for _, a := range list {
			f.is.Decide(context.Background(), a.ID, "bob@example.org", true, "")
		}
	}()
	if _, err := f.delegate(writer, wk, sub2, "", func(r *issuer.DelegateRequest) { gated(r); r.Wait = 10 * time.Second }); err != nil {
		t.Fatalf("a waiting first request, approved: %v", err)
	}
	// Used once.
	if _, err := f.delegate(writer, wk, sub, "", withID); oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), "used already") {
		t.Fatalf("approval reused: %v", err)
	}
	// Bound to its request: another scope, or another actor, cannot use it.
	if _, err := f.delegate(writer, wk, newKey(t), "", withID); oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), "another request") {
		t.Fatalf("approval used by another actor: %v", err)
	}
}

func TestApprovalDeniedAndTimeout(t *testing.T) {
	f := newFixture(t)
	wk := newKey(t)
	f.addAgent("writer", "mcp:crm:*", wk, func(a *mandate.Agent) {
		a.Owner = "alice@example.org"
		a.Approval, _ = mandate.ParseScopeSet("mcp:crm:delete_*")
	})
	root := f.root("mcp:crm:*", time.Hour, false)
	writer, err := f.delegate(root, f.key, wk, writerID, nil)
	if err != nil {
		t.Fatal(err)
	}
	ask := func(sub ed25519.PrivateKey, id string) (*mandate.Approval, error) {
		_, err := f.delegate(writer, wk, sub, "", func(r *issuer.DelegateRequest) {
			r.Scope, r.ApprovalID = "mcp:crm:delete_customer", id
		})
		var p *issuer.PendingError
		if errors.As(err, &p) {
			return p.Approval, nil
		}
		return nil, err
	}
	sub1, sub2 := newKey(t), newKey(t)
	ap, err := ask(sub1, "")
	if err != nil {
		t.Fatal(err)
	}
	// The owner is the approver when none is named.
	if _, err := f.is.Decide(context.Background(), ap.ID, "alice@example.org", false, "not today"); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(sub1, ap.ID); oauthOf(err) != "access_denied" || !strings.Contains(err.Error(), "not today") {
		t.Fatalf("denied approval: %v", err)
	}
	ap2, err := ask(sub2, "")
	if err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Minute) // the fixture's ApprovalTimeout
	if n, err := f.is.ExpireApprovals(context.Background()); err != nil || n != 1 {
		t.Fatalf("ExpireApprovals: %d %v", n, err)
	}
	if _, err := ask(sub2, ap2.ID); oauthOf(err) != "expired_token" {
		t.Fatalf("timed-out approval: %v", err)
	}
	if n := f.events(mandate.EventApprovalDenied); n != 2 {
		t.Errorf("%d approval.denied events, want 2 (a denial and a timeout)", n)
	}
}

// withEphemeralX sets up a delegation whose actor token names, in its jwk
// header, an ephemeral key with x as given (signed by another key: the
// key is refused before its signature counts).
func withEphemeralX(x string) func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
	return func(f *fixture) (*issuer.Token, func(*issuer.DelegateRequest)) {
		return f.root("mcp:crm:*", time.Minute, false), func(r *issuer.DelegateRequest) {
			c, _ := json.Marshal(map[string]any{"aud": iss, "exp": f.clk.Now().Add(time.Minute).Unix(), "jti": "x-" + x[:4], "par": jtiOf(r.SubjectToken)})
			jwk := jose.JWK{Kty: "OKP", Crv: "Ed25519", X: x}
			_, signer, _ := ed25519.GenerateKey(rand.Reader)
			r.ActorToken = jose.Sign(signer, jose.Header{Typ: mandate.TypActorToken, JWK: &jwk}, c)
		}
	}
}
