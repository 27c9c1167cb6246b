package jose

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, is deterministic, and is not
// malleable: a token that parses re-encodes to itself, and no change to a
// verified token's signature still verifies.
func FuzzParse(f *testing.F) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	jwk := NewPublicJWK(pub)
	f.Add(Sign(priv, Header{}, []byte("Example of Ed25519 signing")))
	f.Add(Sign(priv, Header{Typ: "dpop+jwt", JWK: &jwk}, []byte(`{"jti":"x","iat":1}`)))
	f.Add(Sign(priv, Header{Kid: jwk.Kid, Typ: "JWT"}, nil))
	f.Add(Sign(priv, Header{Crit: []string{"b64"}}, []byte("x")))
	f.Add("eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg")
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("eyJhbGciOiJIUzI1NiJ9.e30.c2ln")
	f.Add("..")
	f.Add("")

	f.Fuzz(func(t *testing.T, token string) {
		j, err := Parse(token)
		j2, err2 := Parse(token)
		if (err == nil) != (err2 == nil) || (err == nil && !reflect.DeepEqual(j, j2)) {
			t.Fatalf("Parse is not deterministic: %v / %v", err, err2)
		}
		if err != nil {
			if j != nil {
				t.Fatalf("Parse returned a JWS and an error")
			}
			return
		}
		if j.Header.Alg != "EdDSA" || j.Header.Crit != nil || len(j.Signature) != ed25519.SignatureSize {
			t.Fatalf("Parse accepted header %+v, signature of %d bytes", j.Header, len(j.Signature))
		}
		parts := strings.Split(token, ".")
		enc := base64.RawURLEncoding
		if enc.EncodeToString(j.Payload) != parts[1] || enc.EncodeToString(j.Signature) != parts[2] {
			t.Fatalf("token %q does not re-encode to itself", token)
		}
		if j.Verify(pub) != nil {
			return
		}
		// It verifies: then it re-signs to itself (Ed25519 is
		// deterministic) when the header is one Sign writes, and no
		// one-bit change of the signature verifies.
		if resigned := Sign(priv, j.Header, j.Payload); parts[0] == strings.Split(resigned, ".")[0] && resigned != token {
			t.Fatalf("re-signing gives %q, want %q", resigned, token)
		}
		for i := range len(j.Signature) * 8 {
			sig := bytes.Clone(j.Signature)
			sig[i/8] ^= 1 << (i % 8)
			mutated := parts[0] + "." + parts[1] + "." + enc.EncodeToString(sig)
			if m, err := Parse(mutated); err == nil && m.Verify(pub) == nil {
				t.Fatalf("signature with bit %d flipped still verifies", i)
			}
		}
	})
}

// FuzzJWK checks that ParseJWK never panics, and that a parsed key
// that PublicKey (or PrivateKey) accepts round-trips through NewPublicJWK
// (or NewPrivateJWK) with the same thumbprint.
func FuzzJWK(f *testing.F) {
	f.Add([]byte(`{"kty":"OKP","crv":"Ed25519","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`))
	f.Add([]byte(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","alg":"EdDSA","use":"sig","kid":"k"}`))
	f.Add([]byte(`{"kty":"RSA","n":"0vx7","e":"AQAB"}`))
	f.Add([]byte(`{"kty":"EC","crv":"P-256","x":"a","y":"b"}`))
	f.Add([]byte(`{"kty":"OKP","kty":"RSA"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseJWK(b)
		if err != nil {
			if k != (JWK{}) {
				t.Fatalf("ParseJWK returned a key and an error")
			}
			return
		}
		tp, tpErr := k.Thumbprint()
		pub, err := k.PublicKey()
		if err != nil {
			return
		}
		if len(pub) != ed25519.PublicKeySize {
			t.Fatalf("PublicKey returned %d bytes", len(pub))
		}
		n := NewPublicJWK(pub)
		if n.X != k.X {
			t.Fatalf("x does not round-trip: %q, %q", k.X, n.X)
		}
		if back, err := n.PublicKey(); err != nil || !back.Equal(pub) {
			t.Fatalf("NewPublicJWK(pub).PublicKey() = %v", err)
		}
		if tpErr != nil || tp != n.Kid || tp != Thumbprint(pub) {
			t.Fatalf("thumbprints differ: %q (%v), %q, %q", tp, tpErr, n.Kid, Thumbprint(pub))
		}
		priv, err := k.PrivateKey()
		if err != nil {
			return
		}
		if p := NewPrivateJWK(priv); p.D != k.D || p.X != k.X {
			t.Fatalf("private key does not round-trip")
		}
	})
}

// FuzzDecodeObject checks the member scanner against encoding/json: what
// decodeObject accepts, json.Unmarshal reads as the same members.
func FuzzDecodeObject(f *testing.F) {
	f.Add([]byte(`{"alg":"EdDSA","typ":"dpop+jwt","jwk":{"kty":"OKP","x":"a"}}`))
	f.Add([]byte(` { "a" : [1, "]", {"}": "\""}] , "b":-1.5e3,"c":true,"d":null, "e\u0041":"\\"} `))
	f.Add([]byte(`{"a":1,"a":2}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got := map[string]any{}
		err := decodeObject(b, func(name string, v []byte) error {
			var x any
			if err := json.Unmarshal(v, &x); err != nil {
				t.Fatalf("member %q: value %q is not JSON: %v", name, v, err)
			}
			got[name] = x
			return nil
		})
		if err != nil {
			return
		}
		var want map[string]any
		if err := json.Unmarshal(b, &want); err != nil || want == nil {
			t.Fatalf("decodeObject accepted %q, json.Unmarshal: %v", b, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("decodeObject(%q) = %v, json.Unmarshal = %v", b, got, want)
		}
	})
}
