package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/httpapi"
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

type testWriter struct{ t *testing.T }

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
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := admin.CreateAgent(ctx, httpapi.AgentRequest{Name: "a", Owner: "alice@example.org", Ceiling: []string{"mcp:crm:*"},
		PublicKey: jose.NewPublicJWK(key.Public().(ed25519.PublicKey))}); err != nil {
		t.Fatal(err)
	}
	tok, err := admin.Token(ctx, httpapi.TokenRequest{AgentID: "spiffe://example.org/agent/a", Key: key, Scope: "mcp:crm:list", TTL: time.Hour, Purpose: "survive"})
	if err != nil {
		t.Fatal(err)
	}
	kid := m.Keys.Active().ID
	token := m.AdminToken
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m2 := startMain(t, dir)
	defer m2.Close()
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
}
