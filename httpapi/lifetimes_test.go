package httpapi_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// x/oauth2, unmodified, in its documented configuration for a client
// assertion (EndpointParams), reads a 500 ms mandate as expiring: expires_in
// is rounded up to 1, where a 0 meant "never expires" to it and it kept the
// mandate after it died. Its default early expiry of 10 s then fetches anew
// for every call; the exact lifetime is in expires_in_ms.
func TestXOAuth2SubSecondMandateExpires(t *testing.T) {
	ts := newServer(t)
	key := ts.addAgent(t, "a", "mcp:crm:*")
	const agent = "spiffe://example.org/agent/a"
	assertion := func() url.Values {
		return url.Values{
			"client_assertion_type": {issuer.ClientAssertionType},
			"client_assertion":      {httpapi.ClientAssertion(key, agent, ts.URL, time.Now())},
			"ttl_ms":                {"500"},
		}
	}
	cfg := &clientcredentials.Config{ClientID: agent, TokenURL: ts.URL + "/oauth2/token", Scopes: []string{"mcp:crm:list"},
		AuthStyle: oauth2.AuthStyleInParams, EndpointParams: assertion()}
	ctx := context.Background()
	before := time.Now()
	tok, err := cfg.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Expiry.IsZero() || tok.Expiry.Before(before.Add(500*time.Millisecond)) || tok.Expiry.After(time.Now().Add(time.Second)) {
		t.Fatalf("expiry %v for a 500 ms mandate fetched at %v", tok.Expiry, before)
	}
	if tok.Extra("expires_in") != 1.0 || tok.Extra("expires_in_ms") != 500.0 {
		t.Fatalf("expires_in %v, expires_in_ms %v", tok.Extra("expires_in"), tok.Extra("expires_in_ms"))
	}
	// Valid applies the default early expiry of 10 s: a mandate shorter
	// than that is never reused.
	if tok.Valid() {
		t.Fatal("x/oauth2 takes a 500 ms mandate as valid under its 10 s early expiry")
	}

	// Its token source therefore fetches again for each call; with the
	// same static assertion the second fetch is refused (its jti is used),
	// so each fetch needs a fresh one.
	cfg.EndpointParams = assertion()
	src := cfg.TokenSource(ctx)
	if _, err := src.Token(); err != nil {
		t.Fatal(err)
	}
	var re *oauth2.RetrieveError
	if _, err := src.Token(); !errors.As(err, &re) || re.ErrorCode != "invalid_client" {
		t.Fatalf("a reused assertion: %v", err)
	}

	// ReuseTokenSourceWithExpiry with a small early expiry (0 means the
	// default 10 s) keeps the mandate until its rounded-up expiry.
	cfg.EndpointParams = assertion()
	reuse := oauth2.ReuseTokenSourceWithExpiry(nil, cfg.TokenSource(ctx), time.Millisecond)
	a, err := reuse.Token()
	if err != nil {
		t.Fatal(err)
	}
	if b, err := reuse.Token(); err != nil || b.AccessToken != a.AccessToken {
		t.Fatalf("not reused: %v", err)
	}
}

// pyjwtScript verifies tokens with PyJWT at leeway 0 against the JWKS in
// argv[1], for issuer argv[2] and audience mcp:crm. It prints "ready", then
// reads a line "<mode> <token> <exp in ms>" and prints JSON. In mode "fresh"
// it verifies once. In mode "expiry" it verifies until PyJWT refuses the
// token as expired (polling, within 10 s), then once more after the exact
// exp has passed. Started before the token is minted, it verifies a 30 ms
// mandate within its lifetime unless the machine stalls.
const pyjwtScript = `
import json, sys, time, jwt
jwks, iss = json.loads(sys.argv[1]), sys.argv[2]
key = jwt.PyJWK(jwks["keys"][0]).key
print("ready", flush=True)
mode, token, exp_ms = sys.stdin.readline().split()
exp_ms = int(exp_ms)
def verify():
    try:
        jwt.decode(token, key, algorithms=["EdDSA"], audience="mcp:crm", issuer=iss, leeway=0,
                   options={"require": ["exp", "iat", "nbf"]})
        return "ok"
    except jwt.PyJWTError as e:
        return type(e).__name__ + ": " + str(e)
if mode == "fresh":
    print(json.dumps({"fresh": verify()}))
    sys.exit(0)
out = {}
deadline = time.time() + 10
while time.time() < deadline:
    at = time.time()
    r = verify()
    if r != "ok":
        out["refused"], out["refused_at_ms"] = r, int(at * 1000)
        break
    out["accepted_at_ms"] = int(at * 1000)
    time.sleep(0.001)
while time.time() * 1000 <= exp_ms and time.time() < deadline:
    time.sleep(0.001)
out["after_exp"] = verify()
print(json.dumps(out))
`

// pyjwt returns a python3 that imports PyJWT (Debian's python3-jwt, with
// python3-cryptography for EdDSA). Without one the test is skipped, except
// in CI (CI=true), where it fails: CI installs it.
func pyjwt(t *testing.T) string {
	t.Helper()
	candidates := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append([]string{p}, candidates...)
	}
	for _, p := range candidates {
		if exec.Command(p, "-c", "import jwt, cryptography").Run() == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("PyJWT is missing: apt-get install python3-jwt python3-cryptography")
	}
	t.Skip("PyJWT is missing (apt-get install python3-jwt python3-cryptography)")
	return ""
}

// lifetimeFixture mints mandates and hands out the JWKS, for third-party
// verifiers.
type lifetimeFixture struct {
	ts   *testServer
	key  ed25519.PrivateKey
	jwks []byte
}

func newLifetimeFixture(t *testing.T) *lifetimeFixture {
	ts := newServer(t)
	f := &lifetimeFixture{ts: ts, key: ts.addAgent(t, "a", "mcp:crm:*")}
	resp, err := http.Get(ts.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if f.jwks, err = io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	return f
}

// mint returns a mandate of ttl and its exact exp.
func (f *lifetimeFixture) mint(t *testing.T, ttl time.Duration) (string, time.Time) {
	t.Helper()
	tok, err := f.ts.client.Token(context.Background(), httpapi.TokenRequest{AgentID: "spiffe://example.org/agent/a", Key: f.key, Scope: "mcp:crm:list", TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.Parse(tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	var c mandate.Claims
	if err := json.Unmarshal(jws.Payload, &c); err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken, c.Expiry.Time
}

// pyjwt starts pyjwtScript, waits for it to be ready, mints a mandate of
// ttl, has PyJWT verify it in mode, and returns what it printed and the
// mandate's exact exp.
func (f *lifetimeFixture) pyjwt(t *testing.T, python, mode string, ttl time.Duration) (map[string]any, time.Time) {
	t.Helper()
	cmd := exec.Command(python, "-c", pyjwtScript, string(f.jwks), f.ts.URL)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); line != "ready\n" {
		t.Fatalf("python: %q %v", line, err)
	}
	tok, exp := f.mint(t, ttl)
	fmt.Fprintf(in, "%s %s %d\n", mode, tok, exp.UnixMilli())
	in.Close()
	var m map[string]any
	if err := json.NewDecoder(out).Decode(&m); err != nil {
		t.Fatalf("python: %v", err)
	}
	return m, exp
}

// PyJWT, unmodified, at leeway 0: it floors the current time to the second
// and refuses a token whose iat is after it, so a fresh mandate verifies only
// because iat is whole seconds, rounded down. It truncates exp too, so it
// refuses a mandate from its exp's whole second on: between 0 and 1 s before
// exp, never after.
func TestPyJWTLifetimes(t *testing.T) {
	python := pyjwt(t)
	f := newLifetimeFixture(t)
	if got, _ := f.pyjwt(t, python, "fresh", 5*time.Minute); got["fresh"] != "ok" {
		t.Fatalf("PyJWT refuses a fresh mandate at leeway 0: %v", got["fresh"])
	}

	got, exp := f.pyjwt(t, python, "expiry", 30*time.Millisecond)
	if r, _ := got["refused"].(string); !strings.HasPrefix(r, "ExpiredSignatureError") {
		t.Fatalf("PyJWT never refused a 30 ms mandate as expired: %v", got)
	}
	if r, _ := got["after_exp"].(string); !strings.HasPrefix(r, "ExpiredSignatureError") {
		t.Fatalf("PyJWT accepts a 30 ms mandate after its exp: %v", got)
	}
	if at, ok := got["accepted_at_ms"].(float64); ok {
		t.Logf("PyJWT accepted a 30 ms mandate until %d ms before its exp", exp.UnixMilli()-int64(at))
	}
	t.Logf("PyJWT refused a 30 ms mandate from %d ms before its exp", exp.UnixMilli()-int64(got["refused_at_ms"].(float64)))
}

// golang-jwt v5, unmodified, at leeway 0, also checking iat: it truncates
// dates to jwt.TimePrecision (a second by default), so it refuses a mandate
// from its exp's whole second on, as PyJWT does; with TimePrecision set to a
// millisecond, its documented configuration, it refuses at exp, or 1 ms
// before.
func TestGolangJWTLifetimes(t *testing.T) {
	f := newLifetimeFixture(t)
	var set struct {
		Keys []struct{ X string }
	}
	if err := json.Unmarshal(f.jwks, &set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("jwks %s", f.jwks)
	}
	pub, err := base64.RawURLEncoding.DecodeString(set.Keys[0].X)
	if err != nil {
		t.Fatal(err)
	}
	parse := func(tok string, at time.Time) error {
		_, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return ed25519.PublicKey(pub), nil },
			jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithIssuer(f.ts.URL), jwt.WithAudience("mcp:crm"),
			jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithLeeway(0), jwt.WithTimeFunc(func() time.Time { return at }))
		return err
	}
	tok, _ := f.mint(t, 5*time.Minute)
	if err := parse(tok, time.Now()); err != nil {
		t.Fatalf("golang-jwt refuses a fresh mandate at leeway 0: %v", err)
	}

	tok, exp := f.mint(t, 30*time.Millisecond)
	// By the real clock: refused once exp has passed.
	for !time.Now().After(exp) {
		runtime.Gosched()
	}
	if err := parse(tok, time.Now()); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("golang-jwt after exp: %v, want expired", err)
	}
	// By an injected clock: from exp's whole second on by default.
	if err := parse(tok, exp.Truncate(time.Second)); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("golang-jwt at exp's whole second: %v, want expired", err)
	}
	prec := jwt.TimePrecision
	t.Cleanup(func() { jwt.TimePrecision = prec })
	jwt.TimePrecision = time.Millisecond
	// It reads exp through a float64 and truncates: 1764412800.030 may read
	// as .029, so it accepts until exp - 1 ms.
	if err := parse(tok, exp.Add(-2*time.Millisecond)); err != nil {
		t.Fatalf("golang-jwt (ms precision) 2 ms before exp: %v", err)
	}
	if err := parse(tok, exp); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatalf("golang-jwt (ms precision) at exp: %v, want expired", err)
	}
}
