package dpop_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"testing"
	"time"

	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/jose"
)

// SignedBy tells a proof made with a key, however wrong otherwise, from
// one that only names the key.
func TestSignedBy(t *testing.T) {
	_, holder, _ := ed25519.GenerateKey(rand.Reader)
	_, thief, _ := ed25519.GenerateKey(rand.Reader)
	jkt := jose.Thumbprint(holder.Public().(ed25519.PublicKey))
	jwk := jose.JWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(holder.Public().(ed25519.PublicKey))}
	for _, tc := range []struct {
		name  string
		proof string
		want  bool
	}{
		{"the holder's", dpop.NewProof(holder, "POST", "https://x.example/", "", time.Now()), true},
		{"the holder's, wrong typ and claims", jose.Sign(holder, jose.Header{Typ: "JWT", JWK: &jwk}, []byte(`{}`)), true},
		{"another key's", dpop.NewProof(thief, "POST", "https://x.example/", "", time.Now()), false},
		{"another key under the holder's jwk", jose.Sign(thief, jose.Header{Typ: dpop.Type, JWK: &jwk}, []byte(`{}`)), false},
		{"no jwk", jose.Sign(holder, jose.Header{Typ: dpop.Type}, []byte(`{}`)), false},
		{"garbage", "a.b.c", false},
	} {
		if got := dpop.SignedBy(tc.proof, jkt); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// FuzzSignedBy checks that SignedBy never panics and agrees with Check:
// a proof Check accepts is signed by its key.
func FuzzSignedBy(f *testing.F) {
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f.Add(dpop.NewProof(key, "POST", "https://x.example/", "", now))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("")
	jkt := jose.Thumbprint(key.Public().(ed25519.PublicKey))
	f.Fuzz(func(t *testing.T, proof string) {
		signed := dpop.SignedBy(proof, jkt)
		p, err := dpop.Check(proof, dpop.Requirements{Method: "POST", URL: "https://x.example/", Now: now})
		if err == nil && !dpop.SignedBy(proof, p.JKT) {
			t.Fatalf("Check accepted %q, SignedBy does not", proof)
		}
		if err == nil && p.JKT == jkt && !signed {
			t.Fatalf("a proof by the key is not SignedBy it: %q", proof)
		}
	})
}
