package verify_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
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
	return jose.Sign(e.key, jose.Header{Typ: "at+jwt", Kid: e.kid}, b)
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
		}, "dpop", verify.ErrDPoP},
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
