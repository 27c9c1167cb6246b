package verify_test

import (
	"testing"

	"github.com/mandatehq/mandate/verify"
)

// FuzzParseJWKS: a JWK Set from the network never panics the parser, and
// every key it keeps is a 32-byte Ed25519 key.
func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"r"}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := verify.ParseJWKS(b)
		if err != nil {
			return
		}
		for kid, k := range keys {
			if kid == "" || len(k) != 32 {
				t.Fatalf("kept key %q of %d bytes", kid, len(k))
			}
		}
	})
}
