package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
)

// decisions returns the refusals in the audit log.
func (ts *testServer) refusals(t *testing.T) []*mandate.Event {
	t.Helper()
	evs, err := ts.store.Events(context.Background(), mandate.EventFilter{Type: mandate.EventDecision, Limit: mandate.MaxEventsPerQuery})
	if err != nil {
		t.Fatal(err)
	}
	var out []*mandate.Event
	for _, e := range evs {
		if e.Event.Outcome == mandate.OutcomeDeny {
			out = append(out, e.Event)
		}
	}
	return out
}

// Every refusal of a credential is on record, naming the route and the
// credential it needs, never who the request claimed to be: the admin's
// missing at the admin API and at the entry bundles, the admin's where a
// person must decide, an approver's unknown, a client assertion that
// proves no agent at the token and revocation endpoints; and an agent
// asking to revoke another's mandate. Anyone can send the unauthenticated
// ones: a flood of them is cut to a rate.
func TestRefusedCredentialsAreAudited(t *testing.T) {
	ts := newServer(t)
	key := ts.addAgent(t, "a", "mcp:crm:*")
	other := ts.addAgent(t, "b", "mcp:crm:*")
	tok, err := ts.client.Token(context.Background(), httpapi.TokenRequest{AgentID: "spiffe://example.org/agent/a", Key: key, Scope: "mcp:crm:list"})
	if err != nil {
		t.Fatal(err)
	}
	jws, err := jose.Parse(tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	var claims mandate.Claims
	if err := json.Unmarshal(jws.Payload, &claims); err != nil {
		t.Fatal(err)
	}
	do := func(method, path, bearer string) int {
		t.Helper()
		req, _ := http.NewRequest(method, ts.URL+path, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := do("GET", "/v1/agents", ""); code != 401 {
		t.Fatalf("no credential: %d", code)
	}
	if code := do("POST", "/v1/approvals/ap_1/approve", adminToken); code != 403 {
		t.Fatalf("the admin deciding an approval: %d", code)
	}
	if code := do("GET", "/v1/approvals", httpapi.ApproverTokenPrefix+"unknown-credential"); code != 401 {
		t.Fatalf("an unknown approver: %d", code)
	}
	if code := do("GET", "/audit/tile/entries/000", "wrong"); code != 401 {
		t.Fatalf("entry bundles without the admin credential: %d", code)
	}
	bad := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {issuer.ClientAssertionType},
		"client_assertion": {"not.an.assertion"}, "scope": {"mcp:crm:list"}}
	if resp, _ := ts.post(t, "/oauth2/token", form, bad.Encode(), nil); resp.StatusCode != 401 {
		t.Fatalf("a token request that proves no agent: %d", resp.StatusCode)
	}
	if resp, _ := ts.post(t, "/oauth2/revoke", form, url.Values{"token": {tok.AccessToken}}.Encode(), nil); resp.StatusCode != 401 {
		t.Fatalf("an anonymous revocation: %d", resp.StatusCode)
	}
	if resp, _ := ts.post(t, "/oauth2/revoke", form, url.Values{"token": {tok.AccessToken}, "client_assertion_type": {issuer.ClientAssertionType},
		"client_assertion": {httpapi.ClientAssertion(other, "spiffe://example.org/agent/b", ts.URL, time.Now())}}.Encode(), nil); resp.StatusCode != 400 {
		t.Fatalf("a revocation of another agent's mandate: %d", resp.StatusCode)
	}

	type want struct{ action, resource, credential, by, agent string }
	var got []want
	for _, e := range ts.refusals(t) {
		cred, _ := e.Details["credential"].(string)
		got = append(got, want{e.Action, e.Resource, cred, e.By, e.Agent})
		if e.Task != "" || (e.Agent != "" && e.Action != "revoke") {
			t.Errorf("a refusal names what the request did not prove: %+v", e)
		}
	}
	for _, w := range []want{
		{"authenticate", "GET /v1/agents", "admin", "", ""},
		{"authenticate", "POST /v1/approvals/{id}/approve", "approver", "admin", ""},
		{"authenticate", "GET /v1/approvals", "admin-or-approver", "", ""},
		{"authenticate", "GET /audit/tile/{path...}", "admin", "", ""},
		{"mint", "", "", "", ""},
		{"authenticate", "POST /oauth2/revoke", "client_assertion", "", ""},
		{"revoke", claims.ID, "", "", "spiffe://example.org/agent/b"},
	} {
		found := false
		for _, g := range got {
			found = found || g == w
		}
		if !found {
			t.Errorf("no refusal %+v in the audit log: %+v", w, got)
		}
	}

	// A flood: recorded at most at the rate (internal/bucket's test shows
	// the next recorded one saying how many were not).
	before := len(ts.refusals(t))
	start := time.Now()
	const flood = 300
	for range flood {
		do("GET", "/v1/agents", "")
	}
	elapsed := time.Since(start)
	n := len(ts.refusals(t)) - before
	if limit := 100 + int(10*elapsed.Seconds()) + 1; n > limit || n == 0 {
		t.Errorf("%d of %d refusals recorded in %v, want 1 to %d", n, flood, elapsed, limit)
	}
}
