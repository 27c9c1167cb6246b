package issuer_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/replay"
	"github.com/mandatehq/mandate/sqlite"
)

const (
	iss      = "https://mandate.test"
	tokenURL = iss + "/oauth2/token"
	agentID  = "spiffe://example.org/agent/researcher"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// countingLog wraps an IssuanceLog and counts what it stored; fail makes
// it refuse.
// before, if set, runs ahead of each record.
type countingLog struct {
	next   mandate.IssuanceLog
	mu     sync.Mutex
	n      int
	fail   error
	before func(*mandate.Issuance)
}

func (l *countingLog) RecordIssuance(ctx context.Context, rec *mandate.Issuance, ev *mandate.Event) error {
	if l.fail != nil {
		return l.fail
	}
	if l.before != nil {
		l.before(rec)
	}
	err := l.next.RecordIssuance(ctx, rec, ev)
	if err == nil {
		l.mu.Lock()
		l.n++
		l.mu.Unlock()
	}
	return err
}

func (l *countingLog) count() int { l.mu.Lock(); defer l.mu.Unlock(); return l.n }

type fixture struct {
	t     testing.TB
	clk   *clock
	store *sqlite.Store
	log   *countingLog
	keys  *issuer.Keyring
	is    *issuer.Issuer
	key   ed25519.PrivateKey
	dir   string
	// policy, if set, decides for the issuer open makes.
	policy issuer.Decider
	// allowUntyped sets Config.AllowUntypedClientAssertions.
	allowUntyped bool
	// limits bound its pending approvals (zero: the defaults).
	limits mandate.ApprovalLimits
	// helperKey is the key of bob's agent helper (bobsHelper).
	helperKey ed25519.PrivateKey
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{t: t, clk: &clock{t: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)}, dir: t.TempDir()}
	f.open()
	_, f.key, _ = ed25519.GenerateKey(rand.Reader)
	ceiling, _ := mandate.ParseScopeSet("mcp:crm:* mcp:email:send")
	pub := f.key.Public().(ed25519.PublicKey)
	if err := f.store.CreateAgent(context.Background(), &mandate.Agent{
		ID: agentID, Name: "researcher", Owner: "alice@example.org", Ceiling: ceiling,
		PublicKey: pub, KeyID: jose.Thumbprint(pub), Status: mandate.AgentActive, CreatedAt: f.clk.Now(), UpdatedAt: f.clk.Now(),
	}, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range fixtureApprovers {
		f.addApprover(p)
	}
	return f
}

// fixtureApprovers are the people with an approver credential in every
// fixture: deciding takes one that is not disabled.
var fixtureApprovers = []string{"alice@example.org", "bob@example.org", "carol@example.org", "writer-owner@example.org"}

// addApprover registers email as an approver (no audit event).
func (f *fixture) addApprover(email string) {
	f.t.Helper()
	h := sha256.Sum256([]byte("token of " + email))
	if err := f.store.CreateApprover(context.Background(), &mandate.Approver{Email: email, TokenHash: h[:], CreatedAt: f.clk.Now()}, nil); err != nil {
		f.t.Fatal(err)
	}
}

// open (re)opens the store and makes a new issuer, as a restart would.
func (f *fixture) open() {
	f.t.Helper()
	var err error
	// The fake clock stands for time that passes: pruning follows it.
	opened := f.clk.Now()
	f.store, err = sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(f.dir, "m.db"), Now: f.clk.Now,
		Elapsed: func() time.Duration { return f.clk.Now().Sub(opened) }})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { f.store.Close() })
	if f.keys == nil {
		f.keys, err = issuer.OpenKeyring(filepath.Join(f.dir, "keys.json"), issuer.MaxTTL, f.clk.Now())
		if err != nil {
			f.t.Fatal(err)
		}
		if _, err := f.keys.Finish(context.Background(), f.clk.Now(), noAnnounce); err != nil {
			f.t.Fatal(err)
		}
	}
	f.log = &countingLog{next: f.store}
	f.newIssuer()
}

// newIssuer makes the fixture's issuer on its store, keys and policy.
func (f *fixture) newIssuer() {
	f.t.Helper()
	var err error
	f.is, err = issuer.New(issuer.Config{Issuer: iss, Keys: f.keys, Agents: f.store, Log: f.log, Now: f.clk.Now,
		Assertions: f.store, Issuances: f.store, Revocations: f.store, Events: f.store, Approvals: f.store, ApprovalTimeout: time.Minute,
		ApprovalLimits: f.limits, Policy: f.policy, AllowUntypedClientAssertions: f.allowUntyped})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.is.RestoreReplay(context.Background(), f.store); err != nil {
		f.t.Fatal(err)
	}
}

// assertion builds a client assertion of the researcher agent by hand (not
// with the code under test).
func (f *fixture) assertion(mod func(map[string]any)) string {
	return f.assertionBy(f.key, agentID, mod)
}

// assertionBy builds a client assertion of agent id, signed with key.
func (f *fixture) assertionBy(key ed25519.PrivateKey, id string, mod func(map[string]any)) string {
	now := f.clk.Now()
	c := map[string]any{"iss": id, "sub": id, "aud": iss, "iat": now.Unix(),
		"exp": now.Add(time.Minute).Unix(), "jti": mandate.NewID("j", now)}
	if mod != nil {
		mod(c)
	}
	b, _ := json.Marshal(c)
	return jose.Sign(key, jose.Header{Typ: mandate.TypClientAssertion}, b)
}

func (f *fixture) request(mod func(*issuer.RootRequest)) issuer.RootRequest {
	r := issuer.RootRequest{ClientAssertionType: issuer.ClientAssertionType, ClientAssertion: f.assertion(nil), Scope: "mcp:crm:list_customers", TTL: 30 * time.Millisecond, TaskPurpose: "weekly report"}
	if mod != nil {
		mod(&r)
	}
	return r
}

func TestMintRoot(t *testing.T) {
	f := newFixture(t)
	proof := dpop.NewProof(f.key, "POST", tokenURL, "", f.clk.Now())
	tok, err := f.is.MintRoot(context.Background(), f.request(func(r *issuer.RootRequest) { r.DPoP = proof }))
	if err != nil {
		t.Fatal(err)
	}
	c := tok.Claims
	if tok.TokenType != "DPoP" || c.Confirm == nil || c.Confirm.JKT != jose.Thumbprint(f.key.Public().(ed25519.PublicKey)) {
		t.Errorf("not bound to the DPoP key: type %s cnf %+v", tok.TokenType, c.Confirm)
	}
	if c.Subject != "user:alice@example.org" || c.ClientID != agentID || c.Actor.Subject != agentID || c.Actor.Actor != nil {
		t.Errorf("identity claims wrong: %+v", c)
	}
	if got := tok.Lifetime; got != 30*time.Millisecond || !c.IssuedAt.Equal(c.IssuedAt.Truncate(time.Second)) || c.IssuedAt.After(time.Now()) {
		t.Errorf("lifetime %v, want 30ms", got)
	}
	if !strings.HasPrefix(c.ID, "m_") || !strings.HasPrefix(c.Task, "t_") || c.Parent != "" {
		t.Errorf("ids: jti %q task %q par %q", c.ID, c.Task, c.Parent)
	}
	if len(c.Audience) != 1 || c.Audience[0] != "mcp:crm" {
		t.Errorf("aud %v, want [mcp:crm] derived from the scope", c.Audience)
	}
	// The token is what the claims say, signed by the active key.
	jws, err := jose.Parse(tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := jws.Verify(f.keys.Active().Public()); err != nil {
		t.Fatal(err)
	}
	if jws.Header.Typ != "at+jwt" || jws.Header.Kid != f.keys.Active().ID {
		t.Errorf("header %+v", jws.Header)
	}
	if !strings.Contains(string(jws.Payload), `"exp":`+strings.TrimSuffix(mustJSON(c.Expiry), "")) {
		t.Errorf("payload %s does not carry exp with milliseconds", jws.Payload)
	}
	// Written ahead: the record is there.
	rec, err := f.store.Issuance(context.Background(), c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.TaskPurpose != "weekly report" || rec.JKT != c.Confirm.JKT || !rec.ExpiresAt.Equal(c.Expiry.Time) {
		t.Errorf("record %+v", rec)
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

func TestMintRootRefusals(t *testing.T) {
	other, _ := func() (ed25519.PrivateKey, error) { _, k, err := ed25519.GenerateKey(rand.Reader); return k, err }()
	tests := []struct {
		name  string
		mod   func(f *fixture, r *issuer.RootRequest)
		oauth string
		msg   string
	}{
		{"no assertion", func(f *fixture, r *issuer.RootRequest) { r.ClientAssertion, r.ClientAssertionType = "", "" }, "invalid_client", "missing"},
		{"wrong assertion type", func(f *fixture, r *issuer.RootRequest) { r.ClientAssertionType = "urn:x" }, "invalid_client", "client_assertion_type"},
		{"garbage assertion", func(f *fixture, r *issuer.RootRequest) { r.ClientAssertion = "a.b.c" }, "invalid_client", "client assertion"},
		{"alg none", func(f *fixture, r *issuer.RootRequest) {
			r.ClientAssertion = "eyJhbGciOiJub25lIn0." + strings.Split(f.assertion(nil), ".")[1] + "."
		}, "invalid_client", "alg"},
		{"signed by another key", func(f *fixture, r *issuer.RootRequest) {
			parts := strings.Split(f.assertion(nil), ".")
			b, _ := jose.Parse(f.assertion(nil))
			r.ClientAssertion = jose.Sign(other, jose.Header{Typ: mandate.TypClientAssertion}, b.Payload)
			_ = parts
		}, "invalid_client", "signature"},
		{"iss differs from sub", func(f *fixture, r *issuer.RootRequest) {
			r.ClientAssertion = f.assertion(func(c map[string]any) { c["iss"] = "spiffe://example.org/agent/x" })
		}, "invalid_client", "iss and sub"},
		{"unknown agent", func(f *fixture, r *issuer.RootRequest) {
			r.ClientAssertion = f.assertion(func(c map[string]any) {
				c["iss"], c["sub"] = "spiffe://example.org/agent/x", "spiffe://example.org/agent/x"
			})
		}, "invalid_client", "unknown agent"},
		{"wrong audience", func(f *fixture, r *issuer.RootRequest) {
			r.ClientAssertion = f.assertion(func(c map[string]any) { c["aud"] = "https://elsewhere/token" })
		}, "invalid_client", "aud"},
		{"expired assertion", func(f *fixture, r *issuer.RootRequest) {
			r.ClientAssertion = f.assertion(func(c map[string]any) { c["exp"] = f.clk.Now().Add(-time.Millisecond).UnixMilli() / 1000 })
		}, "invalid_client", "expired"},
		{"assertion living too long", func(f *fixture, r *issuer.RootRequest) {
			r.ClientAssertion = f.assertion(func(c map[string]any) { c["exp"] = f.clk.Now().Add(6 * time.Minute).Unix() })
		}, "invalid_client", "ahead"},
		{"future-dated assertion", func(f *fixture, r *issuer.RootRequest) {
			r.ClientAssertion = f.assertion(func(c map[string]any) { c["iat"] = f.clk.Now().Add(time.Minute).Unix() })
		}, "invalid_client", "future"},
		{"not yet valid assertion", func(f *fixture, r *issuer.RootRequest) {
			r.ClientAssertion = f.assertion(func(c map[string]any) { c["nbf"] = f.clk.Now().Add(time.Second).Unix() })
		}, "invalid_client", "not valid before"},
		{"no jti", func(f *fixture, r *issuer.RootRequest) {
			r.ClientAssertion = f.assertion(func(c map[string]any) { delete(c, "jti") })
		}, "invalid_client", "jti"},
		{"client_id mismatch", func(f *fixture, r *issuer.RootRequest) { r.ClientID = "spiffe://example.org/agent/x" }, "invalid_client", "client_id"},
		{"no scope", func(f *fixture, r *issuer.RootRequest) { r.Scope = "" }, "invalid_scope", "required"},
		{"bad scope", func(f *fixture, r *issuer.RootRequest) { r.Scope = "mcp:crm" }, "invalid_scope", "mcp:crm"},
		{"scope outside ceiling", func(f *fixture, r *issuer.RootRequest) { r.Scope = "mcp:crm:x mcp:email:*" }, "invalid_scope", "outside the ceiling"},
		{"ttl too short", func(f *fixture, r *issuer.RootRequest) { r.TTL = 9 * time.Millisecond }, "invalid_request", "ttl_ms"},
		{"ttl too long", func(f *fixture, r *issuer.RootRequest) { r.TTL = time.Hour + time.Millisecond }, "invalid_request", "ttl_ms"},
		{"bad resource", func(f *fixture, r *issuer.RootRequest) { r.Resources = []string{"not a uri"} }, "invalid_target", "resource"},
		{"resource with wildcard", func(f *fixture, r *issuer.RootRequest) { r.Resources = []string{"mcp:*"} }, "invalid_target", "resource"},
		{"resource the scopes do not reach", func(f *fixture, r *issuer.RootRequest) { r.Resources = []string{"mcp:github"} }, "invalid_target", "not reached"},
		{"resource of another kind", func(f *fixture, r *issuer.RootRequest) { r.Resources = []string{"http:crm"} }, "invalid_target", "not reached"},
		{"resource as a URL", func(f *fixture, r *issuer.RootRequest) { r.Resources = []string{"https://crm.example/api"} }, "invalid_target", "mcp:<server>"},
		{"purpose with control chars", func(f *fixture, r *issuer.RootRequest) { r.TaskPurpose = "a\x1b[31m" }, "invalid_request", "task_purpose"},
		// What a mandate is issued for is written down for everyone who
		// audits it and shown to approvers: never a credential.
		{"purpose holding a credential", func(f *fixture, r *issuer.RootRequest) { r.TaskPurpose = "deploy with AKIAIOSFODNN7EXAMPLE" },
			"invalid_request", "task_purpose holds what looks like a secret (aws_access_key_id)"},
		{"scope naming a credential", func(f *fixture, r *issuer.RootRequest) { r.Scope = "mcp:crm:ghp_" + strings.Repeat("a1B2", 9) },
			"invalid_scope", "scope holds what looks like a secret (github_token)"},
		{"resource naming a credential", func(f *fixture, r *issuer.RootRequest) { r.Resources = []string{"mcp:AKIAIOSFODNN7EXAMPLE"} },
			"invalid_target", "resource holds what looks like a secret (aws_access_key_id)"},
		{"dpop garbage", func(f *fixture, r *issuer.RootRequest) { r.DPoP = "x" }, "invalid_dpop_proof", "dpop"},
		{"dpop for another url", func(f *fixture, r *issuer.RootRequest) {
			r.DPoP = dpop.NewProof(f.key, "POST", "https://elsewhere/token", "", f.clk.Now())
		}, "invalid_dpop_proof", "htu"},
		{"dpop too old", func(f *fixture, r *issuer.RootRequest) {
			r.DPoP = dpop.NewProof(f.key, "POST", tokenURL, "", f.clk.Now().Add(-2*time.Minute))
		}, "invalid_dpop_proof", "iat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			req := f.request(nil)
			tt.mod(f, &req)
			tok, err := f.is.MintRoot(context.Background(), req)
			if err == nil {
				t.Fatalf("issued %v", tok.Claims)
			}
			var e *mandate.Error
			if !errors.As(err, &e) || e.OAuth != tt.oauth {
				t.Fatalf("error %v (oauth %q), want oauth %q", err, e.OAuth, tt.oauth)
			}
			if !strings.Contains(strings.ToLower(e.Message), strings.ToLower(tt.msg)) {
				t.Errorf("message %q does not mention %q", e.Message, tt.msg)
			}
			if n := f.log.count(); n != 0 {
				t.Errorf("%d issuances recorded for a refused request", n)
			}
		})
	}
}

func TestAssertionReplay(t *testing.T) {
	f := newFixture(t)
	req := f.request(nil)
	if _, err := f.is.MintRoot(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	_, err := f.is.MintRoot(context.Background(), req)
	if e := (*mandate.Error)(nil); !errors.As(err, &e) || e.OAuth != "invalid_client" || !strings.Contains(e.Message, "replay") {
		t.Fatalf("replay: %v", err)
	}

	// After a restart the replay set is restored from the issuance log.
	f.store.Close()
	f.open()
	f.clk.Advance(30 * time.Second)
	_, err = f.is.MintRoot(context.Background(), req)
	if e := (*mandate.Error)(nil); !errors.As(err, &e) || e.OAuth != "invalid_client" || !strings.Contains(e.Message, "replay") {
		t.Fatalf("replay after restart: %v", err)
	}
	if n := f.log.count(); n != 0 {
		t.Errorf("replayed assertion recorded %d issuances", n)
	}
}

func TestDPoPProofReplay(t *testing.T) {
	f := newFixture(t)
	proof := dpop.NewProof(f.key, "POST", tokenURL, "", f.clk.Now())
	if _, err := f.is.MintRoot(context.Background(), f.request(func(r *issuer.RootRequest) { r.DPoP = proof })); err != nil {
		t.Fatal(err)
	}
	_, err := f.is.MintRoot(context.Background(), f.request(func(r *issuer.RootRequest) { r.DPoP = proof }))
	if e := (*mandate.Error)(nil); !errors.As(err, &e) || e.OAuth != "invalid_dpop_proof" {
		t.Fatalf("replayed proof: %v", err)
	}
}

// No audit, no mandate: if the issuance cannot be recorded, nothing is issued.
func TestWriteAheadFailureWithholdsMandate(t *testing.T) {
	f := newFixture(t)
	f.log.fail = mandate.Errorf(mandate.EUNAVAILABLE, "disk full")
	tok, err := f.is.MintRoot(context.Background(), f.request(nil))
	if tok != nil {
		t.Fatal("a mandate was returned although its issuance was not recorded")
	}
	if e := (*mandate.Error)(nil); !errors.As(err, &e) || e.OAuth != "temporarily_unavailable" || strings.Contains(e.Message, "disk full") {
		t.Fatalf("error %v: want temporarily_unavailable without internal details", err)
	}
}

func TestResourceBecomesAudience(t *testing.T) {
	f := newFixture(t)
	tok, err := f.is.MintRoot(context.Background(), f.request(func(r *issuer.RootRequest) {
		r.Scope = "mcp:crm:list mcp:email:send"
		r.Resources = []string{"mcp:email"}
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tok.Claims.Audience, " "); got != "mcp:email" {
		t.Errorf("aud %q, want only the named resource", got)
	}
}

// noAnnounce records nothing: for tests without an audit log.
func noAnnounce(context.Context, *issuer.SigningKey, string) error { return nil }

func TestKeyringRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.json")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	r, err := issuer.OpenKeyring(path, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	// The first key is pending until it is announced.
	if r.Active() != nil || r.Pending() == nil {
		t.Fatal("a new keyring's first key signs before it is announced")
	}
	var announced []string
	record := func(_ context.Context, next *issuer.SigningKey, prev string) error {
		if r.Active() != nil && r.Active().ID == next.ID {
			t.Error("the key signs before its announcement")
		}
		announced = append(announced, next.ID+"<"+prev)
		return nil
	}
	first, err := r.Finish(ctx, t0, record)
	if err != nil || r.Active() == nil || r.Active().ID != first.ID || r.Pending() != nil {
		t.Fatalf("Finish: %v; active %v", err, r.Active())
	}
	second, err := r.Rotate(ctx, t0.Add(time.Minute), record)
	if err != nil {
		t.Fatal(err)
	}
	if r.Active().ID != second.ID || first.ID == second.ID {
		t.Fatal("rotate did not make a new active key")
	}
	if want := []string{first.ID + "<", second.ID + "<" + first.ID}; !slices.Equal(announced, want) {
		t.Errorf("announced %q, want %q", announced, want)
	}
	if n := len(r.JWKS(t0.Add(time.Minute))); n != 2 {
		t.Errorf("JWKS right after rotation has %d keys, want 2", n)
	}
	if _, ok := r.PublicKey(first.ID, t0.Add(time.Hour+time.Minute)); ok {
		t.Error("retired key still published after its retention")
	}
	// Reopen: the same keys come back, active last.
	r2, err := issuer.OpenKeyring(path, time.Hour, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if r2.Active().ID != second.ID || len(r2.Published(t0.Add(2*time.Minute))) != 2 {
		t.Errorf("reopened keyring differs")
	}
}

// A rotation whose announcement fails leaves the new key pending: saved
// and published, never signing. Reopened (a restart), it is still pending
// and the old key signs; Finish announces and activates that same key.
func TestKeyringRotationWriteAhead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "k.json")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	r, err := issuer.OpenKeyring(path, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	first, err := r.Finish(ctx, t0, noAnnounce)
	if err != nil {
		t.Fatal(err)
	}
	failed := errors.New("log unavailable")
	if _, err := r.Rotate(ctx, t0.Add(time.Minute), func(context.Context, *issuer.SigningKey, string) error { return failed }); !errors.Is(err, failed) {
		t.Fatalf("Rotate = %v, want the announcement's error", err)
	}
	pending := r.Pending()
	if pending == nil || r.Active().ID != first.ID {
		t.Fatal("a key whose announcement failed became active")
	}
	if _, ok := r.PublicKey(pending.ID, t0.Add(time.Minute)); !ok {
		t.Error("the pending key is not published")
	}
	r2, err := issuer.OpenKeyring(path, time.Hour, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if r2.Active().ID != first.ID || r2.Pending() == nil || r2.Pending().ID != pending.ID {
		t.Fatalf("reopened: active %v pending %v; want %s and pending %s", r2.Active(), r2.Pending(), first.ID, pending.ID)
	}
	var prev string
	k, err := r2.Finish(ctx, t0.Add(2*time.Minute), func(_ context.Context, next *issuer.SigningKey, p string) error { prev = p; return nil })
	if err != nil || k.ID != pending.ID || r2.Active().ID != pending.ID || prev != first.ID {
		t.Fatalf("Finish = %v, %v; active %v, retired %q", k, err, r2.Active(), prev)
	}
}

// Replaying a used assertion with fresh DPoP proofs must not fill the
// replay set (which would refuse everyone's mints once full).
func TestReplayFloodDoesNotFillReplaySet(t *testing.T) {
	f := newFixture(t)
	cache := replay.New(4)
	is, err := issuer.New(issuer.Config{Issuer: iss, Keys: f.keys, Agents: f.store, Log: f.log, Replay: cache, Now: f.clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	used := f.assertion(nil)
	req := func(a string) issuer.RootRequest {
		return issuer.RootRequest{ClientAssertionType: issuer.ClientAssertionType, ClientAssertion: a, Scope: "mcp:crm:x",
			DPoP: dpop.NewProof(f.key, "POST", tokenURL, "", f.clk.Now())}
	}
	if _, err := is.MintRoot(context.Background(), req(used)); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := is.MintRoot(context.Background(), req(used)); err == nil {
			t.Fatal("replayed assertion accepted")
		}
	}
	if n := cache.Len(); n != 2 {
		t.Errorf("replay set holds %d entries after a flood of replays, want 2 (one assertion, one proof)", n)
	}
	if _, err := is.MintRoot(context.Background(), req(f.assertion(nil))); err != nil {
		t.Errorf("a fresh mint after the flood: %v", err)
	}
}

// An agent disabled while its mandate is being recorded (after the checks,
// before the record is durable) gets none: the mandate recorded is
// revoked, and withheld. The same for a delegation, when an agent of the
// chain is disabled during the exchange.
func TestAgentDisabledDuringIssuance(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	var recorded []string
	disable := func(id string) func(*mandate.Issuance) {
		return func(rec *mandate.Issuance) {
			recorded = append(recorded, rec.MandateID)
			if _, err := f.store.SetAgentStatus(ctx, id, mandate.AgentDisabled, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.log.before = disable(agentID)
	_, err := f.is.MintRoot(ctx, f.request(nil))
	if err == nil || !strings.Contains(err.Error(), "disabled during the issuance") {
		t.Fatalf("a root mandate of an agent disabled during its issuance: %v", err)
	}
	if ok, _ := f.store.IsRevoked(ctx, recorded[0]); !ok {
		t.Error("the withheld root mandate is not revoked")
	}

	if _, err := f.store.SetAgentStatus(ctx, agentID, mandate.AgentActive, nil); err != nil {
		t.Fatal(err)
	}
	f.log.before = nil
	root := f.root("mcp:crm:*", time.Minute, false)
	f.log.before = disable(agentID)
	_, err = f.delegate(root, f.key, newKey(t), "", nil)
	if err == nil || !strings.Contains(err.Error(), "disabled during the exchange") {
		t.Fatalf("a delegation whose chain's agent was disabled during it: %v", err)
	}
	if ok, _ := f.store.IsRevoked(ctx, recorded[1]); !ok {
		t.Error("the withheld child mandate is not revoked")
	}
}
