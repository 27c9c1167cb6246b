package dpop

import (
	"math"
	"strconv"
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
	f.Add(NewProofMillis(testPriv, "POST", testURL, testToken, t0.Add(500*time.Millisecond)))
	f.Add(handProof(testPriv, goodHeader, claimsWith("iat", "1764417600.0009999999")))
	req := Requirements{Method: "POST", URL: testURL, Now: t0.Add(time.Second), AccessToken: testToken, NotBefore: t0.Add(-time.Second)}
	f.Fuzz(func(t *testing.T, proof string) {
		p, err := Check(proof, req)
		if err != nil {
			return
		}
		if p.Method != "POST" || p.ID == "" || len(p.PublicKey) != 32 || p.ATH == "" {
			t.Fatalf("Check accepted %+v", p)
		}
		if age := req.Now.Sub(p.IssuedAt); age >= DefaultMaxAge || age < 0 || p.IssuedAt.Before(req.NotBefore) {
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

// FuzzNumericDate checks that parseNumericDate never panics, and that it
// reads a plain decimal exactly: to within a nanosecond of the float that
// the same literal parses to, within the float's own precision.
func FuzzNumericDate(f *testing.F) {
	for _, s := range []string{"1764417600", "1764417600.001", "-1.5", "1e300", "1764417600.5e0", "0.0000000001", "253402300799.999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseNumericDate([]byte(s))
		if err != nil {
			return
		}
		if _, ok := parseDecimal(s); !ok {
			return // the float path
		}
		fl, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			t.Fatalf("parseNumericDate(%q) = %v, but it is no number", s, got)
		}
		want := float64(got.Unix()) + float64(got.Nanosecond())/1e9
		if d := math.Abs(want - fl); d > 1e-9+math.Abs(fl)*1e-15 {
			t.Fatalf("parseNumericDate(%q) = %v, %g from the float %g", s, got, d, fl)
		}
	})
}
