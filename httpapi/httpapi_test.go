package httpapi_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditlog"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/sqlite"
	"golang.org/x/mod/sumdb/tlog"
)

const adminToken = "mdt_test-admin-token-0123456789"

type testServer struct {
	*httptest.Server
	api       *httpapi.Server
	publisher *auditlog.Publisher
	store     *sqlite.Store
	client    *httpapi.Client
	failFsync *atomic.Bool // every fsync of the store fails with EIO while set
}

// newServer starts a server on a fresh store; opts adjust the issuer's
// configuration.
func newServer(t testing.TB, opts ...func(*issuer.Config)) *testServer {
	t.Helper()
	failFsync := new(atomic.Bool)
	store, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "m.db"), SyncHook: func() error {
		if failFsync.Load() {
			return syscall.EIO
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ts := &testServer{store: store, failFsync: failFsync}
	// The issuer URL is the server's own, known only once it listens.
	ts.Server = httptest.NewUnstartedServer(nil)
	ts.Start()
	t.Cleanup(ts.Close)
	keys := issuer.NewMemoryKeyring(issuer.MaxTTL, time.Now())
	icfg := issuer.Config{Issuer: ts.URL, Keys: keys, Agents: store, Log: store, Assertions: store,
		Issuances: store, Revocations: store, Events: store, Approvals: store, Logger: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(&icfg)
	}
	is, err := issuer.New(icfg)
	if err != nil {
		t.Fatal(err)
	}
	logKey, err := auditlog.OpenLogKey(filepath.Join(t.TempDir(), "log.key"), "mandate.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	ts.publisher = &auditlog.Publisher{Key: logKey, Head: store.LogHead, Save: store.SaveCheckpoint,
		TreeHash: func(n int64) (tlog.Hash, error) { return tlog.TreeHash(n, store.HashReader(context.Background())) }}
	api, err := httpapi.New(httpapi.Config{Issuer: is, Keys: keys, Agents: store, Issuances: store, Revocations: store, Events: store,
		Approvals: store, Approvers: store, Audit: store, Publisher: ts.publisher,
		AdminToken: adminToken, TrustDomain: "example.org", Logger: slog.New(slog.DiscardHandler),
		Health: func() httpapi.Health { h := store.Health(); return httpapi.Health{State: h.State, Reason: h.Reason} }})
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = api
	ts.api = api
	ts.client = &httpapi.Client{BaseURL: ts.URL, AdminToken: adminToken}
	return ts
}

// addAgent registers an agent and returns its key.
func (ts *testServer) addAgent(t testing.TB, name, ceiling string) ed25519.PrivateKey {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, err := ts.client.CreateAgent(context.Background(), httpapi.AgentRequest{
		Name: name, Owner: "alice@example.org", Ceiling: strings.Fields(ceiling), PublicKey: jose.NewPublicJWK(priv.Public().(ed25519.PublicKey)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func (ts *testServer) post(t *testing.T, path, contentType, body string, hdr map[string]string) (*http.Response, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", ts.URL+path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp, m
}

const form = "application/x-www-form-urlencoded"

func TestTokenEndpointBadInput(t *testing.T) {
	ts := newServer(t)
	key := ts.addAgent(t, "a", "mcp:crm:*")
	good := func() url.Values {
		return url.Values{
			"grant_type":            {"client_credentials"},
			"client_assertion_type": {issuer.ClientAssertionType},
			"client_assertion":      {httpapi.ClientAssertion(key, "spiffe://example.org/agent/a", ts.URL, time.Now())},
			"scope":                 {"mcp:crm:list"},
		}
	}
	tests := []struct {
		name        string
		contentType string
		body        string
		status      int
		oauth       string
	}{
		{"json body", "application/json", `{"grant_type":"client_credentials"}`, 400, "invalid_request"},
		{"no content type", "", good().Encode(), 400, "invalid_request"},
		{"malformed form", form, "grant_type=%zz", 400, "invalid_request"},
		{"oversized body", form, "scope=" + strings.Repeat("a", httpapi.MaxBodyBytes), 413, "invalid_request"},
		{"repeated parameter", form, good().Encode() + "&scope=mcp:crm:x", 400, "invalid_request"},
		{"no grant type", form, "scope=x", 400, "invalid_request"},
		{"unsupported grant", form, "grant_type=password", 400, "unsupported_grant_type"},
		{"ttl not a number", form, good().Encode() + "&ttl_ms=30ms", 400, "invalid_request"},
		{"ttl out of range", form, good().Encode() + "&ttl_ms=3600001", 400, "invalid_request"},
		{"no client auth", form, "grant_type=client_credentials&scope=mcp:crm:x", 401, "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := ts.post(t, "/oauth2/token", tt.contentType, tt.body, nil)
			if resp.StatusCode != tt.status || body["error"] != tt.oauth {
				t.Fatalf("HTTP %d %v, want %d %s", resp.StatusCode, body, tt.status, tt.oauth)
			}
			if d, _ := body["error_description"].(string); d == "" {
				t.Error("no error_description")
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q", cc)
			}
		})
	}
	resp, body := ts.post(t, "/oauth2/token", form, good().Encode(), nil)
	if resp.StatusCode != 200 || body["token_type"] != "Bearer" {
		t.Fatalf("good request: HTTP %d %v", resp.StatusCode, body)
	}
}

// TestRoutesEnforceAuth walks the route table: every /v1/ route needs a
// credential, and each route lets in exactly the callers its Auth names.
func TestRoutesEnforceAuth(t *testing.T) {
	ts := newServer(t)
	approver, err := ts.client.CreateApprover(context.Background(), "carol@example.org")
	if err != nil {
		t.Fatal(err)
	}
	send := func(r httpapi.Route, auth string) *http.Response {
		t.Helper()
		path := strings.NewReplacer("{name}", "a", "{id}", "m_1", "{path...}", "0/000").Replace(r.Path)
		req, _ := http.NewRequest(r.Method, ts.URL+path, strings.NewReader("{}"))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	denied := []string{"", "Bearer wrong", "Basic " + adminToken, "Bearer " + adminToken + "x",
		"Bearer " + approver.Token + "x", "Bearer " + httpapi.ApproverTokenPrefix + "unknown", "Basic " + approver.Token}
	counts := map[httpapi.Auth]int{}
	for _, r := range ts.api.Routes() {
		counts[r.Auth]++
		if strings.HasPrefix(r.Path, "/v1/") && r.Auth == httpapi.AuthNone {
			t.Errorf("%s %s needs no credential", r.Method, r.Path)
		}
		if r.Auth == httpapi.AuthNone {
			continue
		}
		for _, auth := range denied {
			if resp := send(r, auth); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s (%v) with %q: HTTP %d", r.Method, r.Path, r.Auth, auth, resp.StatusCode)
			}
		}
		admin, person := send(r, "Bearer "+adminToken), send(r, "Bearer "+approver.Token)
		switch r.Auth {
		case httpapi.AuthAdmin:
			if admin.StatusCode == 401 || admin.StatusCode == 403 {
				t.Errorf("%s %s (admin) refuses the admin: HTTP %d", r.Method, r.Path, admin.StatusCode)
			}
			if person.StatusCode != 401 {
				t.Errorf("%s %s (admin) with an approver credential: HTTP %d", r.Method, r.Path, person.StatusCode)
			}
		case httpapi.AuthApprover:
			if admin.StatusCode != 403 {
				t.Errorf("%s %s (approver) with the admin credential: HTTP %d, want 403", r.Method, r.Path, admin.StatusCode)
			}
			if person.StatusCode == 401 || person.StatusCode == 403 {
				t.Errorf("%s %s (approver) refuses an approver: HTTP %d", r.Method, r.Path, person.StatusCode)
			}
		case httpapi.AuthAdminOrApprover:
			if admin.StatusCode == 401 || admin.StatusCode == 403 || person.StatusCode == 401 || person.StatusCode == 403 {
				t.Errorf("%s %s (admin or approver): admin HTTP %d, approver HTTP %d", r.Method, r.Path, admin.StatusCode, person.StatusCode)
			}
		default:
			t.Errorf("%s %s: unknown auth %v", r.Method, r.Path, r.Auth)
		}
	}
	if counts[httpapi.AuthAdmin] < 15 || counts[httpapi.AuthApprover] < 2 || counts[httpapi.AuthAdminOrApprover] < 2 {
		t.Fatalf("routes by auth: %v", counts)
	}
	if n, _ := ts.store.Agents(context.Background()); len(n) != 0 {
		t.Errorf("an unauthenticated request wrote %d agents", len(n))
	}
}

// Labels given at registration come back from create, show and list, and
// are in the agent.registered event.
func TestAgentLabels(t *testing.T) {
	ts := newServer(t)
	ctx := context.Background()
	labels := []string{"team:payments", "batch"}
	ts.addAgentWith(t, "labelled", "mcp:crm:*", func(r *httpapi.AgentRequest) { r.Labels = labels })
	ts.addAgent(t, "plain", "mcp:crm:*")
	a, err := ts.client.Agent(ctx, "labelled")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Labels, labels) {
		t.Errorf("show: labels %q, want %q", a.Labels, labels)
	}
	list, err := ts.client.Agents(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("list: %v %v", list, err)
	}
	if !slices.Equal(list[0].Labels, labels) || list[1].Labels != nil {
		t.Errorf("list: labels %q and %q, want %q and none", list[0].Labels, list[1].Labels, labels)
	}
	code, b := get(t, ts.URL+"/v1/events?agent=labelled&type=agent.registered", true)
	var evs httpapi.EventsResponse
	if code != 200 || json.Unmarshal(b, &evs) != nil || len(evs.Events) != 1 {
		t.Fatalf("events: %d %s", code, b)
	}
	if got, _ := json.Marshal(evs.Events[0].Details["labels"]); string(got) != `["team:payments","batch"]` {
		t.Errorf("event labels %s", got)
	}
	code, b = get(t, ts.URL+"/v1/events?agent=plain&type=agent.registered", true)
	var plain httpapi.EventsResponse
	if code != 200 || json.Unmarshal(b, &plain) != nil || len(plain.Events) != 1 {
		t.Fatalf("events: %d %s", code, b)
	}
	if _, ok := plain.Events[0].Details["labels"]; ok {
		t.Errorf("an agent without labels has labels in its event: %v", plain.Events[0].Details)
	}
}

func TestCreateAgentBadInput(t *testing.T) {
	ts := newServer(t)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	pub, _ := json.Marshal(jose.NewPublicJWK(priv.Public().(ed25519.PublicKey)))
	private, _ := json.Marshal(jose.NewPrivateJWK(priv))
	auth := map[string]string{"Authorization": "Bearer " + adminToken}
	tests := []struct {
		name, body string
		status     int
		msg        string
	}{
		{"unknown field", `{"name":"a","owner":"a@b.c","ceiling":["mcp:a:b"],"public_key":` + string(pub) + `,"admin":true}`, 400, "unknown field"},
		{"trailing data", `{"name":"a","owner":"a@b.c","ceiling":["mcp:a:b"],"public_key":` + string(pub) + `}{}`, 400, "after the object"},
		{"private key sent", `{"name":"a","owner":"a@b.c","ceiling":["mcp:a:b"],"public_key":` + string(private) + `}`, 400, "private key"},
		{"rsa key", `{"name":"a","owner":"a@b.c","ceiling":["mcp:a:b"],"public_key":{"kty":"RSA","n":"AQAB","e":"AQAB"}}`, 400, "Ed25519"},
		{"bad name", `{"name":"A B","owner":"a@b.c","ceiling":["mcp:a:b"],"public_key":` + string(pub) + `}`, 400, "agent name"},
		{"bad owner", `{"name":"a","owner":"nobody","ceiling":["mcp:a:b"],"public_key":` + string(pub) + `}`, 400, "owner"},
		{"empty ceiling", `{"name":"a","owner":"a@b.c","ceiling":[],"public_key":` + string(pub) + `}`, 400, "ceiling"},
		{"bad scope", `{"name":"a","owner":"a@b.c","ceiling":["mcp:a"],"public_key":` + string(pub) + `}`, 400, "mcp:a"},
		{"not json", `name=a`, 400, "decode"},
		{"bad label", `{"name":"a","owner":"a@b.c","ceiling":["mcp:a:b"],"public_key":` + string(pub) + `,"labels":["Team A"]}`, 400, `invalid label "Team A"`},
		{"duplicate label", `{"name":"a","owner":"a@b.c","ceiling":["mcp:a:b"],"public_key":` + string(pub) + `,"labels":["batch","batch"]}`, 400, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := ts.post(t, "/v1/agents", "application/json", tt.body, auth)
			msg, _ := body["message"].(string)
			if resp.StatusCode != tt.status || !strings.Contains(msg, tt.msg) {
				t.Fatalf("HTTP %d %v, want %d mentioning %q", resp.StatusCode, body, tt.status, tt.msg)
			}
		})
	}
	if n, _ := ts.store.Agents(context.Background()); len(n) != 0 {
		t.Errorf("refused requests wrote %d agents", len(n))
	}
}

func TestIntrospectAndRevoke(t *testing.T) {
	ts := newServer(t)
	key := ts.addAgent(t, "a", "mcp:crm:*")
	other := ts.addAgent(t, "b", "mcp:crm:*")
	ctx := context.Background()
	tok, err := ts.client.Token(ctx, httpapi.TokenRequest{AgentID: "spiffe://example.org/agent/a", Key: key, Scope: "mcp:crm:list", DPoP: true})
	if err != nil {
		t.Fatal(err)
	}
	admin := map[string]string{"Authorization": "Bearer " + adminToken}
	introspect := func() map[string]any {
		_, body := ts.post(t, "/oauth2/introspect", form, url.Values{"token": {tok.AccessToken}}.Encode(), admin)
		return body
	}
	body0 := introspect()
	if body0["active"] != true || body0["client_id"] != "spiffe://example.org/agent/a" || body0["token_type"] != "DPoP" {
		t.Fatalf("introspection of a live mandate: %v", body0)
	}
	// RFC 7662 §2.2: integer timestamps; exp_ms has the milliseconds.
	exp, _ := body0["exp"].(float64)
	expMS, _ := body0["exp_ms"].(float64)
	if exp != float64(int64(exp)) || int64(exp) != int64(expMS)/1000 {
		t.Errorf("exp %v exp_ms %v", body0["exp"], body0["exp_ms"])
	}
	_, body := ts.post(t, "/oauth2/introspect", form, url.Values{"token": {"x.y.z"}}.Encode(), admin)
	if body["active"] != false {
		t.Errorf("garbage introspects as %v", body)
	}

	revokeAs := func(k ed25519.PrivateKey, id string) (*http.Response, map[string]any) {
		return ts.post(t, "/oauth2/revoke", form, url.Values{
			"token":                 {tok.AccessToken},
			"client_assertion_type": {issuer.ClientAssertionType},
			"client_assertion":      {httpapi.ClientAssertion(k, id, ts.URL, time.Now())},
		}.Encode(), nil)
	}
	// Another agent may not revoke it.
	if resp, body := revokeAs(other, "spiffe://example.org/agent/b"); resp.StatusCode != 400 || body["error"] != "unauthorized_client" {
		t.Errorf("revocation by another agent: HTTP %d %v", resp.StatusCode, body)
	}
	if body := introspect(); body["active"] != true {
		t.Fatalf("a refused revocation changed the mandate: %v", body)
	}
	// No credentials at all: refused.
	if resp, _ := ts.post(t, "/oauth2/revoke", form, url.Values{"token": {tok.AccessToken}}.Encode(), nil); resp.StatusCode != 401 {
		t.Errorf("anonymous revocation: HTTP %d", resp.StatusCode)
	}
	// The holder may.
	if resp, body := revokeAs(key, "spiffe://example.org/agent/a"); resp.StatusCode != 200 {
		t.Fatalf("revocation by the holder: HTTP %d %v", resp.StatusCode, body)
	}
	if body := introspect(); body["active"] != false {
		t.Errorf("revoked mandate introspects as %v", body)
	}
	var rec httpapi.MandateResponse
	req, _ := http.NewRequest("GET", ts.URL+"/v1/mandates/"+mustClaims(t, tok.AccessToken).ID, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&rec)
	resp.Body.Close()
	if !rec.Revoked || rec.Agent != "spiffe://example.org/agent/a" {
		t.Errorf("mandate record %+v", rec)
	}
	// RFC 7009 §2.2: revoking garbage is not an error.
	if resp, _ := ts.post(t, "/oauth2/revoke", form, url.Values{"token": {"garbage"}}.Encode(), admin); resp.StatusCode != 200 {
		t.Errorf("revoking garbage: HTTP %d", resp.StatusCode)
	}
}

func mustClaims(t *testing.T, tok string) *mandate.Claims {
	j, err := jose.Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	var c mandate.Claims
	if err := json.Unmarshal(j.Payload, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestDiscovery(t *testing.T) {
	ts := newServer(t)
	md, err := ts.client.Metadata(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if md.Issuer != ts.URL || md.TokenEndpoint != ts.URL+"/oauth2/token" || md.TrustDomain != "example.org" {
		t.Errorf("metadata %+v", md)
	}
	resp, err := http.Get(md.JWKSURI)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set struct{ Keys []map[string]string }
	json.NewDecoder(resp.Body).Decode(&set)
	if len(set.Keys) != 1 || set.Keys[0]["kty"] != "OKP" || set.Keys[0]["alg"] != "EdDSA" || set.Keys[0]["kid"] == "" || set.Keys[0]["d"] != "" {
		t.Errorf("jwks %v", set.Keys)
	}
	resp2, _ := http.Get(ts.URL + "/healthz")
	if resp2.StatusCode != 200 {
		t.Errorf("healthz %d", resp2.StatusCode)
	}
	resp2.Body.Close()
}

// The API client follows no redirect, whatever HTTP client it is given,
// so that its admin token, approver credential or token request is sent
// only to the server it was pointed at; AuthTransport adds the token only
// on the origin of the first request.
func TestClientFollowsNoRedirect(t *testing.T) {
	var leaked atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" || r.ContentLength > 0 {
			leaked.Add(1)
		}
	}))
	defer other.Close()
	redirect := httptest.NewServer(http.RedirectHandler(other.URL+"/v1/events", http.StatusTemporaryRedirect))
	defer redirect.Close()
	for _, hc := range []*http.Client{nil, {}} {
		c := &httpapi.Client{BaseURL: redirect.URL, AdminToken: adminToken, HTTP: hc}
		if _, err := c.Events(context.Background(), url.Values{}); err == nil {
			t.Error("a redirected API call succeeded")
		}
		if _, err := c.CreateAgent(context.Background(), httpapi.AgentRequest{Name: "x"}); err == nil {
			t.Error("a redirected API call succeeded")
		}
	}
	resp, err := (&http.Client{Transport: httpapi.AuthTransport{Token: adminToken}}).Get(redirect.URL)
	if err == nil {
		resp.Body.Close()
		t.Errorf("AuthTransport followed a redirect to another origin: %d", resp.StatusCode)
	}
	if n := leaked.Load(); n != 0 {
		t.Errorf("%d requests reached the address the redirect named", n)
	}
}

// The probes report the store: ready and live while it takes writes; once
// an fsync failed, /readyz and /healthz both answer 503 "failed" (a
// restart is what helps), with a short reason and no internal text, and a
// refused write's 503 carries Retry-After.
func TestHealthAndReadiness(t *testing.T) {
	ts := newServer(t)
	get := func(path string) (int, map[string]string, http.Header) {
		t.Helper()
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return resp.StatusCode, body, resp.Header
	}
	if st, body, _ := get("/readyz"); st != 200 || body["status"] != "ready" || body["store"] != "ok" {
		t.Errorf("/readyz of a healthy store: %d %v", st, body)
	}
	if st, body, _ := get("/healthz"); st != 200 || body["status"] != "ok" {
		t.Errorf("/healthz of a healthy store: %d %v", st, body)
	}
	ts.failFsync.Store(true)
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	_, err := ts.client.CreateAgent(context.Background(), httpapi.AgentRequest{Name: "a", Owner: "alice@example.org", Ceiling: []string{"mcp:crm:*"},
		PublicKey: jose.NewPublicJWK(pub)})
	if mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("a write whose fsync failed: %v", err)
	}
	for _, path := range []string{"/readyz", "/healthz"} {
		st, body, h := get(path)
		if st != http.StatusServiceUnavailable || body["status"] != "failed" || body["reason"] == "" || strings.Contains(body["reason"], "input/output") {
			t.Errorf("%s of a failed store: %d %v", path, st, body)
		}
		if path == "/readyz" && h.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", path)
		}
	}
	pub2, _, _ := ed25519.GenerateKey(rand.Reader)
	reqBody, _ := json.Marshal(httpapi.AgentRequest{Name: "b", Owner: "alice@example.org", Ceiling: []string{"mcp:crm:*"}, PublicKey: jose.NewPublicJWK(pub2)})
	req, _ := http.NewRequest("POST", ts.URL+"/v1/agents", bytes.NewReader(reqBody))
	req.Header.Set("Authorization", "Bearer "+adminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("a write to a failed store: %d, Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// A server that shuts down is not ready: /readyz answers 503
// shutting_down from the moment the shutdown begins, while /healthz stays
// 200.
func TestNotReadyWhileShuttingDown(t *testing.T) {
	ts := newServer(t)
	ts.api.StopWaiting() // what http.Server.Shutdown calls (RegisterOnShutdown)
	resp, err := http.Get(ts.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var body httpapi.ReadyBody
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || body.Status != "shutting_down" || body.Reason != "shutting down" {
		t.Errorf("/readyz while shutting down: %d %+v", resp.StatusCode, body)
	}
	resp, err = http.Get(ts.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz while shutting down: %d", resp.StatusCode)
	}
}
