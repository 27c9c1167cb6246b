package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/client"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/policy"
)

// Recognisable fake credentials, of the formats the secret detectors know.
// A leak is any 8 bytes of their start: a message cut in the middle of one
// must not keep its first half either.
const (
	fakeAWSKey      = "AKIAMASKTEST0000000A"
	fakeGitHubToken = "ghp_Mask0Test1Mask0Test1Mask0Test1Mask0T"
)

// A credential a caller puts in any field of a request (a client
// assertion, a token request, a delegation, a revocation, an approver's
// note) reaches neither the audit log's files (which --public-audit makes
// public), nor the server's database, nor its log, nor the caller's
// answer; and the caller is still told what was wrong. A request that
// would be granted with one (a scope, a purpose) is refused: what a
// mandate is issued for is written down for everyone who audits it.
func TestCallersSecretsReachNoLog(t *testing.T) {
	ctx := context.Background()
	var logs strings.Builder
	logw := &lockedWriter{w: &logs}
	// The default set, and mints by agent b wait for a person.
	policies := t.TempDir()
	for name, b := range policy.DefaultPolicies() {
		if err := os.WriteFile(filepath.Join(policies, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(policies, "b.cedar"), []byte(`@id("b-mints-need-approval")
@approval("required")
permit (principal is Agent, action == Action::"MintRoot", resource is Task) when { principal.name == "b" };
`), 0o600); err != nil {
		t.Fatal(err)
	}
	m, agent := serveWith(t, listServer(), false, nil, func(m *Main) {
		m.Stdout, m.Stderr = logw, logw
		m.PolicyDir, m.LogLevel = policies, slog.LevelDebug
	})
	admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
	cKey := addAgent(t, admin, "c")
	bKey := addAgent(t, admin, "b") // owned by alice, as every agent of addAgent
	const cID = "spiffe://example.org/agent/c"
	_, stranger, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now
	assertion := func() string { return httpapi.ClientAssertion(cKey, cID, m.URL, now()) }
	signed := func(key ed25519.PrivateKey, h jose.Header, claims map[string]any) string {
		b, _ := json.Marshal(claims)
		return jose.Sign(key, h, b)
	}
	rawJWT := func(header, claims map[string]any) string {
		h, _ := json.Marshal(header)
		c, _ := json.Marshal(claims)
		return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c) + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 64))
	}
	jwtClaims := func(sub string) map[string]any {
		return map[string]any{"iss": sub, "sub": sub, "aud": m.URL, "iat": now().Unix(), "exp": now().Add(time.Minute).Unix(), "jti": mandate.NewID("a_", now())}
	}
	mint := func(extra url.Values) url.Values {
		f := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {issuer.ClientAssertionType},
			"client_assertion": {assertion()}, "scope": {"mcp:crm:list"}}
		for k, v := range extra {
			f[k] = v
		}
		return f
	}
	parent, err := agent.Root(ctx, client.Request{Scope: "mcp:crm:*", TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ephemeral := func() ed25519.PrivateKey { _, k, _ := ed25519.GenerateKey(rand.Reader); return k }
	exchange := func(extra url.Values) url.Values {
		f := url.Values{"grant_type": {issuer.GrantTypeTokenExchange}, "subject_token": {parent.Token}, "subject_token_type": {issuer.TokenTypeJWT},
			"actor_token": {httpapi.ActorToken(ephemeral(), "", parent.Claims.ID, m.URL, now())}, "actor_token_type": {issuer.TokenTypeJWT}}
		for k, v := range extra {
			f[k] = v
		}
		return f
	}

	type request struct {
		name string
		path string
		form url.Values
		dpop string
		want string // in the answer: what was wrong
	}
	proofKey := ephemeral()
	proofJWK := jose.NewPublicJWK(proofKey.Public().(ed25519.PublicKey))
	longDPoP := signed(proofKey, jose.Header{Typ: strings.Repeat("x", 40) + " " + fakeGitHubToken, JWK: &proofJWK},
		map[string]any{"jti": "p1", "htm": "POST", "htu": m.URL + "/oauth2/token", "iat": now().Unix()})
	requests := []request{
		// The token endpoint: a root mandate.
		{"a scope that would be granted", "/oauth2/token", mint(url.Values{"scope": {"mcp:crm:" + fakeGitHubToken}}), "", "invalid_scope"},
		{"a scope list cut in a message", "/oauth2/token", mint(url.Values{"scope": {"mcp:crm:list" + strings.Repeat(" mcp:crm:x", 4) + " " + fakeGitHubToken + "  mcp:crm:y"}}), "", "invalid_scope"},
		{"a resource", "/oauth2/token", mint(url.Values{"resource": {"mcp:" + fakeAWSKey}}), "", "invalid_target"},
		{"a client_id", "/oauth2/token", mint(url.Values{"client_id": {"spiffe://example.org/agent/" + fakeGitHubToken}}), "", "client_id"},
		{"a task purpose", "/oauth2/token", mint(url.Values{"task_purpose": {"deploy with key " + fakeAWSKey}}), "", "task_purpose"},
		{"an approval_id", "/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {issuer.ClientAssertionType},
			"client_assertion": {httpapi.ClientAssertion(bKey, "spiffe://example.org/agent/b", m.URL, now())}, "scope": {"mcp:crm:list"},
			"approval_id": {fakeGitHubToken}}, "", "approval"},
		{"a grant_type", "/oauth2/token", url.Values{"grant_type": {fakeGitHubToken}}, "", "unsupported_grant_type"},
		{"a repeated parameter", "/oauth2/token", url.Values{fakeAWSKey: {"1", "2"}}, "", "repeated"},
		{"an assertion's sub", "/oauth2/token", mint(url.Values{"client_assertion": {signed(stranger, jose.Header{Typ: mandate.TypClientAssertion},
			jwtClaims("spiffe://example.org/agent/"+fakeGitHubToken))}}), "", "unknown agent"},
		{"an assertion's typ", "/oauth2/token", mint(url.Values{"client_assertion": {signed(cKey, jose.Header{Typ: fakeGitHubToken}, jwtClaims(cID))}}), "", "typ"},
		{"an assertion's alg, cut in a message", "/oauth2/token", mint(url.Values{"client_assertion": {rawJWT(map[string]any{"alg": strings.Repeat("x", 20) + " " + fakeAWSKey, "typ": mandate.TypClientAssertion}, jwtClaims(cID))}}), "", "alg"},
		{"a DPoP proof's typ, cut in a message", "/oauth2/token", mint(nil), longDPoP, "invalid_dpop_proof"},
		// The token endpoint: a delegation.
		{"a subject_token_type", "/oauth2/token", exchange(url.Values{"subject_token_type": {fakeGitHubToken}}), "", "subject_token_type"},
		{"a delegated scope that would be granted", "/oauth2/token", exchange(url.Values{"scope": {"mcp:crm:" + fakeAWSKey}}), "", "invalid_scope"},
		{"a delegated resource", "/oauth2/token", exchange(url.Values{"resource": {"mcp:" + fakeAWSKey}}), "", "invalid_target"},
		{"an actor token's sub", "/oauth2/token", exchange(url.Values{"actor_token": {signed(stranger, jose.Header{Typ: mandate.TypActorToken},
			func() map[string]any {
				c := jwtClaims("spiffe://example.org/agent/" + fakeGitHubToken)
				c["par"] = parent.Claims.ID
				return c
			}())}}), "", "unknown agent"},
		{"an actor token's par", "/oauth2/token", exchange(url.Values{"actor_token": {httpapi.ActorToken(ephemeral(), "", fakeGitHubToken, m.URL, now())}}), "", "par"},
		{"a subject token's kid", "/oauth2/token", exchange(url.Values{"subject_token": {signed(stranger, jose.Header{Typ: mandate.TypMandate, Kid: fakeAWSKey}, map[string]any{"jti": "m_1"})}}), "", "unknown key"},
		// The revocation endpoint.
		{"a revoking agent's sub", "/oauth2/revoke", url.Values{"token": {parent.Token}, "client_assertion_type": {issuer.ClientAssertionType},
			"client_assertion": {signed(stranger, jose.Header{Typ: mandate.TypClientAssertion}, jwtClaims("spiffe://example.org/agent/"+fakeGitHubToken))}}, "", "unknown agent"},
		{"a revoked token", "/oauth2/revoke", url.Values{"token": {fakeGitHubToken}, "client_assertion_type": {issuer.ClientAssertionType},
			"client_assertion": {assertion()}}, "", ""},
	}
	for _, rq := range requests {
		req, _ := http.NewRequest("POST", m.URL+rq.path, strings.NewReader(rq.form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if rq.dpop != "" {
			req.Header.Set("DPoP", rq.dpop)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if rq.want == "" {
			continue
		}
		if resp.StatusCode < 400 || !strings.Contains(string(b), rq.want) {
			t.Errorf("%s: %d %s, want a refusal saying %q", rq.name, resp.StatusCode, b, rq.want)
		}
		if leak := leaked(string(b)); leak != "" {
			t.Errorf("%s: the answer holds %s: %s", rq.name, leak, b)
		}
	}

	// A path no route has: the server's access log (debug) writes paths.
	if resp, err := http.Get(m.URL + "/v1/keys/" + fakeAWSKey); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	// The gateway, shown a mandate signed with a key it does not know.
	req, _ := http.NewRequest("POST", m.URL+"/mcp/crm", strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	req.Header.Set("Authorization", "Bearer "+signed(stranger, jose.Header{Typ: mandate.TypMandate, Kid: fakeAWSKey}, map[string]any{"jti": "m_1"}))
	if resp, err := http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || leaked(string(b)+fmt.Sprint(resp.Header)) != "" {
			t.Errorf("the gateway, a mandate of an unknown kid: %d %v %s", resp.StatusCode, resp.Header, b)
		}
	}

	// The admin's and an approver's words.
	if _, err := admin.Revoke(ctx, httpapi.RevocationRequest{Mandate: parent.Claims.ID, Reason: "it leaked " + fakeAWSKey}); mandate.ErrorCode(err) != mandate.EINVALID ||
		!strings.Contains(mandate.ErrorMessage(err), "reason") || leaked(mandate.ErrorMessage(err)) != "" {
		t.Errorf("a revocation whose reason holds a credential: %v", err)
	}
	if _, err := admin.Revoke(ctx, httpapi.RevocationRequest{Mandate: fakeGitHubToken}); err == nil || leaked(mandate.ErrorMessage(err)) != "" {
		t.Errorf("a revocation of no mandate: %v", err)
	}
	// An agent with no live mandate: nothing revoked, which the log says.
	if _, err := admin.Revoke(ctx, httpapi.RevocationRequest{Agent: "spiffe://example.org/agent/" + fakeAWSKey}); err != nil {
		t.Errorf("a revocation of an agent with no mandate: %v", err)
	}
	ap, err := admin.CreateApprover(ctx, "alice@example.org")
	if err != nil {
		t.Fatal(err)
	}
	_, err = admin.Token(ctx, httpapi.TokenRequest{AgentID: "spiffe://example.org/agent/b", Key: bKey, Scope: "mcp:crm:list"})
	var pe *httpapi.PendingError
	if !errors.As(err, &pe) {
		t.Fatalf("b's mint does not wait for a person: %v", err)
	}
	alice := &httpapi.Client{BaseURL: m.URL, ApproverToken: ap.Token}
	if _, err := alice.Decide(ctx, pe.ApprovalID, false, "never send "+fakeGitHubToken); mandate.ErrorCode(err) != mandate.EINVALID ||
		!strings.Contains(mandate.ErrorMessage(err), "note") || leaked(mandate.ErrorMessage(err)) != "" {
		t.Errorf("a note that holds a credential: %v", err)
	}

	m.Gateway.Drain()
	for _, s := range []string{fakeAWSKey[:8], fakeGitHubToken[:8]} {
		if f := dataHolding(t, m.DataDir, s); len(f) > 0 {
			t.Errorf("%s… is in the audit log's files: %v", s, f)
		}
		db, _ := filepath.Glob(filepath.Join(m.DataDir, "mandate.db*"))
		for _, path := range db {
			if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), s) {
				t.Errorf("%s… is in %s", s, path)
			}
		}
	}
	if leak := leaked(logw.String()); leak != "" {
		t.Errorf("the server's log holds %s:\n%s", leak, logw.String())
	}
	// The refusals are on record, masked.
	evs, err := m.Store.Events(ctx, mandate.EventFilter{Type: mandate.EventDecision, Limit: mandate.MaxEventsPerQuery})
	if err != nil {
		t.Fatal(err)
	}
	masked := 0
	for _, e := range evs {
		if strings.Contains(e.Event.Reason, "[secret:") {
			masked++
		}
	}
	if masked < 10 {
		t.Errorf("%d refusals in the audit log name a masked secret, want at least 10", masked)
	}
}

// leaked names the fake credential s holds the start of, or "".
func leaked(s string) string {
	for _, secret := range []string{fakeAWSKey, fakeGitHubToken} {
		if strings.Contains(s, secret[:8]) {
			return secret[:8] + "…"
		}
	}
	return ""
}
