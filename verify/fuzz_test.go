package verify_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
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

// FuzzChain: a signed mandate with any act, client_id and par never panics
// the verifier, and every chain it accepts has the shape the package
// documents.
func FuzzChain(f *testing.F) {
	f.Add([]byte(`{"sub":"`+agentA+`"}`), agentA, "")
	f.Add([]byte(`{"sub":"`+eph+`","act":{"sub":"`+orch+`","act":{"sub":"`+agentA+`"}}}`), eph, "m_0")
	f.Add([]byte(`{"sub":"`+orch+`","act":{"sub":"`+orch+`"}}`), orch, "m_0")
	f.Add([]byte(`{"sub":"`+eph+`","act":{"sub":"`+agentA+`"}}`), eph, "m_0")
	f.Add([]byte(`{"sub":"user:a@b.c"}`), "user:a@b.c", "")
	f.Add([]byte(`null`), agentA, "")
	e := newEnv(&testing.T{})
	v := e.verifier(&testing.T{}, nil)
	f.Fuzz(func(t *testing.T, act []byte, clientID, par string) {
		if !json.Valid(act) {
			return
		}
		c := e.claims(time.Minute)
		c.Actor, c.ClientID, c.Parent = nil, clientID, par
		b, _ := json.Marshal(c)
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		m["act"] = act
		b, _ = json.Marshal(m)
		got, err := v.Verify(context.Background(), e.signBytes(b))
		if err != nil {
			return
		}
		chain := got.Actor.Chain()
		switch {
		case len(chain) == 0 || len(chain) > verify.DefaultMaxDepth:
			t.Fatalf("accepted a chain of %d actors", len(chain))
		case chain[0] != got.ClientID:
			t.Fatalf("accepted act.sub %q for holder %q", chain[0], got.ClientID)
		case (len(chain) == 1) != (got.Parent == ""):
			t.Fatalf("accepted %d actors with par %q", len(chain), got.Parent)
		}
		seen := map[string]bool{}
		for i, id := range chain {
			if !strings.HasPrefix(id, "spiffe://") || seen[id] {
				t.Fatalf("accepted actor %q in %q", id, chain)
			}
			seen[id] = true
			if mandate.IsEphemeral(id) && (i+1 == len(chain) || !strings.HasPrefix(id, chain[i+1]+mandate.EphemeralSeparator)) {
				t.Fatalf("accepted ephemeral %q out of place in %q", id, chain)
			}
		}
	})
}
