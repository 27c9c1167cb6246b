package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/verify"
)

func startMain(t *testing.T, dir string) *Main {
	t.Helper()
	m := NewMain()
	m.Addr, m.DataDir = "127.0.0.1:0", dir
	m.Stdout, m.Stderr = testWriter{t}, testWriter{t}
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

// addAgent registers an agent called name with ceiling mcp:crm:* and
// returns its key.
func addAgent(t testing.TB, admin *httpapi.Client, name string) ed25519.PrivateKey {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := admin.CreateAgent(context.Background(), httpapi.AgentRequest{Name: name, Owner: "alice@example.org",
		Ceiling: []string{"mcp:crm:*"}, PublicKey: jose.NewPublicJWK(key.Public().(ed25519.PublicKey))}); err != nil {
		t.Fatal(err)
	}
	return key
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// Keys, agents and issued-mandate records survive a restart.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	m := startMain(t, dir)
	admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
	key := addAgent(t, admin, "a")
	tok, err := admin.Token(ctx, httpapi.TokenRequest{AgentID: "spiffe://example.org/agent/a", Key: key, Scope: "mcp:crm:list", TTL: time.Hour, Purpose: "survive"})
	if err != nil {
		t.Fatal(err)
	}
	// The holder revokes with a client assertion; that assertion must stay
	// used after the restart (it must not buy a mandate then).
	agentID := "spiffe://example.org/agent/a"
	revokeAssertion := httpapi.ClientAssertion(key, agentID, m.Issuer.Issuer(), time.Now())
	resp, err := http.PostForm(m.URL+"/oauth2/revoke", url.Values{"token": {"unknown"},
		"client_assertion_type": {issuer.ClientAssertionType}, "client_assertion": {revokeAssertion}})
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", resp, err)
	}
	resp.Body.Close()
	// And a mint's assertion likewise.
	mintAssertion := httpapi.ClientAssertion(key, agentID, m.Issuer.Issuer(), time.Now())
	mint := func(m *Main, assertion string) (int, string) {
		resp, err := http.PostForm(m.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"mcp:crm:x"},
			"client_assertion_type": {issuer.ClientAssertionType}, "client_assertion": {assertion}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := mint(m, mintAssertion); code != 200 {
		t.Fatalf("mint: %d %s", code, body)
	}
	kid := m.Keys.Active().ID
	token := m.AdminToken
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m2 := startMain(t, dir)
	if m2.AdminToken != token || m2.Keys.Active().ID != kid {
		t.Fatal("admin credential or signing key changed across the restart")
	}
	admin = &httpapi.Client{BaseURL: m2.URL, AdminToken: m2.AdminToken}
	if a, err := admin.Agent(ctx, "a"); err != nil || a.Status != "active" {
		t.Fatalf("agent after restart: %v %v", a, err)
	}
	// The old mandate verifies against the new process's JWKS (the issuer
	// URL differs with the port, so check the signature with the keys).
	v, _ := verify.New(verify.Config{Issuer: m.IssuerURL, Keys: verify.NewJWKS(m2.URL+"/.well-known/jwks.json", verify.JWKSOptions{}), AnyAudience: true})
	c, err := v.Verify(ctx, tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := m2.Store.Issuance(ctx, c.ID)
	if err != nil {
		t.Fatalf("issuance record lost: %v", err)
	}
	if rec.TaskPurpose != "survive" || rec.AgentID != "spiffe://example.org/agent/a" || rec.TaskID != c.Task {
		t.Errorf("record %+v", rec)
	}
	// Assertions used before the restart stay used. They name the first
	// process's token endpoint, so replay them at a restart with that
	// --issuer.
	m2.Close()
	m3 := NewMain()
	m3.Addr, m3.DataDir, m3.IssuerURL = "127.0.0.1:0", dir, m.IssuerURL
	m3.Stdout, m3.Stderr = testWriter{t}, testWriter{t}
	if err := m3.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer m3.Close()
	for name, a := range map[string]string{"revocation": revokeAssertion, "mint": mintAssertion} {
		if code, body := mint(m3, a); code != 401 || !strings.Contains(body, "replay") {
			t.Errorf("the %s assertion replayed after a restart: HTTP %d %s", name, code, body)
		}
	}
}

// DPoP proofs are single-use by an in-memory set, which a restart empties:
// a proof the server accepted before it, replayed, is refused. A proof
// made once the restarted server serves is good at once, even with a
// whole-second iat as most clients write it (the server starts serving on
// a whole second).
func TestDPoPProofsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	m := startMain(t, dir)
	key := addAgent(t, &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}, "a")
	agentID := "spiffe://example.org/agent/a"
	tokenURL := m.Issuer.TokenEndpoint()
	mint := func(m *Main, proof string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", m.URL+"/oauth2/token", strings.NewReader(url.Values{
			"grant_type": {"client_credentials"}, "scope": {"mcp:crm:x"}, "client_assertion_type": {issuer.ClientAssertionType},
			"client_assertion": {httpapi.ClientAssertion(key, agentID, m.Issuer.Issuer(), time.Now())}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("DPoP", proof)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	used := dpop.NewProof(key, "POST", tokenURL, "", time.Now())
	if code, body := mint(m, used); code != 200 {
		t.Fatalf("mint: %d %s", code, body)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	m2 := NewMain()
	m2.Addr, m2.DataDir, m2.IssuerURL = "127.0.0.1:0", dir, m.IssuerURL
	m2.Stdout, m2.Stderr = testWriter{t}, testWriter{t}
	if err := m2.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if code, body := mint(m2, used); code != 400 || !strings.Contains(body, "before the server started") {
		t.Errorf("a proof of before the restart, replayed: HTTP %d %s", code, body)
	}
	if code, body := mint(m2, dpop.NewProof(key, "POST", tokenURL, "", time.Now())); code != 200 {
		t.Errorf("a whole-second proof made after the restart: HTTP %d %s", code, body)
	}
}
