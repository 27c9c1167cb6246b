package issuer_test

import (
	"context"
	"encoding/base64"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/issuer"
)

// FuzzClientAssertion feeds untrusted client assertions (and DPoP headers)
// to the issuer: it must never panic and never issue.
func FuzzClientAssertion(f *testing.F) {
	b64 := base64.RawURLEncoding.EncodeToString
	f.Add("a.b.c", "")
	f.Add(b64([]byte(`{"alg":"EdDSA"}`))+"."+b64([]byte(`{"iss":"`+agentID+`","sub":"`+agentID+`","exp":1e300}`))+"."+b64(make([]byte, 64)), "")
	f.Add(b64([]byte(`{"alg":"none"}`))+"."+b64([]byte(`{}`))+".", "x.y.z")
	f.Add(b64([]byte(`{"alg":"EdDSA","crit":["exp"]}`))+"."+b64([]byte(`[]`))+"."+b64(make([]byte, 64)), "")
	f.Add(b64([]byte(`{"alg":"EdDSA","typ":"client-authentication+jwt"}`))+"."+b64([]byte(`{"iss":"`+agentID+`","sub":"`+agentID+`","exp":1e300}`))+"."+b64(make([]byte, 64)), "")
	f.Add(b64([]byte(`{"alg":"EdDSA","typ":"vnd.mandatehq.actor+jwt"}`))+"."+b64([]byte(`{"iss":"`+agentID+`","sub":"`+agentID+`","par":"m_x"}`))+"."+b64(make([]byte, 64)), "")
	fx := newFixture(f)
	f.Fuzz(func(t *testing.T, assertion, proof string) {
		tok, err := fx.is.MintRoot(context.Background(), issuer.RootRequest{
			ClientAssertionType: issuer.ClientAssertionType, ClientAssertion: assertion, Scope: "mcp:crm:x", DPoP: proof,
		})
		if err == nil {
			t.Fatalf("issued %v for a fuzzed assertion", tok.Claims)
		}
		if mandate.ErrorCode(err) == mandate.EINTERNAL {
			t.Fatalf("internal error: %v", err)
		}
	})
}

// FuzzActorToken feeds untrusted actor tokens to a delegation from a
// genuine parent: it must never panic and never issue.
func FuzzActorToken(f *testing.F) {
	b64 := base64.RawURLEncoding.EncodeToString
	fx := newFixture(f)
	parent := fx.root("mcp:crm:*", issuer.MaxTTL, false)
	f.Add(fx.actorToken(parent.AccessToken, newKey(f), agentID, nil)[:40])
	f.Add(b64([]byte(`{"alg":"EdDSA","typ":"vnd.mandatehq.actor+jwt","jwk":{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}`)) +
		"." + b64([]byte(`{"aud":"`+iss+`","exp":1e300,"jti":"x","par":"`+parent.Claims.ID+`"}`)) + "." + b64(make([]byte, 64)))
	f.Add(b64([]byte(`{"alg":"EdDSA","typ":"vnd.mandatehq.actor+jwt"}`)) + "." + b64([]byte(`{"iss":"`+agentID+`","sub":"`+agentID+`","par":7}`)) + "." + b64(make([]byte, 64)))
	f.Add(b64([]byte(`{"alg":"EdDSA","typ":"client-authentication+jwt"}`)) + "." + b64([]byte(`{}`)) + "." + b64(make([]byte, 64)))
	f.Fuzz(func(t *testing.T, actorToken string) {
		tok, err := fx.is.Delegate(context.Background(), issuer.DelegateRequest{
			SubjectToken: parent.AccessToken, SubjectTokenType: issuer.TokenTypeJWT,
			ActorToken: actorToken, ActorTokenType: issuer.TokenTypeJWT,
		})
		if err == nil {
			t.Fatalf("issued %v for a fuzzed actor token", tok.Claims)
		}
		if mandate.ErrorCode(err) == mandate.EINTERNAL {
			t.Fatalf("internal error: %v", err)
		}
	})
}
