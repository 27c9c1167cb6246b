package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/jose"
)

// TestCurlHelpers checks what mandate assertion and mandate dpop-proof
// sign: the claims RFC 7523 §3 and RFC 9449 §4.2 ask for, signed with the
// key given, and an ath that binds the proof to its mandate and no other.
func TestCurlHelpers(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "a.jwk")
	run := func(stdin string, args ...string) string {
		t.Helper()
		var out, errOut strings.Builder
		if rc := Run(context.Background(), args, strings.NewReader(stdin), &out, &errOut); rc != 0 {
			t.Fatalf("mandate %s: exit %d: %s", strings.Join(args, " "), rc, errOut.String())
		}
		return out.String()
	}
	run("", "keygen", keyFile)
	priv, pub, err := readKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(keyFile)
	var k struct{ D string }
	json.Unmarshal(b, &k)

	// Offline: the SPIFFE ID and --issuer say all; no server runs.
	const id, iss = "spiffe://example.org/agent/a", "https://mandate.example"
	out := run("", "assertion", "--key", keyFile, "--agent", id, "--issuer", iss, "--server", "http://127.0.0.1:1")
	if strings.Contains(out, k.D) {
		t.Fatal("assertion printed the private key")
	}
	j, err := jose.Parse(strings.TrimSuffix(out, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Verify(pub); err != nil {
		t.Fatal(err)
	}
	var c struct {
		Iss, Sub, Aud, Jti string
		Iat, Exp           int64
	}
	if err := json.Unmarshal(j.Payload, &c); err != nil {
		t.Fatal(err)
	}
	if j.Header.Typ != mandate.TypClientAssertion || c.Iss != id || c.Sub != id || c.Aud != iss || c.Jti == "" || c.Exp-c.Iat != 60 {
		t.Fatalf("assertion: typ %q, claims %+v", j.Header.Typ, c)
	}

	// A proof for a resource, with the mandate on standard input.
	tok := jose.Sign(priv, jose.Header{Typ: "at+jwt"}, []byte(`{}`))
	const target = "https://mandate.example/mcp/github"
	out = run(tok+"\n", "dpop-proof", "--key", keyFile, "--method", "GET", "--url", target+"?x=1", "--ath-of", "-")
	if strings.Contains(out, k.D) {
		t.Fatal("dpop-proof printed the private key")
	}
	proof := strings.TrimSuffix(out, "\n")
	p, err := dpop.Check(proof, dpop.Requirements{Method: "GET", URL: target, AccessToken: tok})
	if err != nil {
		t.Fatal(err)
	}
	if !p.PublicKey.Equal(pub) || p.URL != target {
		t.Fatalf("proof: key %x, htu %q", p.PublicKey, p.URL)
	}
	other := jose.Sign(priv, jose.Header{Typ: "at+jwt"}, []byte(`{"x":1}`))
	if _, err := dpop.Check(proof, dpop.Requirements{Method: "GET", URL: target, AccessToken: other}); err == nil {
		t.Fatal("a proof made for one mandate was accepted with another")
	}
	// Without --ath-of, a proof for the token endpoint, with no ath.
	out = run("", "dpop-proof", "--key", keyFile, "--url", "https://mandate.example/oauth2/token")
	if p, err = dpop.Check(strings.TrimSuffix(out, "\n"), dpop.Requirements{Method: "POST", URL: "https://mandate.example/oauth2/token"}); err != nil {
		t.Fatal(err)
	}
	if p.ATH != "" {
		t.Fatalf("token endpoint proof has ath %q", p.ATH)
	}
}
