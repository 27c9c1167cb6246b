package client_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditlog"
	"github.com/mandatehq/mandate/client"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/sqlite"
	"github.com/mandatehq/mandate/verify"
)

// server is a real Mandate server (SQLite, issuer, HTTP API) on loopback.
type server struct {
	*httptest.Server
	store  *sqlite.Store
	issuer *issuer.Issuer
}

func startServer(tb testing.TB) *server { return startServerWith(tb, nil) }

// startServerWith starts a server whose issuer decides with pol (none if nil).
func startServerWith(tb testing.TB, pol issuer.Decider) *server {
	tb.Helper()
	dir := tb.TempDir()
	store, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(dir, "m.db")})
	if err != nil {
		tb.Fatal(err)
	}
	s := &server{Server: httptest.NewUnstartedServer(nil), store: store}
	s.Start()
	tb.Cleanup(func() { s.Close(); store.Close() })
	// The agents' owner decides their approvals, with a credential.
	h := sha256.Sum256([]byte("alice's approver token"))
	if err := store.CreateApprover(context.Background(), &mandate.Approver{Email: "alice@example.org", TokenHash: h[:], CreatedAt: time.Now()}, nil); err != nil {
		tb.Fatal(err)
	}
	keys := issuer.NewMemoryKeyring(issuer.MaxTTL, time.Now())
	s.issuer, err = issuer.New(issuer.Config{Issuer: s.URL, Keys: keys, Agents: store, Log: store, Assertions: store,
		Issuances: store, Revocations: store, Events: store, Approvals: store, Policy: pol, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	logKey, err := auditlog.OpenLogKey(filepath.Join(dir, "log.key"), "mandate.test/audit")
	if err != nil {
		tb.Fatal(err)
	}
	pub := &auditlog.Publisher{Key: logKey, Head: store.LogHead, Save: store.SaveCheckpoint,
		TreeHash: func(n int64) (tlog.Hash, error) { return tlog.TreeHash(n, store.HashReader(context.Background())) }}
	api, err := httpapi.New(httpapi.Config{Issuer: s.issuer, Keys: keys, Agents: store, Issuances: store, Revocations: store,
		Events: store, Approvals: store, Approvers: store, Audit: store, Publisher: pub,
		AdminToken: "admin-secret-for-tests-0123456789", TrustDomain: "example.org", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	s.Config.Handler = api
	return s
}

// register registers an agent and returns a Client for it.
func (s *server) register(tb testing.TB, name, ceiling string, dpop bool, mod func(*mandate.Agent)) *client.Client {
	tb.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	c, err := mandate.ParseScopeSet(ceiling)
	if err != nil {
		tb.Fatal(err)
	}
	a := &mandate.Agent{ID: mandate.AgentID("example.org", name), Name: name, Owner: "alice@example.org", Ceiling: c,
		PublicKey: pub, KeyID: jose.Thumbprint(pub), Status: mandate.AgentActive, CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if mod != nil {
		mod(a)
	}
	if err := s.store.CreateAgent(context.Background(), a, nil); err != nil {
		tb.Fatal(err)
	}
	cl, err := client.New(client.Config{Issuer: s.URL, AgentID: a.ID, Key: key, DPoP: dpop})
	if err != nil {
		tb.Fatal(err)
	}
	return cl
}

func TestRootAndDelegate(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	orch := s.register(t, "orchestrator", "mcp:crm:* mcp:email:send", true, nil)
	root, err := orch.Root(ctx, client.Request{Scope: "mcp:crm:* mcp:email:send", TTL: time.Minute, Purpose: "weekly report"})
	if err != nil {
		t.Fatal(err)
	}
	if root.Type != "DPoP" || root.Claims.Confirm == nil {
		t.Fatalf("root not bound: %s %+v", root.Type, root.Claims.Confirm)
	}
	sub := client.NewEphemeral()
	child, err := orch.Delegate(ctx, root, sub, client.Request{Scope: "mcp:crm:list_customers", TTL: 30 * time.Millisecond}, client.DelegateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := child.Claims
	if !strings.HasPrefix(c.ClientID, root.Claims.ClientID+"/sub/") || c.Parent != root.Claims.ID || c.Task != root.Claims.Task || child.Lifetime != 30*time.Millisecond {
		t.Errorf("child %+v", c)
	}
	// A child is bound to its sub-agent's key, which signs its proofs; a
	// resource server verifies both with the public verifier. (One that
	// lives long enough to be checked on a busy machine.)
	long, err := orch.Delegate(ctx, root, client.NewEphemeral(), client.Request{Scope: "mcp:crm:list_customers"}, client.DelegateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.New(verify.Config{Issuer: s.URL, Keys: verify.NewJWKS(s.URL+"/.well-known/jwks.json", verify.JWKSOptions{}), Audience: "mcp:crm"})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "https://crm.example/mcp", nil)
	if err := long.Authorize(r); err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyRequest(ctx, r, "https://crm.example/mcp"); err != nil {
		t.Fatalf("the child does not verify at a resource server: %v", err)
	}
	// A wider scope is refused with the OAuth error.
	_, err = orch.Delegate(ctx, long, client.NewEphemeral(), client.Request{Scope: "mcp:crm:*"}, client.DelegateOptions{})
	var e *client.Error
	if !errorsAs(err, &e) || e.Code != "invalid_scope" {
		t.Fatalf("escalation: %v", err)
	}
}

func TestDelegateWaitsForApproval(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	orch := s.register(t, "orchestrator", "mcp:crm:*", false, func(a *mandate.Agent) {
		a.Approval, _ = mandate.ParseScopeSet("mcp:crm:delete_*")
	})
	root, err := orch.Root(ctx, client.Request{Scope: "mcp:crm:*", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	sub := client.NewEphemeral()
	req := client.Request{Scope: "mcp:crm:delete_customer", TTL: time.Second}
	_, err = orch.Delegate(ctx, root, sub, req, client.DelegateOptions{})
	if !client.IsPending(err) {
		t.Fatalf("gated delegation without waiting: %v", err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		list, _ := s.store.Approvals(ctx, mandate.ApprovalFilter{Status: mandate.ApprovalPending})
		for _, ap := range list {
			s.issuer.Decide(ctx, ap.ID, "alice@example.org", true, "go ahead")
		}
	}()
	var e *client.Error
	errorsAs(err, &e)
	child, err := orch.Delegate(ctx, root, sub, req, client.DelegateOptions{Wait: 10 * time.Second, ApprovalID: e.ApprovalID})
	if err != nil {
		t.Fatal(err)
	}
	if child.Claims.Scope != "mcp:crm:delete_customer" {
		t.Errorf("scope %q", child.Claims.Scope)
	}
}

// A policy that asks a person to approve a task makes Root answer
// authorization_pending, and RootWait wait for the decision.
func TestRootWaitsForApproval(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.cedar"), []byte(`
@id("mint")
@approval("required")
permit (principal, action == Action::"MintRoot", resource);`), 0o600); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Open(policy.Config{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	s := startServerWith(t, pol)
	ctx := context.Background()
	orch := s.register(t, "orchestrator", "mcp:crm:*", true, nil)
	req := client.Request{Scope: "mcp:crm:list_customers", TTL: time.Minute, Purpose: "weekly report"}
	if _, err := orch.Root(ctx, req); !client.IsPending(err) {
		t.Fatalf("a task that needs approval: %v", err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		list, _ := s.store.Approvals(ctx, mandate.ApprovalFilter{Status: mandate.ApprovalPending})
		for _, ap := range list {
			s.issuer.Decide(ctx, ap.ID, "alice@example.org", true, "")
		}
	}()
	root, err := orch.RootWait(ctx, req, client.ApprovalOptions{Wait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if root.Type != "DPoP" || root.Claims.Scope != "mcp:crm:list_customers" {
		t.Errorf("root %s %+v", root.Type, root.Claims)
	}
}

func TestSourceRefreshes(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	orch := s.register(t, "orchestrator", "mcp:crm:*", true, nil)
	root := orch.RootSource(client.Request{Scope: "mcp:crm:*", TTL: time.Minute})
	sub := orch.DelegateSource(root, client.NewEphemeral(), client.Request{Scope: "mcp:crm:get_customer", TTL: 40 * time.Millisecond}, client.DelegateOptions{})
	first, err := sub.Mandate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := sub.Mandate(ctx)
	if again != first {
		t.Error("a fresh mandate was replaced")
	}
	time.Sleep(35 * time.Millisecond) // less than a quarter of 40 ms left
	next, err := sub.Mandate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if next.Claims.ID == first.Claims.ID || next.Claims.Task != first.Claims.Task {
		t.Errorf("refresh: %s → %s (task %s → %s)", first.Claims.ID, next.Claims.ID, first.Claims.Task, next.Claims.Task)
	}
	// The transport sends the mandate and its proof.
	seen := make(chan string, 1)
	rs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("Authorization")[:5] + " " + r.Header.Get("DPoP")[:3]
	}))
	defer rs.Close()
	resp, err := (&http.Client{Transport: sub.Transport(nil)}).Get(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := <-seen; got != "DPoP  eyJ" {
		t.Errorf("headers %q", got)
	}
}

func errorsAs(err error, target **client.Error) bool { return errors.As(err, target) }

func mustTempDir() string {
	d, err := os.MkdirTemp("", "mandate-example-")
	if err != nil {
		panic(err)
	}
	return d
}

// TestOnlineCheckSeesRevokedAncestor: a resource server that asks the
// issuer (VerifyRequestOnline) refuses a child whose root was revoked,
// though the child's own signature and lifetime are fine.
func TestOnlineCheckSeesRevokedAncestor(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	orch := s.register(t, "orchestrator", "mcp:crm:*", true, nil)
	root, err := orch.Root(ctx, client.Request{Scope: "mcp:crm:*", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	child, err := orch.Delegate(ctx, root, client.NewEphemeral(), client.Request{Scope: "mcp:crm:get_customer"}, client.DelegateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := verify.New(verify.Config{Issuer: s.URL, Keys: verify.NewJWKS(s.URL+"/.well-known/jwks.json", verify.JWKSOptions{}), Audience: "mcp:crm",
		Introspection: &verify.Introspection{URL: s.URL + "/oauth2/introspect", Authorize: func(r *http.Request) error {
			r.Header.Set("Authorization", "Bearer admin-secret-for-tests-0123456789")
			return nil
		}}})
	if err != nil {
		t.Fatal(err)
	}
	check := func() error {
		r := httptest.NewRequest(http.MethodPost, "https://crm.example/mcp", nil)
		child.Authorize(r)
		_, err := v.VerifyRequestOnline(ctx, r, "https://crm.example/mcp")
		return err
	}
	if err := check(); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	if err := s.store.Revoke(ctx, &mandate.Revocation{MandateID: root.Claims.ID, ExpiresAt: root.Claims.Expiry.Time, RevokedAt: time.Now(), RevokedBy: "admin"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := check(); !errors.Is(err, verify.ErrInactive) {
		t.Fatalf("after the root was revoked: %v, want ErrInactive", err)
	}
}

// A token endpoint's redirect is not followed, whatever HTTPClient is
// given: 307 would send the form, with the client assertion (a credential
// for the real endpoint for a minute), to wherever it points.
func TestTokenRequestsFollowNoRedirect(t *testing.T) {
	var reached atomic.Bool
	other := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { reached.Store(true) }))
	defer other.Close()
	redirect := httptest.NewServer(http.RedirectHandler(other.URL+"/oauth2/token", http.StatusTemporaryRedirect))
	defer redirect.Close()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	for _, hc := range []*http.Client{nil, {}} {
		c, err := client.New(client.Config{Issuer: redirect.URL, AgentID: "spiffe://example.org/agent/a", Key: key, HTTPClient: hc})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Root(context.Background(), client.Request{Scope: "mcp:a:b"}); err == nil {
			t.Error("a redirected token request succeeded")
		}
	}
	if reached.Load() {
		t.Error("the redirect was followed, the client assertion with it")
	}
}

// A Source's transport presents the mandate on a redirect only to the
// origin the request was first sent to: a resource that redirects
// elsewhere does not get the agent's mandate sent there.
func TestSourceTransportKeepsTheMandateOnItsOrigin(t *testing.T) {
	s := startServer(t)
	orch := s.register(t, "orchestrator", "mcp:crm:*", false, nil)
	src := orch.RootSource(client.Request{Scope: "mcp:crm:*", TTL: time.Minute})
	var leaked atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Authorization"); a != "" {
			leaked.Store(a)
		}
	}))
	defer other.Close()
	var same atomic.Int32
	rs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, other.URL+"/x", http.StatusTemporaryRedirect)
		case "/here":
			http.Redirect(w, r, "/landing", http.StatusFound)
		case "/landing":
			if r.Header.Get("Authorization") != "" {
				same.Add(1)
			}
		}
	}))
	defer rs.Close()
	hc := &http.Client{Transport: src.Transport(nil)}
	if resp, err := hc.Get(rs.URL + "/away"); err == nil {
		resp.Body.Close()
		t.Errorf("a redirect to another origin: %d", resp.StatusCode)
	}
	if leaked.Load() != nil {
		t.Errorf("the mandate went to another origin: %v", leaked.Load())
	}
	resp, err := hc.Get(rs.URL + "/here")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if same.Load() != 1 {
		t.Error("a redirect on the same origin lost the mandate")
	}
}
