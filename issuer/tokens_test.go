package issuer_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
)

// Each kind of JWT is refused wherever another kind is expected, by its
// typ (RFC 8725 §3.11), however good its claims and signature would be
// there: the tokens below are each made by the writer agent, as valid
// for their own purpose as they can be.
func TestEachKindRefusedWhereAnotherIsExpected(t *testing.T) {
	kinds := []struct {
		name string
		make func(f *fixture, wk ed25519.PrivateKey, parent *issuer.Token) string
	}{
		{"client assertion", func(f *fixture, wk ed25519.PrivateKey, _ *issuer.Token) string {
			return f.assertionBy(wk, writerID, nil)
		}},
		{"actor token", func(f *fixture, wk ed25519.PrivateKey, parent *issuer.Token) string {
			return f.actorToken(parent.AccessToken, wk, writerID, nil)
		}},
		{"DPoP proof", func(f *fixture, wk ed25519.PrivateKey, _ *issuer.Token) string {
			return dpop.NewProof(wk, "POST", tokenURL, "", f.clk.Now())
		}},
		{"mandate", func(f *fixture, wk ed25519.PrivateKey, _ *issuer.Token) string {
			return f.root("mcp:crm:*", time.Minute, false).AccessToken
		}},
	}
	endpoints := []struct {
		name    string
		expects string // the kind that is accepted
		oauth   string // the error for the others
		present func(f *fixture, wk ed25519.PrivateKey, parent *issuer.Token, tok string) error
	}{
		{"client_credentials client_assertion", "client assertion", "invalid_client", func(f *fixture, wk ed25519.PrivateKey, _ *issuer.Token, tok string) error {
			_, err := f.is.MintRoot(context.Background(), f.request(func(r *issuer.RootRequest) { r.ClientAssertion = tok }))
			return err
		}},
		{"revocation client_assertion", "client assertion", "invalid_client", func(f *fixture, wk ed25519.PrivateKey, _ *issuer.Token, tok string) error {
			_, err := f.is.Authenticate(context.Background(), "", issuer.ClientAssertionType, tok)
			return err
		}},
		{"actor_token", "actor token", "invalid_grant", func(f *fixture, wk ed25519.PrivateKey, parent *issuer.Token, tok string) error {
			_, err := f.delegate(parent, f.key, wk, writerID, func(r *issuer.DelegateRequest) { r.ActorToken = tok })
			return err
		}},
		{"subject_token", "mandate", "invalid_grant", func(f *fixture, wk ed25519.PrivateKey, parent *issuer.Token, tok string) error {
			_, err := f.delegate(parent, f.key, newKey(t), "", func(r *issuer.DelegateRequest) {
				r.SubjectToken, r.ActorToken = tok, f.actorToken(tok, newKey(t), "", nil)
			})
			return err
		}},
		{"DPoP at the token endpoint", "DPoP proof", "invalid_dpop_proof", func(f *fixture, wk ed25519.PrivateKey, _ *issuer.Token, tok string) error {
			_, err := f.is.MintRoot(context.Background(), f.request(func(r *issuer.RootRequest) { r.DPoP = tok }))
			return err
		}},
	}
	for _, ep := range endpoints {
		for _, k := range kinds {
			t.Run(ep.name+"/"+k.name, func(t *testing.T) {
				f := newFixture(t)
				wk := newKey(t)
				f.addAgent("writer", "mcp:crm:*", wk, nil)
				parent := f.root("mcp:crm:*", time.Minute, false)
				err := ep.present(f, wk, parent, k.make(f, wk, parent))
				if k.name == ep.expects {
					if err != nil {
						t.Fatalf("the right kind is refused: %v", err)
					}
					return
				}
				if err == nil {
					t.Fatalf("%s accepted as %s", k.name, ep.expects)
				}
				if oauthOf(err) != ep.oauth || !strings.Contains(err.Error(), "typ") {
					t.Fatalf("%s as %s: %v (oauth %q), want %s naming its typ", k.name, ep.expects, err, oauthOf(err), ep.oauth)
				}
			})
		}
	}
}

// An actor token authenticates its one exchange and nothing else: not its
// agent at the token endpoint (which would give the delegator a root
// mandate in the sub-agent's name), not at the revocation endpoint, not
// in an exchange for another parent of the same delegator. Refused there,
// it is still good for the exchange it was made for.
func TestActorTokenOnlyForItsExchange(t *testing.T) {
	for _, ephemeral := range []bool{false, true} {
		name := "registered"
		if ephemeral {
			name = "ephemeral"
		}
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			wk := newKey(t)
			f.addAgent("writer", "mcp:crm:*", wk, nil)
			id := writerID
			if ephemeral {
				id = ""
			}
			parent := f.root("mcp:crm:list_customers", time.Minute, false)
			at := f.actorToken(parent.AccessToken, wk, id, nil)
			ctx := context.Background()
			if !ephemeral {
				tok, err := f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.ClientAssertion, r.Scope = at, "mcp:crm:*" }))
				if oauthOf(err) != "invalid_client" || !strings.Contains(err.Error(), "an actor token") {
					t.Fatalf("an actor token at client_credentials: %v %+v", err, tok)
				}
				if _, err := f.is.Authenticate(ctx, writerID, issuer.ClientAssertionType, at); oauthOf(err) != "invalid_client" {
					t.Fatalf("an actor token at the revocation endpoint: %v", err)
				}
			}
			other := f.root("mcp:crm:list_customers", time.Minute, false)
			if _, err := f.delegate(other, f.key, wk, id, func(r *issuer.DelegateRequest) { r.ActorToken = at }); oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), "par") {
				t.Fatalf("an actor token in an exchange for another parent: %v", err)
			}
			for what, mod := range map[string]func(map[string]any){
				"no par":    func(c map[string]any) { delete(c, "par") },
				"empty par": func(c map[string]any) { c["par"] = "" },
				"par a number": func(c map[string]any) {
					c["par"] = 7
				},
			} {
				tok := f.actorToken(parent.AccessToken, wk, id, mod)
				if _, err := f.delegate(parent, f.key, wk, id, func(r *issuer.DelegateRequest) { r.ActorToken = tok }); oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), "par") {
					t.Errorf("%s: %v", what, err)
				}
			}
			child, err := f.delegate(parent, f.key, wk, id, func(r *issuer.DelegateRequest) { r.ActorToken = at })
			if err != nil {
				t.Fatalf("its own exchange: %v", err)
			}
			if child.Claims.Parent != parent.Claims.ID {
				t.Errorf("child of %s, want %s", child.Claims.Parent, parent.Claims.ID)
			}
		})
	}
}

// restart closes the store and opens it again with a new issuer, as a
// restart of the server does, a millisecond later.
func (f *fixture) restart() {
	f.t.Helper()
	f.store.Close()
	f.clk.Advance(time.Millisecond)
	f.open()
}

// Every single-use token stays used across a restart: the replay set is
// rebuilt from the store (assertions, actor tokens), or fails closed (a
// DPoP proof made before the restart is refused).
func TestSingleUseAcrossRestart(t *testing.T) {
	ctx := context.Background()
	gatedAgent := func(f *fixture, wk ed25519.PrivateKey) *issuer.Token {
		f.addAgent("writer", "mcp:crm:*", wk, func(a *mandate.Agent) { a.Approval, _ = mandate.ParseScopeSet("mcp:crm:delete_*") })
		root := f.root("mcp:crm:*", time.Hour, false)
		w, err := f.delegate(root, f.key, wk, writerID, nil)
		if err != nil {
			f.t.Fatal(err)
		}
		return w
	}
	tests := []struct {
		name string
		// use makes a request (it may be pending) and returns the one
		// that replays its single-use token after the restart.
		use   func(t *testing.T, f *fixture) func() error
		oauth string
		msg   string
	}{
		{"client assertion at the token endpoint", func(t *testing.T, f *fixture) func() error {
			r := f.request(nil)
			if _, err := f.is.MintRoot(ctx, r); err != nil {
				t.Fatal(err)
			}
			return func() error { _, err := f.is.MintRoot(ctx, r); return err }
		}, "invalid_client", "replay"},
		{"client assertion at the revocation endpoint", func(t *testing.T, f *fixture) func() error {
			a := f.assertion(nil)
			if _, err := f.is.Authenticate(ctx, "", issuer.ClientAssertionType, a); err != nil {
				t.Fatal(err)
			}
			return func() error { _, err := f.is.Authenticate(ctx, "", issuer.ClientAssertionType, a); return err }
		}, "invalid_client", "replay"},
		{"client assertion that asked for an approval", func(t *testing.T, f *fixture) func() error {
			f.usePolicy(`
@id("mint") permit (principal, action == Action::"MintRoot", resource);
@id("ask") @approval("required") permit (principal, action == Action::"MintRoot", resource)
when { context.purpose == "ask" };`)
			r := f.request(func(r *issuer.RootRequest) { r.TaskPurpose = "ask" })
			if _, err := f.is.MintRoot(ctx, r); oauthOf(err) != "authorization_pending" {
				t.Fatalf("want pending: %v", err)
			}
			return func() error { _, err := f.is.MintRoot(ctx, r); return err }
		}, "invalid_client", "replay"},
		{"registered actor token", func(t *testing.T, f *fixture) func() error {
			wk := newKey(t)
			f.addAgent("writer", "mcp:crm:*", wk, nil)
			root := f.root("mcp:crm:*", time.Hour, false)
			at := f.actorToken(root.AccessToken, wk, writerID, nil)
			use := func() error {
				_, err := f.delegate(root, f.key, wk, writerID, func(r *issuer.DelegateRequest) { r.ActorToken = at })
				return err
			}
			if err := use(); err != nil {
				t.Fatal(err)
			}
			return use
		}, "invalid_grant", "replay"},
		{"ephemeral actor token", func(t *testing.T, f *fixture) func() error {
			root := f.root("mcp:crm:*", time.Hour, false)
			k := newKey(t)
			at := f.actorToken(root.AccessToken, k, "", nil)
			use := func() error {
				_, err := f.delegate(root, f.key, k, "", func(r *issuer.DelegateRequest) { r.ActorToken = at })
				return err
			}
			if err := use(); err != nil {
				t.Fatal(err)
			}
			return use
		}, "invalid_grant", "replay"},
		{"ephemeral actor token that asked for an approval", func(t *testing.T, f *fixture) func() error {
			wk := newKey(t)
			w := gatedAgent(f, wk)
			k := newKey(t)
			at := f.actorToken(w.AccessToken, k, "", nil)
			use := func() error {
				_, err := f.delegate(w, wk, k, "", func(r *issuer.DelegateRequest) { r.ActorToken, r.Scope = at, "mcp:crm:delete_customer" })
				return err
			}
			if err := use(); oauthOf(err) != "authorization_pending" {
				t.Fatalf("want pending: %v", err)
			}
			return use
		}, "invalid_grant", "replay"},
		{"DPoP proof at the token endpoint", func(t *testing.T, f *fixture) func() error {
			proof := dpop.NewProof(f.key, "POST", tokenURL, "", f.clk.Now())
			if _, err := f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.DPoP = proof })); err != nil {
				t.Fatal(err)
			}
			// With a fresh assertion: only the proof is replayed.
			return func() error {
				_, err := f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.DPoP = proof }))
				return err
			}
		}, "invalid_dpop_proof", "before the server started"},
		{"DPoP proof of a delegation", func(t *testing.T, f *fixture) func() error {
			root := f.root("mcp:crm:*", time.Hour, true)
			proof := dpop.NewProofMillis(f.key, "POST", tokenURL, "", f.clk.Now())
			if _, err := f.delegate(root, f.key, newKey(t), "", func(r *issuer.DelegateRequest) { r.DPoP = proof }); err != nil {
				t.Fatal(err)
			}
			return func() error {
				_, err := f.delegate(root, f.key, newKey(t), "", func(r *issuer.DelegateRequest) { r.DPoP = proof })
				return err
			}
		}, "invalid_dpop_proof", "before the server started"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			replay := tt.use(t, f)
			f.restart()
			issued := f.log.count()
			err := replay()
			if oauthOf(err) != tt.oauth || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("replayed after a restart: %v (oauth %q), want %s mentioning %q", err, oauthOf(err), tt.oauth, tt.msg)
			}
			if f.log.count() != issued {
				t.Error("something was issued")
			}
		})
	}
}

// A proof made after the restart is good: only earlier ones are refused.
func TestDPoPAfterRestart(t *testing.T) {
	f := newFixture(t)
	f.restart()
	for name, proof := range map[string]string{
		"whole seconds, the second after the start": dpop.NewProof(f.key, "POST", tokenURL, "", f.clk.Now().Truncate(time.Second).Add(time.Second)),
		"milliseconds, the start":                   dpop.NewProofMillis(f.key, "POST", tokenURL, "", f.clk.Now()),
	} {
		f.clk.Advance(time.Second)
		if _, err := f.is.MintRoot(context.Background(), f.request(func(r *issuer.RootRequest) { r.DPoP = proof })); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// No agent delegates to itself by presenting a key it holds as a new
// ephemeral agent's: the actor's key is none of the chain's agents' keys,
// registered or ephemeral, nor the key the parent is bound to.
func TestDelegateToOwnKeyRefused(t *testing.T) {
	tests := []struct {
		name string
		try  func(t *testing.T, f *fixture) error
	}{
		{"the delegator's registered key", func(t *testing.T, f *fixture) error {
			_, err := f.delegate(f.root("mcp:crm:*", time.Minute, false), f.key, f.key, "", nil)
			return err
		}},
		{"the key the parent is bound to", func(t *testing.T, f *fixture) error {
			pop := newKey(t)
			root, err := f.is.MintRoot(context.Background(), f.request(func(r *issuer.RootRequest) {
				r.TTL, r.DPoP = time.Minute, dpop.NewProof(pop, "POST", tokenURL, "", f.clk.Now())
			}))
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.delegate(root, pop, pop, "", nil)
			return err
		}},
		{"a registered agent's key further up the chain", func(t *testing.T, f *fixture) error {
			wk := newKey(t)
			f.addAgent("writer", "mcp:crm:*", wk, nil)
			w, err := f.delegate(f.root("mcp:crm:*", time.Minute, false), f.key, wk, writerID, nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.delegate(w, wk, f.key, "", nil)
			return err
		}},
		{"an ephemeral agent's key further up the chain", func(t *testing.T, f *fixture) error {
			k1 := newKey(t)
			e1, err := f.delegate(f.root("mcp:crm:*", time.Minute, false), f.key, k1, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			e2, err := f.delegate(e1, k1, newKey(t), "", nil)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.delegate(e2, nil, k1, "", nil)
			return err
		}},
		{"a registered actor holding an ephemeral agent's key of the chain", func(t *testing.T, f *fixture) error {
			k1 := newKey(t)
			e1, err := f.delegate(f.root("mcp:crm:*", time.Minute, false), f.key, k1, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			f.addAgent("writer", "mcp:crm:*", k1, nil)
			_, err = f.delegate(e1, k1, k1, writerID, nil)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if err := tt.try(t, f); oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), "cannot delegate to itself") {
				t.Fatalf("delegation to one's own key: %v (oauth %q)", err, oauthOf(err))
			}
		})
	}
}

// Off-the-shelf clients may sign client assertions without typ or with
// typ JWT (the MCP TypeScript SDK's PrivateKeyJwtProvider sends JWT).
// They are refused unless Config.AllowUntypedClientAssertions is set; then
// they authenticate at the token and revocation endpoints, and every
// other kind is still refused.
func TestUntypedClientAssertions(t *testing.T) {
	ctx := context.Background()
	untyped := func(f *fixture, typ string) string {
		b, _ := json.Marshal(map[string]any{"iss": agentID, "sub": agentID, "aud": tokenURL,
			"exp": f.clk.Now().Add(time.Minute).Unix(), "jti": mandate.NewID("u", f.clk.Now())})
		return jose.Sign(f.key, jose.Header{Typ: typ}, b)
	}
	for _, allow := range []bool{false, true} {
		f := newFixture(t)
		f.allowUntyped = allow
		f.newIssuer()
		for _, typ := range []string{"", "JWT", "jwt", "application/jwt"} {
			_, mintErr := f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.ClientAssertion = untyped(f, typ) }))
			_, revokeErr := f.is.Authenticate(ctx, "", issuer.ClientAssertionType, untyped(f, typ))
			for what, err := range map[string]error{"token endpoint": mintErr, "revocation endpoint": revokeErr} {
				switch {
				case allow && err != nil:
					t.Errorf("allowed, typ %q at the %s: %v", typ, what, err)
				case !allow && (oauthOf(err) != "invalid_client" || !strings.Contains(err.Error(), "typ")):
					t.Errorf("strict, typ %q at the %s: %v", typ, what, err)
				}
			}
		}
		for _, typ := range []string{mandate.TypActorToken, mandate.TypDPoPProof, mandate.TypMandate, "secevent+jwt"} {
			if _, err := f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.ClientAssertion = untyped(f, typ) })); oauthOf(err) != "invalid_client" || !strings.Contains(err.Error(), "typ") {
				t.Errorf("allow %v, typ %q: %v", allow, typ, err)
			}
		}
	}
}

// The typ constants of the root package are the ones the packages that
// check them use.
func TestTypConstants(t *testing.T) {
	if mandate.TypDPoPProof != dpop.Type {
		t.Errorf("mandate.TypDPoPProof %q, dpop.Type %q", mandate.TypDPoPProof, dpop.Type)
	}
	for _, c := range []struct {
		typ, want string
		is        bool
	}{
		{"at+jwt", mandate.TypMandate, true}, {"application/AT+JWT", mandate.TypMandate, true},
		{"application/", "", false}, {"at+jwt ", mandate.TypMandate, false}, {"x/at+jwt", mandate.TypMandate, false},
		{"Client-Authentication+JWT", mandate.TypClientAssertion, true}, {"jwt", mandate.TypClientAssertion, false},
	} {
		if got := mandate.TypIs(c.typ, c.want); got != c.is {
			t.Errorf("TypIs(%q, %q) = %v", c.typ, c.want, got)
		}
	}
	if mandate.TokenKind("vnd.mandatehq.actor+jwt") != "an actor token" || mandate.TokenKind("JWT") != "" {
		t.Error("TokenKind")
	}
}

// A typed client assertion or actor token names this server by its issuer
// identifier, alone (draft-ietf-oauth-rfc7523bis): not its token endpoint,
// which another server's metadata could name as one of its own endpoints
// (audience injection), and not among other audiences. Untyped client
// assertions, where allowed, keep RFC 7523's token endpoint.
func TestTypedTokensNameTheIssuer(t *testing.T) {
	ctx := context.Background()
	for name, aud := range map[string]any{
		"the token endpoint":          tokenURL,
		"the issuer among others":     []string{iss, "https://other.example"},
		"the issuer with a slash":     iss + "/",
		"the issuer in an array, too": []string{iss, iss},
	} {
		f := newFixture(t)
		setAud := func(c map[string]any) { c["aud"] = aud }
		if _, err := f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.ClientAssertion = f.assertion(setAud) })); oauthOf(err) != "invalid_client" || !strings.Contains(err.Error(), "issuer identifier") {
			t.Errorf("client assertion, aud %s: %v", name, err)
		}
		root := f.root("mcp:crm:*", time.Minute, false)
		if _, err := f.delegate(root, f.key, newKey(t), "", func(r *issuer.DelegateRequest) {
			r.ActorToken = f.actorToken(root.AccessToken, newKey(t), "", setAud)
		}); oauthOf(err) != "invalid_grant" || !strings.Contains(err.Error(), "issuer identifier") {
			t.Errorf("actor token, aud %s: %v", name, err)
		}
	}
	f := newFixture(t)
	if _, err := f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) {
		r.ClientAssertion = f.assertion(func(c map[string]any) { c["aud"] = []string{iss} })
	})); err != nil {
		t.Errorf("aud [issuer]: %v", err)
	}
}
