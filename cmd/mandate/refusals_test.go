package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/client"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/monitor"
)

// recorder keeps every response a client reads, headers and body, so that
// a test can look for what must never be in one.
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (rec *recorder) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	resp.Header.Write(&rec.buf)
	rec.buf.Write(b)
	rec.buf.WriteByte('\n')
	return resp, nil
}

func (rec *recorder) String() string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.buf.String()
}

// breakTable renames a table of the server's database under it, through a
// connection of the test's own: the server's next query of it fails with
// SQLite's own text ("no such table: …"), as a damaged database would.
func breakTable(t *testing.T, m *Main, table string) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(m.DataDir, "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("ALTER TABLE " + table + " RENAME TO " + table + "_moved_by_test"); err != nil {
		t.Fatal(err)
	}
}

// dataHolding returns the files under dir that hold s.
func dataHolding(t *testing.T, dir, s string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, "mandate.db") || strings.Contains(path, "mandate.db-") {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(s)) {
			found = append(found, path)
		}
		return nil
	})
	return found
}

// When the store fails, a caller is told it is unavailable and nothing of
// why: SQLite's text reaches the server's log, and neither an OAuth
// answer, nor an admin API answer, nor the audit log (which the public
// may read with --public-audit).
func TestInternalErrorsNeverReachCallers(t *testing.T) {
	ctx := context.Background()
	var logs strings.Builder
	logw := &lockedWriter{w: &logs}
	m, _ := serveWith(t, listServer(), false, nil, func(m *Main) { m.Stdout, m.Stderr = logw, logw })
	rec := &recorder{}
	admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken, HTTP: &http.Client{Transport: rec, Timeout: 30 * time.Second}}
	breakTable(t, m, "agents")
	breakTable(t, m, "approvers")
	const cause = "no such table"
	raw := &http.Client{Transport: rec, Timeout: 30 * time.Second}

	_, ghost, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := admin.Token(ctx, httpapi.TokenRequest{AgentID: "spiffe://example.org/agent/ghost", Key: ghost, Scope: "mcp:crm:list"}); err == nil {
		t.Fatal("a token for an agent the store cannot look up")
	}
	if _, err := admin.Agents(ctx); err == nil {
		t.Fatal("the agents listed from a broken store")
	}
	if _, err := admin.Agent(ctx, "nobody"); err == nil {
		t.Fatal("an agent read from a broken store")
	}
	// The revocation endpoint, authenticating an agent it cannot look up.
	resp, err := raw.PostForm(m.URL+"/oauth2/revoke", url.Values{"token": {"x"}, "client_assertion_type": {issuer.ClientAssertionType},
		"client_assertion": {httpapi.ClientAssertion(ghost, "spiffe://example.org/agent/ghost", m.URL, time.Now())}})
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("revocation by an agent the store cannot look up: %v %v", err, resp)
	}
	resp.Body.Close()
	// The approvals API, with an approver credential it cannot look up.
	if _, err := (&httpapi.Client{BaseURL: m.URL, ApproverToken: httpapi.ApproverTokenPrefix + "someone", HTTP: raw}).Approvals(ctx, "", ""); err == nil {
		t.Fatal("approvals listed for an approver the store cannot look up")
	}
	got := rec.String()
	if strings.Contains(got, cause) || strings.Contains(got, "SQL") {
		t.Errorf("a cause reached a caller:\n%s", got)
	}
	if !strings.Contains(got, "temporarily_unavailable") || !strings.Contains(got, `"error":"unavailable"`) {
		t.Errorf("the answers do not say the server is unavailable:\n%s", got)
	}
	if !strings.Contains(logw.String(), cause) {
		t.Errorf("the cause is not in the server's log:\n%s", logw.String())
	}
	m.Gateway.Drain()
	if f := dataHolding(t, m.DataDir, cause); len(f) > 0 {
		t.Errorf("the cause is in the audit log's files: %v", f)
	}
}

// rewriteDPoP is a transport that replaces each request's DPoP header
// with what proof returns for it ("" for none).
type rewriteDPoP func(r *http.Request) string

func (f rewriteDPoP) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Del("DPoP")
	if p := f(r); p != "" {
		r.Header.Set("DPoP", p)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// forgedProof is a DPoP proof for method and url that names the holder's
// key in its jwk header but is signed by signer; with alg none, by nobody.
func forgedProof(holder, signer ed25519.PrivateKey, algNone bool, method, url, token string) string {
	jwk := jose.NewPublicJWK(holder.Public().(ed25519.PublicKey))
	claims := map[string]any{"jti": mandate.NewID("p", time.Now()), "htm": method, "htu": url, "iat": time.Now().Unix()}
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		claims["ath"] = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	payload, _ := json.Marshal(claims)
	if algNone {
		h, _ := json.Marshal(map[string]any{"alg": "none", "typ": dpop.Type, "jwk": jwk})
		return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
	}
	return jose.Sign(signer, jose.Header{Typ: dpop.Type, JWK: &jwk}, payload)
}

// waitDetections waits for the monitor's alerts of detector on each of
// the mandates, and returns them by mandate.
func waitDetections(t *testing.T, m *Main, detector string, mandates ...string) map[string]*mandate.Event {
	t.Helper()
	found := map[string]*mandate.Event{}
	awaitEvent(t, m, url.Values{"type": {mandate.EventAlert}}, func(e mandate.LoggedEvent) bool {
		if e.Event.Details["detector"] == detector && slices.Contains(mandates, e.Event.Mandate) {
			found[e.Event.Mandate] = e.Event
		}
		return len(found) == len(mandates)
	})
	return found
}

// A stolen DPoP-bound mandate presented without its key, however it is
// presented, is refused, audited as a refusal of that mandate, and seen
// by the monitor's dpop-mismatch detector (whose default response revokes
// the mandate): at the gateway with no proof, with a proof signed by
// another key under the holder's jwk, or with alg none; at the token
// endpoint with no proof, a proof by the thief's own key, or another key
// under the holder's jwk.
func TestStolenBoundMandateIsSeen(t *testing.T) {
	ctx := context.Background()
	m, agent := serveWith(t, listServer(), true, nil, nil)
	_, thiefKey, _ := ed25519.GenerateKey(rand.Reader)
	gw := m.URL + "/mcp/crm"
	root := func() *client.Mandate {
		t.Helper()
		md, err := agent.Root(ctx, client.Request{Scope: "mcp:crm:list", TTL: time.Minute})
		if err != nil || md.Claims.Confirm == nil {
			t.Fatalf("a bound root mandate: %v", err)
		}
		return md
	}
	want := map[string]string{} // mandate → the check its refusal names
	var stolen []string
	atGateway := func(name, check string, proof func(md *client.Mandate) string) {
		md := root()
		req, _ := http.NewRequest("POST", gw, strings.NewReader(`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		req.Header.Set("Authorization", "DPoP "+md.Token)
		if p := proof(md); p != "" {
			req.Header.Set("DPoP", p)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("gateway, %s: %d", name, resp.StatusCode)
		}
		want[md.Claims.ID], stolen = check, append(stolen, md.Claims.ID)
	}
	atGateway("no proof", "dpop-bearer", func(*client.Mandate) string { return "" })
	atGateway("another key under the holder's jwk", "dpop-key", func(md *client.Mandate) string {
		return forgedProof(md.Key, thiefKey, false, "POST", gw, md.Token)
	})
	atGateway("alg none", "dpop-key", func(md *client.Mandate) string {
		return forgedProof(md.Key, nil, true, "POST", gw, md.Token)
	})

	tokenEndpoint := m.URL + "/oauth2/token"
	atTokenEndpoint := func(name, check string, proof func(md *client.Mandate, r *http.Request) string) {
		md := root()
		thief, err := client.New(client.Config{Issuer: m.URL, AgentID: md.Claims.ClientID, Key: thiefKey,
			HTTPClient: &http.Client{Transport: rewriteDPoP(func(r *http.Request) string { return proof(md, r) })}})
		if err != nil {
			t.Fatal(err)
		}
		held := &client.Mandate{Token: md.Token, Type: md.Type, Claims: md.Claims, Key: thiefKey}
		if _, err := thief.Delegate(ctx, held, client.NewEphemeral(), client.Request{}, client.DelegateOptions{}); err == nil {
			t.Errorf("token endpoint, %s: a delegation of a stolen bound mandate", name)
		}
		want[md.Claims.ID], stolen = check, append(stolen, md.Claims.ID)
	}
	atTokenEndpoint("no proof", "dpop-bearer", func(*client.Mandate, *http.Request) string { return "" })
	atTokenEndpoint("the thief's own key", "dpop-key", func(_ *client.Mandate, r *http.Request) string {
		return dpop.NewProof(thiefKey, "POST", tokenEndpoint, "", time.Now())
	})
	atTokenEndpoint("another key under the holder's jwk", "dpop-key", func(md *client.Mandate, r *http.Request) string {
		return forgedProof(md.Key, thiefKey, false, "POST", tokenEndpoint, "")
	})

	m.Gateway.Drain()
	evs, err := m.Store.Events(ctx, mandate.EventFilter{Type: mandate.EventDecision, Limit: mandate.MaxEventsPerQuery})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range evs {
		if e.Event.Outcome == mandate.OutcomeDeny && want[e.Event.Mandate] != "" {
			got[e.Event.Mandate], _ = e.Event.Details["refused"].(string)
		}
	}
	for id, check := range want {
		if got[id] != check {
			t.Errorf("mandate %s: the refusal in the audit log names %q, want %q", id, got[id], check)
		}
	}
	alerts := waitDetections(t, m, monitor.DPoPMismatch, stolen...)
	for _, id := range stolen {
		if a := alerts[id]; a.Task == "" || a.Agent != "spiffe://example.org/agent/a" {
			t.Errorf("the alert on %s: %+v", id, a)
		}
	}
}
