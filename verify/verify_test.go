package verify_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/verify"
)

const iss = "https://mandate.test"

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

type env struct {
	key    ed25519.PrivateKey
	kid    string
	holder ed25519.PrivateKey
	now    time.Time
}

func newEnv(t *testing.T) *env {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	_, h, _ := ed25519.GenerateKey(rand.Reader)
	return &env{key: k, kid: "k1", holder: h, now: t0}
}

func (e *env) claims(ttl time.Duration) *mandate.Claims {
	iat := mandate.NewNumericDate(t0)
	return &mandate.Claims{
		Issuer: iss, Subject: "user:alice@example.org", ClientID: "spiffe://example.org/agent/a",
		Actor: &mandate.Actor{Subject: "spiffe://example.org/agent/a"}, Audience: mandate.Audience{"mcp:crm"},
		IssuedAt: iat, NotBefore: iat, Expiry: mandate.NumericDate{Time: t0.Add(ttl)},
		ID: "m_1", Scope: "mcp:crm:list", Task: "t_1",
	}
}

func (e *env) sign(c *mandate.Claims) string {
	b, _ := json.Marshal(c)
	return e.signBytes(b)
}

func (e *env) signBytes(payload []byte) string {
	return jose.Sign(e.key, jose.Header{Typ: "at+jwt", Kid: e.kid}, payload)
}

func (e *env) verifier(t *testing.T, mod func(*verify.Config)) *verify.Verifier {
	t.Helper()
	cfg := verify.Config{Issuer: iss, Keys: verify.StaticKeys{e.kid: e.key.Public().(ed25519.PublicKey)}, Audience: "mcp:crm",
		Now: func() time.Time { return e.now }}
	if mod != nil {
		mod(&cfg)
	}
	v, err := verify.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// A 30 ms mandate verifies up to its last millisecond and is refused from
// the millisecond it expires.
func TestMillisecondExpiry(t *testing.T) {
	e := newEnv(t)
	tok := e.sign(e.claims(30 * time.Millisecond))
	v := e.verifier(t, nil)
	for _, tc := range []struct {
		at   time.Duration
		want error
	}{
		{0, nil},
		{29 * time.Millisecond, nil},
		{29*time.Millisecond + 999*time.Microsecond, nil},
		{30 * time.Millisecond, verify.ErrExpired},
		{31 * time.Millisecond, verify.ErrExpired},
		{-time.Millisecond, verify.ErrNotYetValid},
	} {
		e.now = t0.Add(tc.at)
		_, err := v.Verify(context.Background(), tok)
		if !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
			t.Errorf("at +%v: got %v, want %v", tc.at, err, tc.want)
		}
	}
	// Skew is a named relaxation.
	e.now = t0.Add(31 * time.Millisecond)
	if _, err := e.verifier(t, func(c *verify.Config) { c.Skew = 5 * time.Millisecond }).Verify(context.Background(), tok); err != nil {
		t.Errorf("with 5ms skew at +31ms: %v", err)
	}
}

func TestVerifyRefusals(t *testing.T) {
	e := newEnv(t)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	good := e.claims(time.Minute)
	tests := []struct {
		name  string
		token func() string
		check string
		want  error
	}{
		{"garbage", func() string { return "not a jwt" }, "jws", verify.ErrMalformed},
		{"alg none", func() string {
			b, _ := json.Marshal(good)
			return b64([]byte(`{"alg":"none","typ":"at+jwt","kid":"k1"}`)) + "." + b64(b) + "."
		}, "alg", verify.ErrAlgorithm},
		{"alg HS256", func() string {
			b, _ := json.Marshal(good)
			return b64([]byte(`{"alg":"HS256","typ":"at+jwt","kid":"k1"}`)) + "." + b64(b) + "." + b64(make([]byte, 32))
		}, "alg", verify.ErrAlgorithm},
		{"untyped JWT", func() string {
			b, _ := json.Marshal(good)
			return jose.Sign(e.key, jose.Header{Kid: "k1", Typ: "JWT"}, b)
		}, "typ", verify.ErrMalformed},
		// Another kind of Mandate's JWTs, even signed by the issuer's key
		// with a mandate's claims, is not a mandate (RFC 8725 §3.11).
		{"a client assertion", func() string {
			b, _ := json.Marshal(good)
			return jose.Sign(e.key, jose.Header{Kid: "k1", Typ: mandate.TypClientAssertion}, b)
		}, "typ", verify.ErrMalformed},
		{"an actor token", func() string {
			b, _ := json.Marshal(good)
			return jose.Sign(e.key, jose.Header{Kid: "k1", Typ: mandate.TypActorToken}, b)
		}, "typ", verify.ErrMalformed},
		{"a DPoP proof", func() string {
			b, _ := json.Marshal(good)
			return jose.Sign(e.key, jose.Header{Kid: "k1", Typ: mandate.TypDPoPProof}, b)
		}, "typ", verify.ErrMalformed},
		{"untyped", func() string {
			b, _ := json.Marshal(good)
			return jose.Sign(e.key, jose.Header{Kid: "k1"}, b)
		}, "typ", verify.ErrMalformed},
		{"unknown kid", func() string {
			b, _ := json.Marshal(good)
			return jose.Sign(e.key, jose.Header{Kid: "k2", Typ: "at+jwt"}, b)
		}, "kid", verify.ErrUnknownKey},
		{"forged signature", func() string {
			b, _ := json.Marshal(good)
			return jose.Sign(other, jose.Header{Kid: "k1", Typ: "at+jwt"}, b)
		}, "signature", verify.ErrSignature},
		{"other issuer", func() string { c := *good; c.Issuer = "https://evil"; return e.sign(&c) }, "iss", verify.ErrIssuer},
		{"other audience", func() string { c := *good; c.Audience = mandate.Audience{"mcp:github"}; return e.sign(&c) }, "aud", verify.ErrAudience},
		{"no audience", func() string { c := *good; c.Audience = nil; return e.sign(&c) }, "aud", verify.ErrAudience},
		{"future iat", func() string {
			c := *good
			c.IssuedAt = mandate.NewNumericDate(t0.Add(time.Second))
			c.NotBefore = mandate.NumericDate{}
			return e.sign(&c)
		}, "iat", verify.ErrNotYetValid},
		{"no jti", func() string { c := *good; c.ID = ""; return e.sign(&c) }, "claims", verify.ErrMalformed},
		{"act is not the holder", func() string {
			c := *good
			c.Actor = &mandate.Actor{Subject: "spiffe://example.org/agent/b"}
			return e.sign(&c)
		}, "act", verify.ErrChain},
		{"delegated without par", func() string {
			c := *good
			c.Actor = &mandate.Actor{Subject: c.ClientID, Actor: &mandate.Actor{Subject: "spiffe://example.org/agent/b"}}
			return e.sign(&c)
		}, "par", verify.ErrChain},
		{"bound mandate as bearer", func() string {
			c := *good
			c.Confirm = &mandate.Confirmation{JKT: jose.Thumbprint(e.holder.Public().(ed25519.PublicKey))}
			return e.sign(&c)
		}, "dpop-bearer", verify.ErrDPoP},
	}
	v := e.verifier(t, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tt.token())
			var ve *verify.Error
			if !errors.As(err, &ve) || !errors.Is(err, tt.want) || ve.Check != tt.check {
				t.Fatalf("got %v (%#v), want check %q / %v", err, ve, tt.check, tt.want)
			}
		})
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func TestDPoPBinding(t *testing.T) {
	e := newEnv(t)
	c := e.claims(time.Minute)
	c.Confirm = &mandate.Confirmation{JKT: jose.Thumbprint(e.holder.Public().(ed25519.PublicKey))}
	tok := e.sign(c)
	v := e.verifier(t, nil)
	const url = "https://gw.example/mcp/crm"
	ctx := context.Background()

	proof := dpop.NewProof(e.holder, "POST", url, tok, e.now)
	if _, err := v.VerifyDPoP(ctx, tok, proof, "POST", url); err != nil {
		t.Fatalf("good proof: %v", err)
	}
	if _, err := v.VerifyDPoP(ctx, tok, proof, "POST", url); !errors.Is(err, verify.ErrDPoP) || !strings.Contains(err.Error(), "replay") {
		t.Errorf("replayed proof: %v", err)
	}
	_, thief, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := v.VerifyDPoP(ctx, tok, dpop.NewProof(thief, "POST", url, tok, e.now), "POST", url); !errors.Is(err, verify.ErrDPoP) || !strings.Contains(err.Error(), "another key") {
		t.Errorf("stolen mandate with the thief's key: %v", err)
	}
	if _, err := v.VerifyDPoP(ctx, tok, dpop.NewProof(e.holder, "POST", url, "other-token", e.now), "POST", url); !errors.Is(err, verify.ErrDPoP) {
		t.Errorf("proof for another token (ath): %v", err)
	}
	if _, err := v.VerifyDPoP(ctx, tok, dpop.NewProof(e.holder, "GET", url, tok, e.now), "POST", url); !errors.Is(err, verify.ErrDPoP) {
		t.Errorf("proof for another method: %v", err)
	}
	if _, err := v.VerifyDPoP(ctx, tok, "", "POST", url); !errors.Is(err, verify.ErrDPoP) {
		t.Errorf("no proof: %v", err)
	}

	// Through an http.Request.
	r := httptest.NewRequest("POST", url, nil)
	r.Header.Set("Authorization", "DPoP "+tok)
	r.Header.Set("DPoP", dpop.NewProof(e.holder, "POST", url, tok, e.now))
	if _, err := v.VerifyRequest(ctx, r, url); err != nil {
		t.Errorf("VerifyRequest: %v", err)
	}
	r.Header.Set("Authorization", "Bearer "+tok)
	if _, err := v.VerifyRequest(ctx, r, url); !errors.Is(err, verify.ErrDPoP) {
		t.Errorf("bound mandate sent as Bearer: %v", err)
	}

	// RequireDPoP refuses bearer mandates even with a proof.
	bearer := e.sign(e.claims(time.Minute))
	strict := e.verifier(t, func(c *verify.Config) { c.RequireDPoP = true })
	if _, err := strict.VerifyDPoP(ctx, bearer, dpop.NewProof(e.holder, "POST", url, bearer, e.now), "POST", url); !errors.Is(err, verify.ErrDPoP) {
		t.Errorf("RequireDPoP with a bearer mandate: %v", err)
	}
}

// A verifier's replay set starts empty, so a proof made before it was
// created (one a previous process may have accepted) is refused: a
// restart does not reopen a proof's 60 s replay window. A proof made since
// is good; ReplaySince names an older replay set.
func TestDPoPProofAcrossRestart(t *testing.T) {
	e := newEnv(t)
	c := e.claims(time.Hour)
	c.Confirm = &mandate.Confirmation{JKT: jose.Thumbprint(e.holder.Public().(ed25519.PublicKey))}
	tok := e.sign(c)
	const url = "https://gw.example/mcp/crm"
	ctx := context.Background()
	proof := dpop.NewProof(e.holder, "POST", url, tok, e.now)
	if _, err := e.verifier(t, nil).VerifyDPoP(ctx, tok, proof, "POST", url); err != nil {
		t.Fatalf("good proof: %v", err)
	}
	e.now = e.now.Add(time.Millisecond) // the restart
	v := e.verifier(t, nil)
	e.now = e.now.Add(10 * time.Second)
	if _, err := v.VerifyDPoP(ctx, tok, proof, "POST", url); !errors.Is(err, verify.ErrDPoP) || !strings.Contains(err.Error(), "before the server started") {
		t.Fatalf("a proof of before the restart, replayed: %v", err)
	}
	if _, err := v.VerifyDPoP(ctx, tok, dpop.NewProof(e.holder, "POST", url, tok, e.now), "POST", url); err != nil {
		t.Errorf("a proof made after the restart: %v", err)
	}
	// With skew, a proof up to Skew ahead of the old process's clock may
	// have been accepted there: the boundary moves by Skew.
	skewed := e.verifier(t, func(c *verify.Config) { c.Skew = 2 * time.Second; c.ReplaySince = e.now })
	if _, err := skewed.VerifyDPoP(ctx, tok, dpop.NewProofMillis(e.holder, "POST", url, tok, e.now.Add(time.Second)), "POST", url); !errors.Is(err, verify.ErrDPoP) {
		t.Errorf("a proof within the skew of the start: %v", err)
	}
	older := e.verifier(t, func(c *verify.Config) { c.ReplaySince = t0 })
	if _, err := older.VerifyDPoP(ctx, tok, dpop.NewProof(e.holder, "POST", url, tok, t0.Add(time.Second)), "POST", url); err != nil {
		t.Errorf("ReplaySince of an older replay set: %v", err)
	}
}

func TestRevocationHook(t *testing.T) {
	e := newEnv(t)
	tok := e.sign(e.claims(time.Minute))
	revoked := verify.ErrRevoked
	v := e.verifier(t, func(c *verify.Config) {
		c.Revoked = func(ctx context.Context, c *mandate.Claims) error { return revoked }
	})
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, verify.ErrRevoked) {
		t.Errorf("revoked: %v", err)
	}
	revoked = errors.New("revocation list unreachable")
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, verify.ErrRevoked) {
		t.Errorf("revocation status unknown must fail closed: %v", err)
	}
}

// The JWKS source fetches once, refreshes on an unknown kid at most once
// per MinRefreshInterval, and picks up rotated keys.
func TestJWKSRefresh(t *testing.T) {
	e := newEnv(t)
	_, k2, _ := ed25519.GenerateKey(rand.Reader)
	var fetches atomic.Int32
	var withK2 atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		j1 := jose.NewPublicJWK(e.key.Public().(ed25519.PublicKey))
		j1.Kid = "k1"
		keys := []jose.JWK{j1}
		if withK2.Load() {
			j2 := jose.NewPublicJWK(k2.Public().(ed25519.PublicKey))
			j2.Kid = "k2"
			keys = append(keys, j2)
		}
		json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	}))
	defer srv.Close()
	now := t0
	src := verify.NewJWKS(srv.URL, verify.JWKSOptions{Now: func() time.Time { return now }})
	ctx := context.Background()
	if _, err := src.Key(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	src.Key(ctx, "k1")
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d fetches for a known key, want 1", n)
	}
	// Unknown kids do not hammer the issuer: one refresh per interval.
	now = now.Add(verify.DefaultMinRefreshInterval)
	for range 10 {
		if _, err := src.Key(ctx, "nope"); !errors.Is(err, verify.ErrUnknownKey) {
			t.Fatalf("unknown kid: %v", err)
		}
	}
	if n := fetches.Load(); n != 2 {
		t.Errorf("%d fetches after 10 unknown kids, want 2", n)
	}
	// After rotation, the new key is found once the interval has passed.
	withK2.Store(true)
	if _, err := src.Key(ctx, "k2"); !errors.Is(err, verify.ErrUnknownKey) {
		t.Errorf("refreshed within the interval: %v", err)
	}
	now = now.Add(verify.DefaultMinRefreshInterval)
	if _, err := src.Key(ctx, "k2"); err != nil {
		t.Errorf("rotated key: %v", err)
	}
}

// A refresh in progress (a slow issuer) does not hold up lookups of keys
// already cached, and keys too stale are refused once the issuer cannot
// be reached.
func TestJWKSSlowIssuerAndStaleness(t *testing.T) {
	e := newEnv(t)
	release := make(chan struct{})
	var slow atomic.Bool
	var down atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if slow.Load() {
			<-release
		}
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		j := jose.NewPublicJWK(e.key.Public().(ed25519.PublicKey))
		j.Kid = "k1"
		json.NewEncoder(w).Encode(map[string]any{"keys": []jose.JWK{j}})
	}))
	defer srv.Close()
	defer close(release)
	var now atomic.Int64
	now.Store(t0.UnixNano())
	src := verify.NewJWKS(srv.URL, verify.JWKSOptions{Now: func() time.Time { return time.Unix(0, now.Load()) }})
	ctx := context.Background()
	if _, err := src.Key(ctx, "k1"); err != nil {
		t.Fatal(err)
	}
	slow.Store(true)
	now.Add(int64(verify.DefaultMinRefreshInterval))
	go src.Key(ctx, "unknown") // starts a fetch that hangs until release
	time.Sleep(50 * time.Millisecond)
	done := make(chan error, 1)
	go func() { _, err := src.Key(ctx, "k1"); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a cached key waited for a refresh in progress")
	}
	release <- struct{}{}
	slow.Store(false)

	// The issuer goes down: cached keys serve until MaxStale, then fail.
	down.Store(true)
	now.Add(int64(verify.DefaultMaxAge))
	if _, err := src.Key(ctx, "k1"); err != nil {
		t.Errorf("stale but within MaxStale: %v", err)
	}
	now.Add(int64(verify.DefaultMaxStale))
	if _, err := src.Key(ctx, "k1"); !errors.Is(err, verify.ErrUnknownKey) {
		t.Errorf("beyond MaxStale with the issuer down: %v, want refusal", err)
	}
}

const (
	agentA = "spiffe://example.org/agent/a"
	orch   = "spiffe://example.org/agent/orch"
	eph    = "spiffe://example.org/agent/orch/sub/7f3a"
)

// chained returns good claims whose actor chain is ids, current actor
// first: the holder is ids[0], and a chain of more than one actor names a
// parent.
func (e *env) chained(ids ...string) *mandate.Claims {
	c := e.claims(time.Minute)
	c.Actor = nil
	for i := len(ids) - 1; i >= 0; i-- {
		c.Actor = &mandate.Actor{Subject: ids[i], Actor: c.Actor}
	}
	c.ClientID = ids[0]
	if len(ids) > 1 {
		c.Parent = "m_0"
	}
	return c
}

// deep returns a chain of n distinct registered agents.
func deep(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("spiffe://example.org/agent/a%d", i)
	}
	return ids
}

// The shape of the actor chain is checked offline, on every mandate.
func TestChainShape(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name   string
		claims func() *mandate.Claims
		mod    func(*verify.Config)
		check  string // "" if the mandate verifies
	}{
		{"root", func() *mandate.Claims { return e.chained(agentA) }, nil, ""},
		{"delegated once", func() *mandate.Claims { return e.chained(orch, agentA) }, nil, ""},
		{"ephemeral three deep", func() *mandate.Claims { return e.chained(eph, orch, agentA) }, nil, ""},
		{"ephemeral of an ephemeral", func() *mandate.Claims { return e.chained(eph+"/sub/01", eph, orch) }, nil, ""},
		{"ephemeral delegates to a registered agent", func() *mandate.Claims {
			return e.chained("spiffe://example.org/agent/b", eph, orch)
		}, nil, ""},
		{"at the default depth", func() *mandate.Claims { return e.chained(deep(verify.DefaultMaxDepth)...) }, nil, ""},

		{"no act", func() *mandate.Claims { c := e.chained(agentA); c.Actor = nil; return c }, nil, "act"},
		{"act is not the holder", func() *mandate.Claims { c := e.chained(orch, agentA); c.ClientID = agentA; return c }, nil, "act"},
		{"root with a parent", func() *mandate.Claims { c := e.chained(agentA); c.Parent = "m_0"; return c }, nil, "par"},
		{"delegated without a parent", func() *mandate.Claims { c := e.chained(orch, agentA); c.Parent = ""; return c }, nil, "par"},
		{"agent repeated", func() *mandate.Claims { return e.chained(agentA, orch, agentA) }, nil, "cycle"},
		{"agent delegates to itself", func() *mandate.Claims { return e.chained(orch, orch) }, nil, "cycle"},
		{"over the default depth", func() *mandate.Claims { return e.chained(deep(verify.DefaultMaxDepth + 1)...) }, nil, "depth"},
		{"over a configured depth", func() *mandate.Claims { return e.chained(eph, orch, agentA) },
			func(c *verify.Config) { c.MaxDepth = 2 }, "depth"},
		{"user as actor", func() *mandate.Claims { return e.chained(orch, "user:alice@example.org") }, nil, "spiffe"},
		{"URL as actor", func() *mandate.Claims { return e.chained("https://example.org/agent/a") }, nil, "spiffe"},
		{"empty actor", func() *mandate.Claims { return e.chained(orch, "") }, nil, "spiffe"},
		{"no path", func() *mandate.Claims { return e.chained("spiffe://example.org") }, nil, "spiffe"},
		{"upper-case trust domain", func() *mandate.Claims { return e.chained("spiffe://Example.org/agent/a") }, nil, "spiffe"},
		{"empty segment", func() *mandate.Claims { return e.chained("spiffe://example.org/agent//a") }, nil, "spiffe"},
		{"dot-dot segment", func() *mandate.Claims { return e.chained(orch+"/sub/../../b", orch) }, nil, "spiffe"},
		{"ephemeral root", func() *mandate.Claims { return e.chained(eph) }, nil, "ephemeral"},
		{"ephemeral at the root of a chain", func() *mandate.Claims { return e.chained(orch, eph) }, nil, "ephemeral"},
		{"ephemeral of another agent", func() *mandate.Claims { return e.chained(eph, agentA) }, nil, "ephemeral"},
		{"ephemeral grandchild", func() *mandate.Claims { return e.chained(eph+"/sub/01", orch, agentA) }, nil, "ephemeral"},
		{"ephemeral in another trust domain", func() *mandate.Claims {
			return e.chained("spiffe://other.org/agent/orch/sub/7f3a", orch)
		}, nil, "ephemeral"},
		{"ephemeral under a prefix of its parent", func() *mandate.Claims {
			return e.chained(orch+"/sub/7f3a", orch+"x")
		}, nil, "ephemeral"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.verifier(t, tt.mod).Verify(context.Background(), e.sign(tt.claims()))
			if tt.check == "" {
				if err != nil {
					t.Fatalf("got %v, want no error", err)
				}
				return
			}
			var ve *verify.Error
			if !errors.As(err, &ve) || !errors.Is(err, verify.ErrChain) || ve.Check != tt.check {
				t.Fatalf("got %v (%#v), want check %q / %v", err, ve, tt.check, verify.ErrChain)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	client := &http.Client{}
	for _, tt := range []struct {
		name string
		mod  func(*verify.Config)
		ok   bool
	}{
		{"negative MaxDepth", func(c *verify.Config) { c.MaxDepth = -1 }, false},
		{"introspection without URL", func(c *verify.Config) { c.Introspection = &verify.Introspection{} }, false},
		{"relative introspection URL", func(c *verify.Config) { c.Introspection = &verify.Introspection{URL: "/oauth2/introspect"} }, false},
		{"introspection URL of another scheme", func(c *verify.Config) { c.Introspection = &verify.Introspection{URL: "ftp://mandate.test/x"} }, false},
		{"introspection", func(c *verify.Config) {
			c.Introspection = &verify.Introspection{URL: iss + "/oauth2/introspect", Client: client}
		}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := verify.Config{Issuer: iss, Keys: verify.StaticKeys{}, Audience: "mcp:crm"}
			tt.mod(&cfg)
			if _, err := verify.New(cfg); (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if client.CheckRedirect != nil {
		t.Error("New changed the caller's http.Client")
	}
}

// VerifyOnline asks the issuer's introspection endpoint after the offline
// checks, and refuses the mandate on anything but an active answer about
// the same mandate.
func TestVerifyOnline(t *testing.T) {
	e := newEnv(t)
	c := e.chained(eph, orch, agentA)
	tok := e.sign(c)
	const admin = "admin-secret"
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		w.Write([]byte(`{"active":true,"jti":"m_1"}`))
	}))
	defer other.Close()

	tests := []struct {
		name      string
		answer    func(w http.ResponseWriter)
		authorize func(*http.Request) error
		ctx       func() context.Context
		want      error // nil if the mandate verifies
	}{
		{"active", func(w http.ResponseWriter) { w.Write([]byte(`{"active":true,"jti":"m_1","client_id":"` + eph + `"}`)) }, nil, nil, nil},
		{"inactive", func(w http.ResponseWriter) { w.Write([]byte(`{"active":false}`)) }, nil, nil, verify.ErrInactive},
		{"no active member", func(w http.ResponseWriter) { w.Write([]byte(`{"jti":"m_1"}`)) }, nil, nil, verify.ErrInactive},
		{"HTTP 500", func(w http.ResponseWriter) { http.Error(w, "boom", http.StatusInternalServerError) }, nil, nil, verify.ErrIntrospection},
		{"HTTP 401", func(w http.ResponseWriter) { http.Error(w, "who?", http.StatusUnauthorized) }, nil, nil, verify.ErrIntrospection},
		{"bad JSON", func(w http.ResponseWriter) { w.Write([]byte(`{"active":true,`)) }, nil, nil, verify.ErrIntrospection},
		{"active as a string", func(w http.ResponseWriter) { w.Write([]byte(`{"active":"true","jti":"m_1"}`)) }, nil, nil, verify.ErrIntrospection},
		{"wrong jti", func(w http.ResponseWriter) { w.Write([]byte(`{"active":true,"jti":"m_2"}`)) }, nil, nil, verify.ErrIntrospection},
		{"no jti", func(w http.ResponseWriter) { w.Write([]byte(`{"active":true}`)) }, nil, nil, verify.ErrIntrospection},
		{"oversized body", func(w http.ResponseWriter) {
			w.Write([]byte(`{"active":true,"jti":"m_1","pad":"` + strings.Repeat("x", 64<<10) + `"}`))
		}, nil, nil, verify.ErrIntrospection},
		{"redirect", func(w http.ResponseWriter) {
			w.Header().Set("Location", other.URL)
			w.WriteHeader(http.StatusTemporaryRedirect)
		}, nil, nil, verify.ErrIntrospection},
		{"credential unavailable", nil, func(*http.Request) error { return errors.New("no admin token") }, nil, verify.ErrIntrospection},
		{"context done", nil, nil, func() context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, verify.ErrIntrospection},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost || r.URL.Path != "/oauth2/introspect" ||
					r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" ||
					r.Header.Get("Authorization") != "Bearer "+admin {
					http.Error(w, "bad request", http.StatusBadRequest)
					return
				}
				if err := r.ParseForm(); err != nil || len(r.PostForm) != 1 || r.PostForm.Get("token") != tok {
					http.Error(w, "bad form", http.StatusBadRequest)
					return
				}
				tt.answer(w)
			}))
			defer srv.Close()
			authorize := tt.authorize
			if authorize == nil {
				authorize = func(r *http.Request) error { r.Header.Set("Authorization", "Bearer "+admin); return nil }
			}
			v := e.verifier(t, func(c *verify.Config) {
				c.Introspection = &verify.Introspection{URL: srv.URL + "/oauth2/introspect", Client: srv.Client(), Authorize: authorize}
			})
			ctx := context.Background()
			if tt.ctx != nil {
				ctx = tt.ctx()
			}
			got, err := v.VerifyOnline(ctx, tok)
			if tt.want == nil {
				if err != nil || got.ID != c.ID {
					t.Fatalf("got %v, %v; want the claims of %s", got, err, c.ID)
				}
				return
			}
			var ve *verify.Error
			if !errors.As(err, &ve) || !errors.Is(err, tt.want) || ve.Check != "online" || got != nil {
				t.Fatalf("got %v (%#v), want check \"online\" / %v", err, ve, tt.want)
			}
		})
	}
	if n := elsewhere.Load(); n != 0 {
		t.Errorf("the mandate was sent %d times to where the issuer redirected", n)
	}
}

// VerifyOnline does the offline checks first, and does not ask the issuer
// about a mandate they refuse; without an endpoint it refuses every mandate.
func TestVerifyOnlineOfflineFirst(t *testing.T) {
	e := newEnv(t)
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.Write([]byte(`{"active":true,"jti":"m_1"}`))
	}))
	defer srv.Close()
	v := e.verifier(t, func(c *verify.Config) { c.Introspection = &verify.Introspection{URL: srv.URL} })
	bad := e.chained(agentA, orch, agentA)
	if _, err := v.VerifyOnline(context.Background(), e.sign(bad)); !errors.Is(err, verify.ErrChain) {
		t.Errorf("repeated agent: %v, want %v", err, verify.ErrChain)
	}
	e.now = t0.Add(time.Hour)
	if _, err := v.VerifyOnline(context.Background(), e.sign(e.claims(time.Minute))); !errors.Is(err, verify.ErrExpired) {
		t.Errorf("expired: %v, want %v", err, verify.ErrExpired)
	}
	if n := asked.Load(); n != 0 {
		t.Errorf("the issuer was asked %d times about mandates refused offline", n)
	}

	e.now = t0
	_, err := e.verifier(t, nil).VerifyOnline(context.Background(), e.sign(e.claims(time.Minute)))
	var ve *verify.Error
	if !errors.As(err, &ve) || ve.Check != "online" || !errors.Is(err, verify.ErrIntrospection) {
		t.Errorf("no Config.Introspection: %v, want check \"online\"", err)
	}
}

// Chains longer than the default depth, where a configuration allows
// them, are checked for repeated agents as well.
func TestLongChain(t *testing.T) {
	e := newEnv(t)
	v := e.verifier(t, func(c *verify.Config) { c.MaxDepth = 100 })
	ids := deep(100)
	if _, err := v.Verify(context.Background(), e.sign(e.chained(ids...))); err != nil {
		t.Fatalf("100 distinct agents: %v", err)
	}
	ids[99] = ids[50]
	var ve *verify.Error
	if _, err := v.Verify(context.Background(), e.sign(e.chained(ids...))); !errors.As(err, &ve) || ve.Check != "cycle" {
		t.Fatalf("agent repeated in a long chain: %v, want check \"cycle\"", err)
	}
}

// With CacheSize, a mandate presented again skips the signature check, and
// still expires to the millisecond, still needs its proof, and is still
// asked about revocation; the cache stays within its size.
func TestVerifiedCache(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	revoked := false
	v := e.verifier(t, func(c *verify.Config) {
		c.CacheSize = 2
		c.Revoked = func(context.Context, *mandate.Claims) error {
			if revoked {
				return verify.ErrRevoked
			}
			return nil
		}
	})
	tok := e.sign(e.claims(30 * time.Millisecond))
	for range 3 {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	e.now = t0.Add(30 * time.Millisecond)
	if _, err := v.Verify(ctx, tok); !errors.Is(err, verify.ErrExpired) {
		t.Errorf("a remembered mandate at its exp: %v", err)
	}
	e.now = t0
	revoked = true
	if _, err := v.Verify(ctx, tok); !errors.Is(err, verify.ErrRevoked) {
		t.Errorf("a remembered mandate, revoked: %v", err)
	}
	revoked = false
	// A bound mandate: remembered, but its proof is checked every time.
	c := e.claims(time.Minute)
	c.Confirm = &mandate.Confirmation{JKT: jose.Thumbprint(e.holder.Public().(ed25519.PublicKey))}
	bound := e.sign(c)
	const url = "https://gw.example/mcp/crm"
	proof := dpop.NewProof(e.holder, "POST", url, bound, e.now)
	if _, err := v.VerifyDPoP(ctx, bound, proof, "POST", url); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyDPoP(ctx, bound, proof, "POST", url); !errors.Is(err, verify.ErrDPoP) {
		t.Errorf("a replayed proof of a remembered mandate: %v", err)
	}
	if _, err := v.Verify(ctx, bound); !errors.Is(err, verify.ErrDPoP) {
		t.Errorf("a remembered bound mandate as a bearer token: %v", err)
	}
	// A tampered token is not the remembered one.
	parts := strings.Split(tok, ".")
	if _, err := v.Verify(ctx, parts[0]+"."+parts[1]+"."+strings.Repeat("A", len(parts[2]))); !errors.Is(err, verify.ErrSignature) {
		t.Errorf("a token with another signature: %v", err)
	}
	// Beyond its size, new mandates are verified, not remembered.
	for i := range 5 {
		cl := e.claims(time.Minute)
		cl.ID = fmt.Sprintf("m_%d", i+10)
		if _, err := v.Verify(ctx, e.sign(cl)); err != nil {
			t.Fatal(err)
		}
	}
	if n := verify.CacheLen(v); n != 2 {
		t.Errorf("the cache holds %d mandates, its size is 2", n)
	}
}

// A refusal of a genuine mandate names its claims, for the monitor to
// attribute; a forged one's does not.
func TestRefusalClaims(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	claimsOf := func(err error) *mandate.Claims {
		var ve *verify.Error
		if !errors.As(err, &ve) {
			t.Fatalf("%v is not a *verify.Error", err)
		}
		return ve.Claims
	}
	tok := e.sign(e.claims(time.Minute))
	v := e.verifier(t, func(c *verify.Config) {
		c.Revoked = func(ctx context.Context, c *mandate.Claims) error { return verify.ErrRevoked }
	})
	if _, err := v.Verify(ctx, tok); claimsOf(err) == nil || claimsOf(err).Task != "t_1" {
		t.Errorf("revoked: %v without its claims", err)
	}
	e.now = t0.Add(2 * time.Minute)
	if _, err := e.verifier(t, nil).Verify(ctx, tok); !errors.Is(err, verify.ErrExpired) || claimsOf(err) == nil {
		t.Errorf("expired: %v without its claims", err)
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	b, _ := json.Marshal(e.claims(time.Minute))
	forged := jose.Sign(other, jose.Header{Kid: e.kid, Typ: "at+jwt"}, b)
	if _, err := e.verifier(t, nil).Verify(ctx, forged); !errors.Is(err, verify.ErrSignature) || claimsOf(err) != nil {
		t.Errorf("forged: %v with claims", err)
	}
}

// A JWKS URL that redirects is not followed: the keys where it points are
// not the issuer's (an open redirect on the issuer's host would otherwise
// let anyone supply signing keys).
func TestJWKSDoesNotFollowRedirects(t *testing.T) {
	e := newEnv(t)
	var reached atomic.Bool
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Store(true)
		j := jose.NewPublicJWK(e.key.Public().(ed25519.PublicKey))
		j.Kid = "k1"
		json.NewEncoder(w).Encode(map[string]any{"keys": []jose.JWK{j}})
	}))
	defer other.Close()
	redirect := httptest.NewServer(http.RedirectHandler(other.URL, http.StatusFound))
	defer redirect.Close()
	for _, c := range []*http.Client{nil, {}} {
		src := verify.NewJWKS(redirect.URL, verify.JWKSOptions{Client: c})
		// The presenter is told the key is unknown; the log (the cause)
		// says the issuer answered with a redirect.
		_, err := src.Key(context.Background(), "k1")
		var ve *verify.Error
		if !errors.Is(err, verify.ErrUnknownKey) || !errors.As(err, &ve) || ve.Cause == nil || !strings.Contains(ve.Cause.Error(), "302") {
			t.Errorf("a redirected JWKS: %v", err)
		}
	}
	if reached.Load() {
		t.Error("the redirect was followed")
	}
}

// Every refusal of a genuine mandate (its signature, issuer and audience
// verified) names its claims, whatever check fails after those, so that
// the gateway audits it and the monitor sees it; and the DPoP checks of a
// key-bound mandate say whether the presenter proved the key: a thief
// without it cannot, whatever it sends (no proof, a proof by its own key
// under the holder's jwk, alg none, garbage).
func TestEveryRefusalOfAGenuineMandateNamesIt(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const url = "https://gw.example/mcp/crm"
	holderJWK := jose.JWK{Kty: "OKP", Crv: "Ed25519", X: b64(e.holder.Public().(ed25519.PublicKey))}
	bound := e.claims(time.Minute)
	bound.Confirm = &mandate.Confirmation{JKT: jose.Thumbprint(e.holder.Public().(ed25519.PublicKey))}
	tok := e.sign(bound)
	plain := e.sign(e.claims(time.Minute))
	_, thief, _ := ed25519.GenerateKey(rand.Reader)
	proofClaims := func(tok string) []byte {
		sum := sha256.Sum256([]byte(tok))
		b, _ := json.Marshal(map[string]any{"jti": "p1", "htm": "POST", "htu": url, "iat": e.now.Unix(), "ath": b64(sum[:])})
		return b
	}
	v := e.verifier(t, nil)
	used := dpop.NewProof(e.holder, "POST", url, tok, e.now)
	if _, err := v.VerifyDPoP(ctx, tok, used, "POST", url); err != nil {
		t.Fatal(err)
	}
	later := e.claims(time.Minute)
	later.NotBefore = mandate.NumericDate{Time: t0.Add(time.Minute)}
	badChain := e.claims(time.Minute)
	badChain.Actor = &mandate.Actor{Subject: "spiffe://example.org/agent/b"}

	for _, tc := range []struct {
		name, scheme, token string
		proofs              []string
		v                   *verify.Verifier
		check               string
	}{
		{"bound, sent as Bearer", "Bearer", tok, nil, v, "dpop-bearer"},
		{"bound, DPoP scheme without a proof", "DPoP", tok, nil, v, "dpop-bearer"},
		{"bound, a proof by another key", "DPoP", tok, []string{dpop.NewProof(thief, "POST", url, tok, e.now)}, v, "dpop-key"},
		{"bound, another key under the holder's jwk", "DPoP", tok,
			[]string{jose.Sign(thief, jose.Header{Typ: dpop.Type, JWK: &holderJWK}, proofClaims(tok))}, v, "dpop-key"},
		{"bound, alg none under the holder's jwk", "DPoP", tok, []string{b64(mustJSON(map[string]any{"alg": "none", "typ": dpop.Type, "jwk": holderJWK})) +
			"." + b64(proofClaims(tok)) + "."}, v, "dpop-key"},
		{"bound, garbage", "DPoP", tok, []string{"not.a.proof"}, v, "dpop-key"},
		{"bound, two proofs, neither by its key", "DPoP", tok, []string{"x", dpop.NewProof(thief, "POST", url, tok, e.now)}, v, "dpop-key"},
		{"bound, two proofs, one by its key", "DPoP", tok, []string{"x", dpop.NewProof(e.holder, "POST", url, tok, e.now)}, v, "dpop-proof"},
		{"bound, the holder's proof for another method", "DPoP", tok, []string{dpop.NewProof(e.holder, "GET", url, tok, e.now)}, v, "dpop-proof"},
		{"bound, the holder's proof for another URL", "DPoP", tok, []string{dpop.NewProof(e.holder, "POST", url+"x", tok, e.now)}, v, "dpop-proof"},
		{"bound, the holder's proof for another token", "DPoP", tok, []string{dpop.NewProof(e.holder, "POST", url, plain, e.now)}, v, "dpop-proof"},
		{"bound, the holder's old proof", "DPoP", tok, []string{dpop.NewProof(e.holder, "POST", url, tok, e.now.Add(-time.Hour))}, v, "dpop-proof"},
		{"bound, a replayed proof", "DPoP", tok, []string{used}, v, "dpop-replay"},
		{"bearer, a bad proof", "DPoP", plain, []string{"not.a.proof"}, v, "dpop"},
		{"bearer, DPoP scheme without a proof", "DPoP", plain, nil, v, "dpop"},
		{"bearer where DPoP is required", "Bearer", plain, nil, e.verifier(t, func(c *verify.Config) { c.RequireDPoP = true }), "dpop"},
		{"not yet valid", "Bearer", e.sign(later), nil, v, "nbf"},
		{"a chain that does not fit", "Bearer", e.sign(badChain), nil, v, "act"},
		{"revocation status unknown", "Bearer", plain, nil, e.verifier(t, func(c *verify.Config) {
			c.Revoked = func(context.Context, *mandate.Claims) error {
				return errors.New("SQL logic error: no such table: revocations")
			}
		}), "revocation-unknown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", url, nil)
			r.Header.Set("Authorization", tc.scheme+" "+tc.token)
			for _, p := range tc.proofs {
				r.Header.Add("DPoP", p)
			}
			_, err := tc.v.VerifyRequest(ctx, r, url)
			var ve *verify.Error
			if !errors.As(err, &ve) {
				t.Fatalf("%v is not a *verify.Error", err)
			}
			if ve.Check != tc.check || ve.Claims == nil || ve.Claims.ID != "m_1" {
				t.Errorf("check %q, claims %v (%v); want %q with the mandate's claims", ve.Check, ve.Claims, err, tc.check)
			}
		})
	}
}

// What a presenter reads of a refusal (Error) never holds an internal
// cause (the revocation store's text, a JWKS fetch's network error); the
// log does, through LogValue, and errors.Is finds it.
func TestRefusalCauseIsForTheLog(t *testing.T) {
	e := newEnv(t)
	cause := errors.New("SQL logic error: no such table: revocations")
	v := e.verifier(t, func(c *verify.Config) {
		c.Revoked = func(context.Context, *mandate.Claims) error { return cause }
	})
	_, err := v.Verify(context.Background(), e.sign(e.claims(time.Minute)))
	if err == nil || strings.Contains(err.Error(), "no such table") {
		t.Fatalf("the presenter reads %q", err)
	}
	if !errors.Is(err, cause) || !errors.Is(err, verify.ErrRevoked) {
		t.Errorf("errors.Is does not find the cause and the sentinel in %v", err)
	}
	var log strings.Builder
	slog.New(slog.NewTextHandler(&log, nil)).Info("refused", "err", err)
	if !strings.Contains(log.String(), "no such table") {
		t.Errorf("the log line lacks the cause: %s", log.String())
	}

	// A JWKS that cannot be fetched: the presenter is told the key is
	// unknown, not where the issuer is unreachable from.
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	j := verify.NewJWKS(down.URL+"/jwks", verify.JWKSOptions{})
	v = e.verifier(t, func(c *verify.Config) { c.Keys = j })
	_, err = v.Verify(context.Background(), e.sign(e.claims(time.Minute)))
	if !errors.Is(err, verify.ErrUnknownKey) || strings.Contains(err.Error(), "refused") || strings.Contains(err.Error(), "dial") {
		t.Errorf("an unreachable JWKS: the presenter reads %q", err)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// A refusal's detail, which the presenter is shown and the log reads,
// quotes what was presented with its secrets masked: a kid or an issuer
// that holds a credential is not repeated.
func TestRefusalDetailMasksSecrets(t *testing.T) {
	e := newEnv(t)
	const key = "AKIAIOSFODNN7EXAMPLE"
	good := e.claims(time.Minute)
	b, _ := json.Marshal(good)
	c := *good
	c.Issuer = "https://" + key + ".example"
	v := e.verifier(t, nil)
	for name, token := range map[string]string{
		"kid": jose.Sign(e.key, jose.Header{Kid: key, Typ: "at+jwt"}, b),
		"iss": e.sign(&c),
	} {
		_, err := v.Verify(context.Background(), token)
		var ve *verify.Error
		if !errors.As(err, &ve) || ve.Check != name || strings.Contains(ve.Error(), "AKIA") || !strings.Contains(ve.Detail, "[secret:aws_access_key_id]") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A verifier whose wall clock jumps 15 minutes ahead, while proofs go on,
// and is set right again still refuses a proof used before the jump as a
// replay, and accepts fresh ones: its replay set forgets by a clock that
// a jump cannot run ahead (issue 16, item 8).
func TestDPoPReplayAfterClockJump(t *testing.T) {
	e := newEnv(t)
	c := e.claims(time.Hour)
	c.Confirm = &mandate.Confirmation{JKT: jose.Thumbprint(e.holder.Public().(ed25519.PublicKey))}
	tok := e.sign(c)
	v := e.verifier(t, nil)
	const url = "https://gw.example/mcp/crm"
	ctx := context.Background()
	used := dpop.NewProof(e.holder, "POST", url, tok, e.now)
	if _, err := v.VerifyDPoP(ctx, tok, used, "POST", url); err != nil {
		t.Fatal(err)
	}
	e.now = t0.Add(15 * time.Minute)
	if _, err := v.VerifyDPoP(ctx, tok, dpop.NewProof(e.holder, "POST", url, tok, e.now), "POST", url); err != nil {
		t.Fatalf("a proof while the clock is ahead: %v", err)
	}
	e.now = t0.Add(time.Second)
	if _, err := v.VerifyDPoP(ctx, tok, used, "POST", url); !errors.Is(err, verify.ErrDPoP) || !strings.Contains(err.Error(), "used before") {
		t.Errorf("the proof used before the jump, after the clock came back: %v, want a refusal as a replay", err)
	}
	if _, err := v.VerifyDPoP(ctx, tok, dpop.NewProof(e.holder, "POST", url, tok, e.now), "POST", url); err != nil {
		t.Errorf("a fresh proof after the clock came back: %v", err)
	}
}
