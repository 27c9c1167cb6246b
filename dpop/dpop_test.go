package dpop

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/jose"
)

var (
	testPriv = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	testPub  = testPriv.Public().(ed25519.PublicKey)
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, ed25519.SeedSize))
	t0       = time.Date(2025, 11, 29, 12, 0, 0, 0, time.UTC)
)

const (
	testURL   = "https://mcp.example.com/github/issues"
	testToken = "eyJhbGciOiJFZERTQSJ9.e30.sig"
)

func enc(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// handProof builds a proof without NewProof or jose.Sign: JSON written by
// hand, signed with ed25519.Sign.
func handProof(priv ed25519.PrivateKey, header, claims string) string {
	input := enc(header) + "." + enc(claims)
	return input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(input)))
}

func jwkJSON(pub ed25519.PublicKey) string {
	return `{"kty":"OKP","crv":"Ed25519","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}`
}

var (
	goodHeader = `{"typ":"dpop+jwt","alg":"EdDSA","jwk":` + jwkJSON(testPub) + `}`
	goodClaims = fmt.Sprintf(`{"jti":"e1j3V_bKic8-LAEB","htm":"POST","htu":%q,"iat":%d}`, testURL, t0.Unix())
)

// hashOf is the ath of s, computed here rather than with the package's own
// helper.
func hashOf(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func goodReq() Requirements {
	return Requirements{Method: "POST", URL: testURL, Now: t0.Add(2 * time.Second)}
}

// claimsWith returns goodClaims with member name set to the raw JSON v, or
// removed if v is "".
func claimsWith(name, v string) string {
	var m map[string]json.RawMessage
	json.Unmarshal([]byte(goodClaims), &m)
	if v == "" {
		delete(m, name)
	} else {
		m[name] = json.RawMessage(v)
	}
	b, _ := json.Marshal(m)
	return string(b)
}

func TestCheckIndependentProof(t *testing.T) {
	p, err := Check(handProof(testPriv, goodHeader, goodClaims), goodReq())
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	want := Proof{
		JKT:       mustThumbprint(t, testPub),
		PublicKey: testPub,
		ID:        "e1j3V_bKic8-LAEB",
		Method:    "POST",
		URL:       testURL,
		IssuedAt:  t0,
	}
	if p.JKT != want.JKT || !p.PublicKey.Equal(want.PublicKey) || p.ID != want.ID || p.Method != want.Method ||
		p.URL != want.URL || p.ATH != "" || !p.IssuedAt.Equal(want.IssuedAt) {
		t.Errorf("Check() = %+v, want %+v", p, want)
	}
}

// mustThumbprint computes the RFC 7638 thumbprint through the general JWK
// path, not the shortcut Check uses.
func mustThumbprint(t *testing.T, pub ed25519.PublicKey) string {
	t.Helper()
	k, err := jose.ParseJWK([]byte(jwkJSON(pub)))
	if err != nil {
		t.Fatal(err)
	}
	tp, err := k.Thumbprint()
	if err != nil {
		t.Fatal(err)
	}
	return tp
}

func TestNewProof(t *testing.T) {
	proof := NewProof(testPriv, "POST", testURL+"?page=2#top", testToken, t0)

	// Read it without the package: the header and claims RFC 9449 §4.2 asks for.
	parts := strings.Split(proof, ".")
	var h map[string]any
	var c map[string]any
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	cb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if err := json.Unmarshal(hb, &h); err != nil {
		t.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(cb))
	d.UseNumber()
	if err := d.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if h["typ"] != "dpop+jwt" || h["alg"] != "EdDSA" {
		t.Errorf("header = %v", h)
	}
	jwk, _ := h["jwk"].(map[string]any)
	if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" || jwk["x"] != base64.RawURLEncoding.EncodeToString(testPub) || jwk["d"] != nil {
		t.Errorf("jwk = %v", jwk)
	}
	if c["htm"] != "POST" || c["htu"] != testURL || c["ath"] != hashOf(testToken) {
		t.Errorf("claims = %v", c)
	}
	if iat := c["iat"].(json.Number).String(); iat != fmt.Sprint(t0.Unix()) {
		t.Errorf("iat = %s, want the integer %d", iat, t0.Unix())
	}
	jti, _ := c["jti"].(string)
	if b, err := base64.RawURLEncoding.DecodeString(jti); err != nil || len(b) != 16 {
		t.Errorf("jti = %q, want 16 bytes of base64url", jti)
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if !ed25519.Verify(testPub, []byte(parts[0]+"."+parts[1]), sig) {
		t.Errorf("signature does not verify")
	}

	// Check accepts it, and two proofs have different jtis.
	req := goodReq()
	req.AccessToken = testToken
	p, err := Check(proof, req)
	if err != nil {
		t.Fatal(err)
	}
	if p.ATH != hashOf(testToken) || p.ID != jti {
		t.Errorf("Check() = %+v", p)
	}
	if q, _ := Check(NewProof(testPriv, "POST", testURL, testToken, t0), req); q.ID == p.ID {
		t.Errorf("two proofs have the same jti %s", p.ID)
	}
	// Without an access token there is no ath.
	cb, _ = base64.RawURLEncoding.DecodeString(strings.Split(NewProof(testPriv, "GET", testURL, "", t0), ".")[1])
	if bytes.Contains(cb, []byte(`"ath"`)) {
		t.Errorf("proof without access token has ath: %s", cb)
	}
}

// NewProofMillis writes iat with milliseconds, which Check reads exactly.
func TestNewProofMillis(t *testing.T) {
	at := t0.Add(1234567 * time.Microsecond)
	proof := NewProofMillis(testPriv, "POST", testURL, "", at)
	cb, _ := base64.RawURLEncoding.DecodeString(strings.Split(proof, ".")[1])
	if want := fmt.Sprintf(`"iat":%d.234`, t0.Unix()+1); !strings.Contains(string(cb), want) {
		t.Errorf("claims %s, want %s", cb, want)
	}
	req := goodReq()
	req.NotBefore = t0.Add(1234 * time.Millisecond)
	p, err := Check(proof, req)
	if err != nil {
		t.Fatal(err)
	}
	if !p.IssuedAt.Equal(t0.Add(1234 * time.Millisecond)) {
		t.Errorf("iat %v, want %v", p.IssuedAt, t0.Add(1234*time.Millisecond))
	}
}

func TestCheck(t *testing.T) {
	withAT := func(r Requirements) Requirements { r.AccessToken = testToken; return r }
	at := func(d time.Duration) Requirements { r := goodReq(); r.Now = t0.Add(d); return r }
	type test struct {
		name  string
		proof string
		req   Requirements
		want  string // "" if the proof must be accepted; else the check named in the error
		also  error  // another error the result must wrap
	}
	tests := []test{
		{"good", handProof(testPriv, goodHeader, goodClaims), goodReq(), "", nil},
		{"good, made by NewProof", NewProof(testPriv, "POST", testURL, "", t0), goodReq(), "", nil},
		{"good, with access token", handProof(testPriv, goodHeader, claimsWith("ath", `"`+hashOf(testToken)+`"`)), withAT(goodReq()), "", nil},
		{"ath without access token is ignored", handProof(testPriv, goodHeader, claimsWith("ath", `"x"`)), goodReq(), "", nil},
		{"unknown claims and headers ignored", handProof(testPriv, `{"typ":"dpop+jwt","alg":"EdDSA","x5u":"https://evil","jwk":`+jwkJSON(testPub)+`}`,
			claimsWith("nonce", `"n"`)), goodReq(), "", nil},

		// 1. Well-formed, alg EdDSA.
		{"too long", strings.Repeat("a", MaxProofSize+1), goodReq(), "limit", nil},
		{"not a JWT", "not-a-jwt", goodReq(), "three", jose.ErrMalformed},
		{"empty", "", goodReq(), "three", jose.ErrMalformed},
		{"alg none", enc(`{"typ":"dpop+jwt","alg":"none","jwk":`+jwkJSON(testPub)+`}`) + "." + enc(goodClaims) + ".", goodReq(), `"none"`, jose.ErrAlgorithm},
		{"alg HS256", handProof(testPriv, `{"typ":"dpop+jwt","alg":"HS256","jwk":`+jwkJSON(testPub)+`}`, goodClaims), goodReq(), `"HS256"`, jose.ErrAlgorithm},
		{"alg ES256", handProof(testPriv, `{"typ":"dpop+jwt","alg":"ES256","jwk":`+jwkJSON(testPub)+`}`, goodClaims), goodReq(), `"ES256"`, jose.ErrAlgorithm},
		{"crit", handProof(testPriv, `{"typ":"dpop+jwt","alg":"EdDSA","crit":["x"],"x":1,"jwk":`+jwkJSON(testPub)+`}`, goodClaims), goodReq(), "crit", jose.ErrAlgorithm},
		{"padded signature", handProof(testPriv, goodHeader, goodClaims) + "==", goodReq(), "base64url", jose.ErrMalformed},

		// 2. typ.
		{"typ missing", handProof(testPriv, `{"alg":"EdDSA","jwk":`+jwkJSON(testPub)+`}`, goodClaims), goodReq(), "typ must be", nil},
		{"typ JWT", handProof(testPriv, `{"typ":"JWT","alg":"EdDSA","jwk":`+jwkJSON(testPub)+`}`, goodClaims), goodReq(), "typ must be", nil},
		{"typ application/dpop+jwt", handProof(testPriv, `{"typ":"application/dpop+jwt","alg":"EdDSA","jwk":`+jwkJSON(testPub)+`}`, goodClaims), goodReq(), "typ must be", nil},

		// 3. jwk.
		{"jwk missing", handProof(testPriv, `{"typ":"dpop+jwt","alg":"EdDSA","kid":"k"}`, goodClaims), goodReq(), "jwk header is missing", nil},
		{"jwk with d", handProof(testPriv, `{"typ":"dpop+jwt","alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"`+
			base64.RawURLEncoding.EncodeToString(testPub)+`","d":"`+base64.RawURLEncoding.EncodeToString(testPriv.Seed())+`"}}`, goodClaims),
			goodReq(), "jwk header must hold a public key only", nil},
		{"jwk RSA", handProof(testPriv, `{"typ":"dpop+jwt","alg":"EdDSA","jwk":{"kty":"RSA","n":"AQAB","e":"AQAB"}}`, goodClaims), goodReq(), "kty", jose.ErrMalformed},
		{"jwk X25519", handProof(testPriv, `{"typ":"dpop+jwt","alg":"EdDSA","jwk":{"kty":"OKP","crv":"X25519","x":"`+
			base64.RawURLEncoding.EncodeToString(testPub)+`"}}`, goodClaims), goodReq(), "crv", jose.ErrMalformed},
		{"jwk short x", handProof(testPriv, `{"typ":"dpop+jwt","alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"AAAA"}}`, goodClaims), goodReq(), "x must be", jose.ErrMalformed},
		{"jwk not an object", handProof(testPriv, `{"typ":"dpop+jwt","alg":"EdDSA","jwk":"key"}`, goodClaims), goodReq(), "object", jose.ErrMalformed},
		// Keys that anyone can sign for, and a key that is not a point (its
		// signature is checked first, then the key, to say why it failed).
		{"jwk the identity", handProof(testPriv, `{"typ":"dpop+jwt","alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}`, goodClaims), goodReq(), "small order", jose.ErrMalformed},
		{"jwk not on the curve", handProof(testPriv, `{"typ":"dpop+jwt","alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}`, goodClaims), goodReq(), "not a point", jose.ErrMalformed},

		// 4. Signature.
		{"signed by another key", handProof(otherKey, goodHeader, goodClaims), goodReq(), "signature", jose.ErrSignature},
		{"claims changed after signing", func() string {
			p := strings.Split(handProof(testPriv, goodHeader, goodClaims), ".")
			return p[0] + "." + enc(strings.Replace(goodClaims, "POST", "GET", 1)) + "." + p[2]
		}(), at(0), "signature", jose.ErrSignature},

		// 5. Claims.
		{"claims not JSON", handProof(testPriv, goodHeader, `jti=1`), goodReq(), "claims", nil},
		{"claims an array", handProof(testPriv, goodHeader, `[`+goodClaims+`]`), goodReq(), "object", nil},
		{"duplicate htu", handProof(testPriv, goodHeader, strings.Replace(goodClaims, `{`, `{"htu":"https://other.example/",`, 1)), goodReq(), "twice", nil},
		{"missing jti", handProof(testPriv, goodHeader, claimsWith("jti", "")), goodReq(), "missing jti", nil},
		{"empty jti", handProof(testPriv, goodHeader, claimsWith("jti", `""`)), goodReq(), "missing jti", nil},
		{"jti a number", handProof(testPriv, goodHeader, claimsWith("jti", `12`)), goodReq(), "jti must be a string", nil},
		{"missing htm", handProof(testPriv, goodHeader, claimsWith("htm", "")), goodReq(), "missing htm", nil},
		{"missing htu", handProof(testPriv, goodHeader, claimsWith("htu", "")), goodReq(), "missing htu", nil},
		{"missing iat", handProof(testPriv, goodHeader, claimsWith("iat", "")), goodReq(), "missing iat", nil},
		{"iat a string", handProof(testPriv, goodHeader, claimsWith("iat", `"1764417600"`)), goodReq(), "iat must be a number", nil},
		{"iat null", handProof(testPriv, goodHeader, claimsWith("iat", `null`)), goodReq(), "iat must be a number", nil},
		{"iat huge", handProof(testPriv, goodHeader, claimsWith("iat", `1e300`)), goodReq(), "out of range", nil},
		{"missing ath", handProof(testPriv, goodHeader, goodClaims), withAT(goodReq()), "missing ath", nil},

		// 6. htm.
		{"htm mismatch", handProof(testPriv, goodHeader, claimsWith("htm", `"GET"`)), goodReq(), `htm mismatch: proof says "GET", request is "POST"`, nil},
		{"htm case", handProof(testPriv, goodHeader, claimsWith("htm", `"post"`)), goodReq(), "htm mismatch", nil},

		// 7. htu.
		{"htu other host", handProof(testPriv, goodHeader, claimsWith("htu", `"https://evil.example.com/github/issues"`)), goodReq(), "htu mismatch", nil},
		{"htu other path", handProof(testPriv, goodHeader, claimsWith("htu", `"https://mcp.example.com/github/pulls"`)), goodReq(), "htu mismatch", nil},
		{"htu http", handProof(testPriv, goodHeader, claimsWith("htu", `"http://mcp.example.com/github/issues"`)), goodReq(), "htu mismatch", nil},
		{"htu other port", handProof(testPriv, goodHeader, claimsWith("htu", `"https://mcp.example.com:8443/github/issues"`)), goodReq(), "htu mismatch", nil},
		{"htu trailing slash", handProof(testPriv, goodHeader, claimsWith("htu", `"https://mcp.example.com/github/issues/"`)), goodReq(), "htu mismatch", nil},
		{"htu path case", handProof(testPriv, goodHeader, claimsWith("htu", `"https://mcp.example.com/GitHub/issues"`)), goodReq(), "htu mismatch", nil},
		{"htu encoded slash", handProof(testPriv, goodHeader, claimsWith("htu", `"https://mcp.example.com/github%2Fissues"`)), goodReq(), "htu mismatch", nil},
		{"htu relative", handProof(testPriv, goodHeader, claimsWith("htu", `"/github/issues"`)), goodReq(), "htu mismatch", nil},
		{"htu with space", handProof(testPriv, goodHeader, claimsWith("htu", `"https://mcp.example.com/github/issues "`)), goodReq(), "htu mismatch", nil},
		{"htu equivalent: query and fragment", handProof(testPriv, goodHeader, claimsWith("htu", `"https://mcp.example.com/github/issues?x=1#f"`)), goodReq(), "", nil},
		{"htu equivalent: case and default port", handProof(testPriv, goodHeader, claimsWith("htu", `"HTTPS://MCP.Example.com:443/github/issues"`)), goodReq(), "", nil},
		{"htu equivalent: percent-encoding and dots", handProof(testPriv, goodHeader, claimsWith("htu", `"https://mcp.example.com/git%68ub/./x/../issues"`)), goodReq(), "", nil},
		{"request URL with query", handProof(testPriv, goodHeader, goodClaims), func() Requirements { r := goodReq(); r.URL += "?state=open"; return r }(), "", nil},

		// 8. iat.
		{"iat 59s old", handProof(testPriv, goodHeader, goodClaims), at(59 * time.Second), "", nil},
		{"iat too old", handProof(testPriv, goodHeader, goodClaims), at(61 * time.Second), "iat too old", nil},
		{"iat exactly MaxAge old", handProof(testPriv, goodHeader, goodClaims), at(DefaultMaxAge), "iat too old", nil},
		{"iat too old for MaxAge", handProof(testPriv, goodHeader, goodClaims), func() Requirements { r := at(11 * time.Second); r.MaxAge = 10 * time.Second; return r }(), "iat too old", nil},
		{"iat negative", handProof(testPriv, goodHeader, claimsWith("iat", `-1`)), goodReq(), "iat too old", nil},
		{"iat in the future", handProof(testPriv, goodHeader, goodClaims), at(-time.Second), "iat in the future", nil},
		{"iat in the future by 1ms", handProof(testPriv, goodHeader, claimsWith("iat", fmt.Sprintf("%d.001", t0.Unix()))), at(0), "iat in the future", nil},
		{"iat in the future within skew", handProof(testPriv, goodHeader, goodClaims), func() Requirements { r := at(-time.Second); r.Skew = 5 * time.Second; return r }(), "", nil},
		{"iat beyond skew", handProof(testPriv, goodHeader, goodClaims), func() Requirements { r := at(-6 * time.Second); r.Skew = 5 * time.Second; return r }(), "iat in the future", nil},
		{"iat with a fraction", handProof(testPriv, goodHeader, claimsWith("iat", fmt.Sprintf("%d.250", t0.Unix()))), at(time.Second), "", nil},
		{"iat with an exponent", handProof(testPriv, goodHeader, claimsWith("iat", fmt.Sprintf("%.10e", float64(t0.Unix())))), at(time.Second), "", nil},
		// NotBefore: the start of the caller's replay set.
		{"iat at NotBefore", handProof(testPriv, goodHeader, goodClaims), func() Requirements { r := at(time.Second); r.NotBefore = t0; return r }(), "", nil},
		{"iat before NotBefore", handProof(testPriv, goodHeader, goodClaims), func() Requirements { r := at(time.Second); r.NotBefore = t0.Add(time.Millisecond); return r }(), "before the server started", nil},
		{"iat 1ms after NotBefore, read exactly", handProof(testPriv, goodHeader, claimsWith("iat", fmt.Sprintf("%d.001", t0.Unix()))), func() Requirements { r := at(time.Second); r.NotBefore = t0.Add(time.Millisecond); return r }(), "", nil},
		{"iat within Skew after NotBefore", handProof(testPriv, goodHeader, goodClaims), func() Requirements {
			r := at(time.Second)
			r.NotBefore, r.Skew = t0.Add(-time.Second), 2*time.Second
			return r
		}(), "before the server started", nil},

		// 9. ath.
		{"ath mismatch", handProof(testPriv, goodHeader, claimsWith("ath", `"`+hashOf("another token")+`"`)), withAT(goodReq()), "ath mismatch", nil},
		{"ath of the token itself", handProof(testPriv, goodHeader, claimsWith("ath", `"`+testToken+`"`)), withAT(goodReq()), "ath mismatch", nil},
		{"ath not a string", handProof(testPriv, goodHeader, claimsWith("ath", `1`)), withAT(goodReq()), "ath must be a string", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Check(tt.proof, tt.req)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				if p.JKT == "" || p.ID == "" {
					t.Errorf("Check() = %+v", p)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check() = %+v, want an error naming %q", p, tt.want)
			}
			if p != nil {
				t.Errorf("Check returned a proof and an error")
			}
			if !errors.Is(err, ErrInvalidProof) {
				t.Errorf("error %v does not wrap ErrInvalidProof", err)
			}
			if tt.also != nil && !errors.Is(err, tt.also) {
				t.Errorf("error %v does not wrap %v", err, tt.also)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not name %q", err, tt.want)
			}
		})
	}
}

func TestCheckRequirements(t *testing.T) {
	proof := NewProof(testPriv, "POST", testURL, "", t0)
	for _, req := range []Requirements{
		{URL: testURL, Now: t0},
		{Method: "POST", Now: t0},
		{Method: "POST", URL: "/relative", Now: t0},
	} {
		_, err := Check(proof, req)
		if err == nil || errors.Is(err, ErrInvalidProof) {
			t.Errorf("Check(%+v) = %v, want a requirements error", req, err)
		}
	}
	// A zero Now is the current time.
	if _, err := Check(NewProof(testPriv, "GET", testURL, "", time.Now()), Requirements{Method: "GET", URL: testURL}); err != nil {
		t.Errorf("zero Now: %v", err)
	}
}

func TestErrorsDoNotShowKeys(t *testing.T) {
	d := base64.RawURLEncoding.EncodeToString(testPriv.Seed())
	proof := handProof(testPriv, `{"typ":"dpop+jwt","alg":"EdDSA","jwk":{"kty":"OKP","crv":"Ed25519","x":"`+
		base64.RawURLEncoding.EncodeToString(testPub)+`","d":"`+d+`"}}`, goodClaims)
	_, err := Check(proof, goodReq())
	if err == nil || strings.Contains(err.Error(), d) {
		t.Errorf("error = %v", err)
	}
}

func TestNormalizeURL(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"https://example.com", "https://example.com/"},
		{"https://example.com/", "https://example.com/"},
		{"HTTPS://EXAMPLE.COM/Path", "https://example.com/Path"},
		{"https://example.com:443/a", "https://example.com/a"},
		{"https://example.com:/a", "https://example.com/a"},
		{"http://example.com:80/a", "http://example.com/a"},
		{"http://example.com:443/a", "http://example.com:443/a"},
		{"https://example.com:08443/a", "https://example.com:8443/a"},
		{"https://[::1]:443/a", "https://[::1]/a"},
		{"https://[::1]/a", "https://[::1]/a"},
		{"https://[::1]:8443", "https://[::1]:8443/"},
		{"https://User@Example.com/a", "https://User@example.com/a"},
		{"https://example.com/a?b=c#d", "https://example.com/a"},
		{"https://example.com#frag", "https://example.com/"},
		{"https://example.com/%7euser/%2f%41", "https://example.com/~user/%2FA"},
		{"https://example.com/a/./b/../c", "https://example.com/a/c"},
		{"https://example.com/../a", "https://example.com/a"},
		{"https://example.com/a/..", "https://example.com/"},
		{"https://example.com/a//b", "https://example.com/a//b"},
		{"https://example.com/a.b/c..d", "https://example.com/a.b/c..d"},
		{"urn+x://host", "urn+x://host/"},
		{"https://%41%2a%2A/", "https://a%2A%2A/"},
	} {
		got, err := normalizeURL(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("normalizeURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{
		"", "example.com/a", "/a", "https:example.com", "https://", "https:///a", "https://:443/a",
		"https://example.com:https/", "https://example.com:65536/", "https://example.com/%zz", "https://example.com/%4",
		"https://exa mple.com/", "https://example.com/\x00", "https://ex\u00e4mple.com/", "1https://x/",
		"a://::", "https://a:b:443/", "https://[::1/", "https://[zz]/", "https://a]b/", "https://a[b/", "https://x/a[b]",
		"https://a@b@c/", "https://x/a\\b", "https://x/a\"b", "https://x/<script>",
	} {
		if got, err := normalizeURL(in); err == nil {
			t.Errorf("normalizeURL(%q) = %q, want an error", in, got)
		}
	}
}

// A typ quoted in the refusal, cut to its first bytes, has its secrets
// masked before the cut: no part of one is left.
func TestCheckMasksSecretsBeforeTheCut(t *testing.T) {
	typ := strings.Repeat("x", 40) + " ghp_" + strings.Repeat("a1B2", 9)
	_, err := Check(handProof(testPriv, `{"typ":"`+typ+`","alg":"EdDSA","jwk":`+jwkJSON(testPub)+`}`, goodClaims), goodReq())
	if err == nil || strings.Contains(err.Error(), "ghp_a1B2") || !strings.Contains(err.Error(), "[secret") {
		t.Errorf("error = %v", err)
	}
}
