package dpop

import (
	"strings"
	"testing"
	"time"
)

// FuzzCheck checks that Check never panics, and that what it accepts
// obeys the requirements.
func FuzzCheck(f *testing.F) {
	f.Add(handProof(testPriv, goodHeader, goodClaims))
	f.Add(NewProof(testPriv, "POST", testURL, testToken, t0))
	f.Add(handProof(testPriv, goodHeader, claimsWith("iat", "1764417600.5e0")))
	f.Add(handProof(testPriv, `{"typ":"dpop+jwt","alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"AAAA","d":"x"}}`, `{}`))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("")
	req := Requirements{Method: "POST", URL: testURL, Now: t0.Add(time.Second), AccessToken: testToken}
	f.Fuzz(func(t *testing.T, proof string) {
		p, err := Check(proof, req)
		if err != nil {
			return
		}
		if p.Method != "POST" || p.ID == "" || len(p.PublicKey) != 32 || p.ATH == "" {
			t.Fatalf("Check accepted %+v", p)
		}
		if age := req.Now.Sub(p.IssuedAt); age >= DefaultMaxAge || age < 0 {
			t.Fatalf("Check accepted iat %s", p.IssuedAt)
		}
	})
}

// FuzzNormalizeURL checks that normalizeURL never panics, and that it is
// idempotent and keeps to the form it promises.
func FuzzNormalizeURL(f *testing.F) {
	for _, s := range []string{
		"https://example.com", "HTTPS://EXAMPLE.COM:443/a/./b/../%7e?q#f", "http://[::1]:80", "https://u:p@h:1/%2f", "x://h/..",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, u string) {
		n, err := normalizeURL(u)
		if err != nil {
			return
		}
		again, err := normalizeURL(n)
		if err != nil || again != n {
			t.Fatalf("normalizeURL(%q) = %q, but normalizeURL(%q) = %q, %v", u, n, n, again, err)
		}
		if strings.ContainsAny(n, "?#") || !strings.Contains(n, "://") {
			t.Fatalf("normalizeURL(%q) = %q", u, n)
		}
	})
}
