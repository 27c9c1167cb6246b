package httpapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
)

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// addAgentWith registers an agent; mod may change the request first.
func (ts *testServer) addAgentWith(t testing.TB, name, ceiling string, mod func(*httpapi.AgentRequest)) ed25519.PrivateKey {
	t.Helper()
	priv := newKey(t)
	req := httpapi.AgentRequest{Name: name, Owner: "alice@example.org", Ceiling: strings.Fields(ceiling),
		PublicKey: jose.NewPublicJWK(priv.Public().(ed25519.PublicKey))}
	if mod != nil {
		mod(&req)
	}
	if _, err := ts.client.CreateAgent(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	return priv
}

func agentID(name string) string { return "spiffe://example.org/agent/" + name }

// root gets a root mandate of agent name.
func (ts *testServer) root(t testing.TB, name string, key ed25519.PrivateKey, scope string, bound bool) string {
	t.Helper()
	tok, err := ts.client.Token(context.Background(), httpapi.TokenRequest{AgentID: agentID(name), Key: key, Scope: scope, DPoP: bound})
	if err != nil {
		t.Fatal(err)
	}
	return tok.AccessToken
}

// exchange is a token exchange request's form: parent and actor given,
// ephemeral actor if actorID is empty.
func (ts *testServer) exchange(parent string, actorKey ed25519.PrivateKey, actorID string) url.Values {
	return url.Values{
		"grant_type":         {issuer.GrantTypeTokenExchange},
		"subject_token":      {parent},
		"subject_token_type": {issuer.TokenTypeJWT},
		"actor_token":        {httpapi.ActorToken(actorKey, actorID, jtiOf(parent), ts.URL, time.Now())},
		"actor_token_type":   {issuer.TokenTypeJWT},
	}
}

// jtiOf is the jti of a mandate, or "" if it is none.
func jtiOf(token string) string {
	id, _ := httpapi.MandateID(token)
	return id
}

// proof is a DPoP proof for the token endpoint, with a millisecond iat as
// Mandate's clients make them: a server refuses proofs made before it
// started, and this one started moments ago.
func (ts *testServer) proof(key ed25519.PrivateKey) map[string]string {
	return map[string]string{"DPoP": dpop.NewProofMillis(key, "POST", ts.URL+"/oauth2/token", "", time.Now())}
}

func TestTokenExchange(t *testing.T) {
	ts := newServer(t)
	orchKey := ts.addAgentWith(t, "orch", "mcp:crm:*", nil)
	researcherKey := ts.addAgentWith(t, "researcher", "mcp:crm:list_*", nil)

	t.Run("ephemeral actor, bearer parent", func(t *testing.T) {
		parent := ts.root(t, "orch", orchKey, "mcp:crm:list_contacts mcp:crm:get_contact", false)
		f := ts.exchange(parent, newKey(t), "")
		f.Set("scope", "mcp:crm:list_contacts")
		f.Set("ttl_ms", "30000")
		resp, body := ts.post(t, "/oauth2/token", form, f.Encode(), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("HTTP %d %v", resp.StatusCode, body)
		}
		if body["issued_token_type"] != issuer.TokenTypeAccessToken || body["token_type"] != "Bearer" ||
			body["expires_in"] != 30.0 || body["expires_in_ms"] != 30000.0 || body["scope"] != "mcp:crm:list_contacts" {
			t.Errorf("body %v", body)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q", cc)
		}
		child, p := mustClaims(t, body["access_token"].(string)), mustClaims(t, parent)
		if child.Parent != p.ID || child.Task != p.Task || child.Subject != p.Subject ||
			!strings.HasPrefix(child.ClientID, agentID("orch")+"/sub/") ||
			strings.Join(child.Actor.Chain(), " ") != child.ClientID+" "+agentID("orch") {
			t.Errorf("child claims %+v", child)
		}
	})
	t.Run("registered actor, DPoP-bound parent", func(t *testing.T) {
		parent := ts.root(t, "orch", orchKey, "mcp:crm:list_contacts", true)
		resp, body := ts.post(t, "/oauth2/token", form, ts.exchange(parent, researcherKey, agentID("researcher")).Encode(), ts.proof(orchKey))
		if resp.StatusCode != 200 || body["token_type"] != "DPoP" {
			t.Fatalf("HTTP %d %v", resp.StatusCode, body)
		}
		child := mustClaims(t, body["access_token"].(string))
		if child.ClientID != agentID("researcher") || child.Confirm == nil || child.Confirm.JKT != jose.Thumbprint(researcherKey.Public().(ed25519.PublicKey)) {
			t.Errorf("child claims %+v", child)
		}
	})
	t.Run("metadata names the grant", func(t *testing.T) {
		md, err := ts.client.Metadata(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(strings.Join(md.GrantTypesSupported, " "), issuer.GrantTypeTokenExchange) {
			t.Errorf("grant_types_supported %v", md.GrantTypesSupported)
		}
	})
	t.Run("the Go client", func(t *testing.T) {
		parent := ts.root(t, "orch", orchKey, "mcp:crm:list_contacts", true)
		tok, err := ts.client.Delegate(context.Background(), httpapi.DelegateRequest{SubjectToken: parent, ParentKey: orchKey,
			ActorKey: newKey(t), TTL: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if tok.TokenType != "DPoP" || tok.ExpiresInMS != 50 || tok.IssuedTokenType != issuer.TokenTypeAccessToken {
			t.Errorf("token %+v", tok)
		}
	})
}

func TestTokenExchangeErrors(t *testing.T) {
	ts := newServer(t)
	orchKey := ts.addAgentWith(t, "orch", "mcp:crm:* mcp:mail:*", func(r *httpapi.AgentRequest) { r.MaxDepth = 2 })
	researcherKey := ts.addAgentWith(t, "researcher", "mcp:crm:list_*", nil)
	bearer := ts.root(t, "orch", orchKey, "mcp:crm:list_contacts", false)
	bound := ts.root(t, "orch", orchKey, "mcp:crm:list_contacts", true)
	sub := newKey(t)
	ok := func(parent string) url.Values { return ts.exchange(parent, sub, "") }
	with := func(v url.Values, kv ...string) string {
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				v.Del(kv[i])
			} else {
				v.Set(kv[i], kv[i+1])
			}
		}
		return v.Encode()
	}
	replayed := ts.exchange(bearer, sub, "")
	if resp, body := ts.post(t, "/oauth2/token", form, replayed.Encode(), nil); resp.StatusCode != 200 {
		t.Fatalf("first use: HTTP %d %v", resp.StatusCode, body)
	}
	// A chain at the orchestrator's limit of 2: its child cannot delegate.
	_, body := ts.post(t, "/oauth2/token", form, ok(bearer).Encode(), nil)
	deep, _ := body["access_token"].(string)
	if deep == "" {
		t.Fatalf("child: %v", body)
	}

	tests := []struct {
		name   string
		body   string
		hdr    map[string]string
		status int
		oauth  string
	}{
		{"no subject token", with(ok(bearer), "subject_token", ""), nil, 400, "invalid_request"},
		{"unknown subject token type", with(ok(bearer), "subject_token_type", "urn:x"), nil, 400, "invalid_request"},
		{"forged parent", with(ok(bearer), "subject_token", bearer[:len(bearer)-4]+"AAAA"), nil, 400, "invalid_grant"},
		{"garbage parent", with(ok(bearer), "subject_token", "x.y.z"), nil, 400, "invalid_grant"},
		{"no actor token", with(ok(bearer), "actor_token", ""), nil, 400, "invalid_request"},
		{"wrong actor token type", with(ok(bearer), "actor_token_type", issuer.TokenTypeAccessToken), nil, 400, "invalid_request"},
		{"actor proof by another key", ts.exchange(bearer, sub, agentID("researcher")).Encode(), nil, 400, "invalid_grant"},
		{"replayed actor token", replayed.Encode(), nil, 400, "invalid_grant"},
		{"wider scope", with(ok(bearer), "scope", "mcp:crm:*"), nil, 400, "invalid_scope"},
		{"outside the actor's ceiling", with(ts.exchange(bearer, researcherKey, agentID("researcher")), "scope", "mcp:crm:list_contacts mcp:crm:get_x"), nil, 400, "invalid_scope"},
		{"other audience", with(ok(bearer), "resource", "mcp:mail"), nil, 400, "invalid_target"},
		{"longer than the parent", with(ok(bearer), "ttl_ms", "3600000"), nil, 400, "invalid_request"},
		{"ttl not a number", with(ok(bearer), "ttl_ms", "30ms"), nil, 400, "invalid_request"},
		{"wait too long", with(ok(bearer), "wait_ms", "60001"), nil, 400, "invalid_request"},
		{"wait negative", with(ok(bearer), "wait_ms", "-1"), nil, 400, "invalid_request"},
		{"deeper than the limit", ok(deep).Encode(), nil, 400, "invalid_grant"},
		{"bound parent without proof", ok(bound).Encode(), nil, 400, "invalid_dpop_proof"},
		{"bound parent, proof by another key", ok(bound).Encode(), ts.proof(sub), 400, "invalid_dpop_proof"},
		{"bearer parent with a proof", ok(bearer).Encode(), ts.proof(orchKey), 400, "invalid_dpop_proof"},
		{"approval id where none is needed", with(ok(bearer), "approval_id", "ap_X"), nil, 400, "invalid_request"},
		{"unsupported grant", with(ok(bearer), "grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), nil, 400, "unsupported_grant_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := ts.post(t, "/oauth2/token", form, tt.body, tt.hdr)
			if resp.StatusCode != tt.status || body["error"] != tt.oauth {
				t.Fatalf("HTTP %d %v, want %d %s", resp.StatusCode, body, tt.status, tt.oauth)
			}
			if d, _ := body["error_description"].(string); d == "" {
				t.Error("no error_description")
			}
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Error("no Cache-Control: no-store")
			}
		})
	}
	// Two DPoP headers.
	req, _ := http.NewRequest("POST", ts.URL+"/oauth2/token", strings.NewReader(ok(bound).Encode()))
	req.Header.Set("Content-Type", form)
	req.Header.Add("DPoP", ts.proof(orchKey)["DPoP"])
	req.Header.Add("DPoP", ts.proof(orchKey)["DPoP"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Errorf("two DPoP headers: HTTP %d", resp.StatusCode)
	}
}

// approvalFixture is an orchestrator whose deletions need carol's
// approval; dave is an approver of nothing here.
type approvalFixture struct {
	*testServer
	orchKey      ed25519.PrivateKey
	carol, dave  *httpapi.Client
	carolToken   string
	parent       string
	sub          ed25519.PrivateKey
	deleteScopes string
}

func newApprovalFixture(t *testing.T, opts ...func(*issuer.Config)) *approvalFixture {
	ts := newServer(t, opts...)
	f := &approvalFixture{testServer: ts, sub: newKey(t), deleteScopes: "mcp:crm:delete_contact"}
	f.orchKey = ts.addAgentWith(t, "orch", "mcp:crm:*", func(r *httpapi.AgentRequest) {
		r.Approval, r.Approvers = []string{"mcp:crm:delete_*"}, []string{"carol@example.org"}
	})
	ctx := context.Background()
	carol, err := ts.client.CreateApprover(ctx, "carol@example.org")
	if err != nil {
		t.Fatal(err)
	}
	dave, err := ts.client.CreateApprover(ctx, "dave@example.org")
	if err != nil {
		t.Fatal(err)
	}
	f.carolToken = carol.Token
	f.carol = &httpapi.Client{BaseURL: ts.URL, ApproverToken: carol.Token}
	f.dave = &httpapi.Client{BaseURL: ts.URL, ApproverToken: dave.Token}
	f.parent = ts.root(t, "orch", f.orchKey, "mcp:crm:list_contacts mcp:crm:delete_contact", false)
	return f
}

// ask sends the gated delegation, with approval_id if given.
func (f *approvalFixture) ask(t *testing.T, approvalID string, extra ...string) (*http.Response, map[string]any) {
	v := f.exchange(f.parent, f.sub, "")
	v.Set("scope", f.deleteScopes)
	if approvalID != "" {
		v.Set("approval_id", approvalID)
	}
	for i := 0; i < len(extra); i += 2 {
		v.Set(extra[i], extra[i+1])
	}
	return f.post(t, "/oauth2/token", form, v.Encode(), nil)
}

// pending asks and checks the answer is authorization_pending.
func (f *approvalFixture) pending(t *testing.T) string {
	t.Helper()
	resp, body := f.ask(t, "")
	id, _ := body["approval_id"].(string)
	if resp.StatusCode != 400 || body["error"] != "authorization_pending" || !strings.HasPrefix(id, "ap_") ||
		body["interval"] != 1.0 || body["expires_in"] == nil || body["expires_in"].(float64) < 1 {
		t.Fatalf("HTTP %d %v, want authorization_pending", resp.StatusCode, body)
	}
	if !strings.Contains(body["error_description"].(string), "carol@example.org") {
		t.Errorf("the description does not say whom to ask: %v", body["error_description"])
	}
	return id
}

func TestApprovalFlow(t *testing.T) {
	f := newApprovalFixture(t)
	ctx := context.Background()
	id := f.pending(t)

	// Polling before a decision: still pending, same approval.
	if resp, body := f.ask(t, id); resp.StatusCode != 400 || body["error"] != "authorization_pending" || body["approval_id"] != id {
		t.Fatalf("poll: HTTP %d %v", resp.StatusCode, body)
	}
	// Who sees it: the admin and carol, not dave.
	if list, err := f.carol.Approvals(ctx, "pending", ""); err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("carol's approvals: %v %v", list, err)
	}
	if list, err := f.dave.Approvals(ctx, "", ""); err != nil || len(list) != 0 {
		t.Fatalf("dave's approvals: %v %v", list, err)
	}
	if _, err := f.dave.Approval(ctx, id); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Errorf("dave reads carol's approval: %v", err)
	}
	if list, err := f.client.Approvals(ctx, "", mustClaims(t, f.parent).Task); err != nil || len(list) != 1 {
		t.Fatalf("the admin's approvals of the task: %v %v", list, err)
	}
	// Neither the admin nor dave may decide.
	_, err := f.client.Decide(ctx, id, true, "")
	if mandate.ErrorCode(err) != mandate.EFORBIDDEN || !strings.Contains(err.Error(), "a person decides") {
		t.Errorf("the admin approves: %v", err)
	}
	if _, err := f.dave.Decide(ctx, id, true, ""); mandate.ErrorCode(err) != mandate.EFORBIDDEN {
		t.Errorf("dave approves: %v", err)
	}
	if evs, _ := f.store.Events(ctx, mandate.EventFilter{Type: mandate.EventDecision, Task: mustClaims(t, f.parent).Task}); len(evs) == 0 ||
		evs[len(evs)-1].By != "user:dave@example.org" {
		t.Errorf("dave's attempt is not audited: %v", evs)
	}
	// Carol approves; the request, repeated with the approval, succeeds once.
	a, err := f.carol.Decide(ctx, id, true, "ok for the cleanup")
	if err != nil || a.Status != mandate.ApprovalApproved || a.DecidedBy != "user:carol@example.org" {
		t.Fatalf("carol approves: %+v %v", a, err)
	}
	// Bound to its request: another lifetime is another request.
	if resp, body := f.ask(t, id, "ttl_ms", "1000"); resp.StatusCode != 400 || body["error"] != "invalid_grant" {
		t.Fatalf("approval used for another request: HTTP %d %v", resp.StatusCode, body)
	}
	resp, body := f.ask(t, id)
	if resp.StatusCode != 200 || body["scope"] != f.deleteScopes {
		t.Fatalf("after approval: HTTP %d %v", resp.StatusCode, body)
	}
	if c := mustClaims(t, body["access_token"].(string)); c.Scope != f.deleteScopes {
		t.Errorf("child %+v", c)
	}
	if resp, body := f.ask(t, id); resp.StatusCode != 400 || body["error"] != "invalid_grant" || !strings.Contains(body["error_description"].(string), "used") {
		t.Fatalf("second use: HTTP %d %v", resp.StatusCode, body)
	}
	if a, err := f.client.Approval(ctx, id); err != nil || a.Status != mandate.ApprovalUsed {
		t.Errorf("after use: %+v %v", a, err)
	}
}

func TestApprovalDenied(t *testing.T) {
	f := newApprovalFixture(t)
	id := f.pending(t)
	if _, err := f.carol.Decide(context.Background(), id, false, "not today"); err != nil {
		t.Fatal(err)
	}
	resp, body := f.ask(t, id)
	if resp.StatusCode != 400 || body["error"] != "access_denied" || !strings.Contains(body["error_description"].(string), "not today") {
		t.Fatalf("HTTP %d %v, want access_denied", resp.StatusCode, body)
	}
}

func TestApprovalTimeout(t *testing.T) {
	// The issuer's clock is the test's: the approval times out when the
	// test says, however slow the machine (the agents' assertions, signed
	// on the real clock, live a minute).
	var mu sync.Mutex
	skew := time.Duration(0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Add(skew) }
	f := newApprovalFixture(t, func(c *issuer.Config) { c.ApprovalTimeout, c.Now = 10*time.Second, now })
	id := f.pending(t)
	mu.Lock()
	skew = 20 * time.Second
	mu.Unlock()
	resp, body := f.ask(t, id)
	if resp.StatusCode != 400 || body["error"] != "expired_token" {
		t.Fatalf("HTTP %d %v, want expired_token", resp.StatusCode, body)
	}
	if _, err := f.carol.Decide(context.Background(), id, true, ""); mandate.ErrorCode(err) != mandate.ECONFLICT {
		t.Errorf("approving a timed-out approval: %v", err)
	}
}

// TestApprovalWait: a request that waits (wait_ms) is answered when the
// decision is made, not when its wait runs out.
func TestApprovalWait(t *testing.T) {
	f := newApprovalFixture(t)
	ctx := context.Background()
	type answer struct {
		tok *httpapi.TokenResponse
		err error
	}
	done := make(chan answer, 1)
	go func() {
		tok, err := f.client.Delegate(ctx, httpapi.DelegateRequest{SubjectToken: f.parent, ActorKey: f.sub,
			Scope: f.deleteScopes, Wait: issuer.MaxWait})
		done <- answer{tok, err}
	}()
	var id string
	for id == "" {
		list, err := f.carol.Approvals(ctx, "pending", "")
		if err != nil {
			t.Fatal(err)
		}
		if len(list) > 0 {
			id = list[0].ID
			break
		}
		select {
		case a := <-done:
			t.Fatalf("answered before any decision: %+v %v", a.tok, a.err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	if _, err := f.carol.Decide(ctx, id, true, ""); err != nil {
		t.Fatal(err)
	}
	// The bound is far below MaxWait yet generous for a loaded machine:
	// the point is that the answer does not wait for wait_ms to run out.
	select {
	case a := <-done:
		if a.err != nil || a.tok.Scope != f.deleteScopes {
			t.Fatalf("after the decision: %+v %v", a.tok, a.err)
		}
	case <-time.After(issuer.MaxWait / 2):
		t.Fatal("the waiting request was not answered when the decision was made")
	}
	// Pending without waiting comes back to the Go client as a *PendingError.
	f.sub = newKey(t)
	_, err := f.client.Delegate(ctx, httpapi.DelegateRequest{SubjectToken: f.parent, ActorKey: f.sub, Scope: f.deleteScopes})
	var pe *httpapi.PendingError
	if !errors.As(err, &pe) || !strings.HasPrefix(pe.ApprovalID, "ap_") || pe.Interval != time.Second || pe.ExpiresIn <= 0 {
		t.Fatalf("pending: %#v", err)
	}
	var me *mandate.Error
	if !errors.As(err, &me) || me.OAuth != "authorization_pending" {
		t.Errorf("a PendingError unwraps to %v", me)
	}
}

// TestServerStopsWaiting: shutting down ends the waits at once.
func TestServerStopsWaiting(t *testing.T) {
	f := newApprovalFixture(t)
	done := make(chan error, 1)
	go func() {
		_, err := f.client.Delegate(context.Background(), httpapi.DelegateRequest{SubjectToken: f.parent, ActorKey: f.sub,
			Scope: f.deleteScopes, Wait: issuer.MaxWait})
		done <- err
	}()
	for {
		if list, _ := f.client.Approvals(context.Background(), "pending", ""); len(list) > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // into the wait, most likely; either way the answer comes at once
	f.api.StopWaiting()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("issued without approval")
		}
	case <-time.After(issuer.MaxWait / 2):
		t.Fatal("StopWaiting did not end the wait")
	}
}

func TestTaskTree(t *testing.T) {
	ts := newServer(t)
	ctx := context.Background()
	orchKey := ts.addAgentWith(t, "orch", "mcp:crm:*", nil)
	researcherKey := ts.addAgentWith(t, "researcher", "mcp:crm:list_* mcp:crm:get_*", nil)
	tok, err := ts.client.Token(ctx, httpapi.TokenRequest{AgentID: agentID("orch"), Key: orchKey, Scope: "mcp:crm:list_contacts mcp:crm:get_contact", Purpose: "weekly report"})
	if err != nil {
		t.Fatal(err)
	}
	root := tok.AccessToken
	subKey := newKey(t)
	child, err := ts.client.Delegate(ctx, httpapi.DelegateRequest{SubjectToken: root, ActorKey: subKey, Scope: "mcp:crm:list_contacts mcp:crm:get_contact"})
	if err != nil {
		t.Fatal(err)
	}
	grandchild, err := ts.client.Delegate(ctx, httpapi.DelegateRequest{SubjectToken: child.AccessToken, ActorKey: researcherKey,
		ActorID: agentID("researcher"), Scope: "mcp:crm:get_contact", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	other, err := ts.client.Delegate(ctx, httpapi.DelegateRequest{SubjectToken: root, ActorKey: newKey(t), Scope: "mcp:crm:list_contacts"})
	if err != nil {
		t.Fatal(err)
	}
	short, err := ts.client.Delegate(ctx, httpapi.DelegateRequest{SubjectToken: other.AccessToken, ActorKey: newKey(t), TTL: 15 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rc, cc, gc, oc := mustClaims(t, root), mustClaims(t, child.AccessToken), mustClaims(t, grandchild.AccessToken), mustClaims(t, other.AccessToken)
	sc := mustClaims(t, short.AccessToken)
	// Revoke the child: its subtree is revoked with it; the sibling lives.
	if resp, _ := ts.post(t, "/oauth2/revoke", form, url.Values{"token": {child.AccessToken}}.Encode(),
		map[string]string{"Authorization": "Bearer " + adminToken}); resp.StatusCode != 200 {
		t.Fatalf("revoke: HTTP %d", resp.StatusCode)
	}
	time.Sleep(30 * time.Millisecond) // the short-lived one (15 ms) expires

	tree, err := ts.client.Task(ctx, rc.Task)
	if err != nil {
		t.Fatal(err)
	}
	if tree.Task != rc.Task || tree.Subject != "user:alice@example.org" || tree.Purpose != "weekly report" || tree.Agent != agentID("orch") {
		t.Errorf("tree header %+v", tree)
	}
	type want struct {
		id, parent, agent, status string
		ephemeral                 bool
		depth                     int
	}
	wants := []want{
		{rc.ID, "", agentID("orch"), httpapi.NodeActive, false, 1},
		{cc.ID, rc.ID, cc.ClientID, httpapi.NodeRevoked, true, 2},
		{gc.ID, cc.ID, agentID("researcher"), httpapi.NodeRevoked, false, 3},
		{oc.ID, rc.ID, oc.ClientID, httpapi.NodeActive, true, 2},
		{sc.ID, oc.ID, sc.ClientID, httpapi.NodeExpired, true, 3},
	}
	if len(tree.Nodes) != len(wants) {
		t.Fatalf("%d nodes: %+v", len(tree.Nodes), tree.Nodes)
	}
	for i, w := range wants {
		n := tree.Nodes[i]
		if n.Mandate != w.id || n.Parent != w.parent || n.Agent != w.agent || n.Status != w.status || n.Ephemeral != w.ephemeral || n.Depth != w.depth {
			t.Errorf("node %d: %+v, want %+v", i, n, w)
		}
	}
	if n := tree.Nodes[2]; n.Scope != "mcp:crm:get_contact" || n.ExpiresAt.Sub(n.IssuedAt) != time.Minute || len(n.Audience) != 1 || n.Audience[0] != "mcp:crm" {
		t.Errorf("grandchild %+v", n)
	}
	if tree.Nodes[1].RevokedAt == nil || tree.Nodes[2].RevokedAt != nil {
		t.Errorf("revoked_at: child %v, grandchild %v", tree.Nodes[1].RevokedAt, tree.Nodes[2].RevokedAt)
	}
	edges := map[httpapi.TaskEdge]bool{}
	for _, e := range tree.Edges {
		edges[e] = true
	}
	if len(edges) != 4 || !edges[httpapi.TaskEdge{From: rc.ID, To: cc.ID}] || !edges[httpapi.TaskEdge{From: cc.ID, To: gc.ID}] || !edges[httpapi.TaskEdge{From: rc.ID, To: oc.ID}] {
		t.Errorf("edges %v", tree.Edges)
	}

	if _, err := ts.client.Task(ctx, "t_NOPE"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Errorf("unknown task: %v", err)
	}
	tasks, err := ts.client.Tasks(ctx, 5)
	if err != nil || len(tasks) != 1 || tasks[0].Task != rc.Task || tasks[0].Purpose != "weekly report" || tasks[0].Mandate != rc.ID {
		t.Errorf("tasks %+v %v", tasks, err)
	}
	eph, err := ts.client.Ephemeral(ctx)
	if err != nil || len(eph) != 2 { // the short-lived one is gone
		t.Fatalf("ephemeral agents %+v %v", eph, err)
	}
	// The task's events are still served.
	if evs, err := ts.client.Events(ctx, url.Values{"task": {rc.Task}}); err != nil || len(evs) < 5 {
		t.Errorf("task events %d %v", len(evs), err)
	}
}

func TestIntrospectChain(t *testing.T) {
	ts := newServer(t)
	ctx := context.Background()
	orchKey := ts.addAgentWith(t, "orch", "mcp:crm:*", nil)
	admin := map[string]string{"Authorization": "Bearer " + adminToken}
	introspect := func(tok string) map[string]any {
		_, body := ts.post(t, "/oauth2/introspect", form, url.Values{"token": {tok}}.Encode(), admin)
		return body
	}
	delegate := func(parent string) string {
		tok, err := ts.client.Delegate(ctx, httpapi.DelegateRequest{SubjectToken: parent, ActorKey: newKey(t)})
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}

	t.Run("ancestor revoked", func(t *testing.T) {
		root := ts.root(t, "orch", orchKey, "mcp:crm:list", false)
		child := delegate(root)
		grandchild := delegate(child)
		if b := introspect(grandchild); b["active"] != true || b["par"] != mustClaims(t, child).ID {
			t.Fatalf("live grandchild: %v", b)
		}
		if resp, _ := ts.post(t, "/oauth2/revoke", form, url.Values{"token": {root}}.Encode(), admin); resp.StatusCode != 200 {
			t.Fatal("revoke failed")
		}
		for _, tok := range []string{root, child, grandchild} {
			if b := introspect(tok); b["active"] != false {
				t.Errorf("after the root's revocation, %s introspects as %v", mustClaims(t, tok).ID, b)
			}
		}
	})
	t.Run("agent of the chain disabled", func(t *testing.T) {
		root := ts.root(t, "orch", orchKey, "mcp:crm:list", false)
		child := delegate(root)
		if b := introspect(child); b["active"] != true {
			t.Fatalf("live child: %v", b)
		}
		if _, err := ts.client.SetAgentStatus(ctx, "orch", mandate.AgentDisabled); err != nil {
			t.Fatal(err)
		}
		if b := introspect(child); b["active"] != false {
			t.Errorf("an ephemeral child of a disabled agent introspects as %v", b)
		}
	})
}

// An approver's credential can be revoked: from the moment the admin
// disables them (audited), it is refused on every route, and their
// decisions with it; disabling is the admin's, once.
func TestApproverDisabled(t *testing.T) {
	f := newApprovalFixture(t)
	ctx := context.Background()
	id := f.pending(t)
	if _, err := f.carol.DisableApprover(ctx, "carol@example.org"); mandate.ErrorCode(err) != mandate.EUNAUTHORIZED {
		t.Errorf("an approver disables: %v", err)
	}
	a, err := f.client.DisableApprover(ctx, "carol@example.org")
	if err != nil || a.Email != "carol@example.org" || a.DisabledAt.IsZero() {
		t.Fatalf("disable: %+v %v", a, err)
	}
	if evs, _ := f.store.Events(ctx, mandate.EventFilter{Type: mandate.EventApproverDisabled}); len(evs) != 1 ||
		evs[0].By != "admin" || evs[0].Details["email"] != "carol@example.org" {
		t.Errorf("approver.disabled events %+v", evs)
	}
	if _, err := f.carol.Approvals(ctx, "", ""); mandate.ErrorCode(err) != mandate.EUNAUTHORIZED || !strings.Contains(err.Error(), "disabled") {
		t.Errorf("a disabled approver lists: %v", err)
	}
	if _, err := f.carol.Approval(ctx, id); mandate.ErrorCode(err) != mandate.EUNAUTHORIZED {
		t.Errorf("a disabled approver reads: %v", err)
	}
	if _, err := f.carol.Decide(ctx, id, true, ""); mandate.ErrorCode(err) != mandate.EUNAUTHORIZED {
		t.Errorf("a disabled approver decides: %v", err)
	}
	if ap, _ := f.client.Approval(ctx, id); ap.Status != mandate.ApprovalPending {
		t.Errorf("the approval is %s", ap.Status)
	}
	if _, err := f.client.DisableApprover(ctx, "carol@example.org"); mandate.ErrorCode(err) != mandate.ECONFLICT {
		t.Errorf("disabled twice: %v", err)
	}
	if _, err := f.client.DisableApprover(ctx, "nobody@example.org"); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Errorf("disabling nobody: %v", err)
	}
	list, err := f.client.Approvers(ctx)
	if err != nil || len(list) != 2 || list[0].Email != "carol@example.org" || list[0].DisabledAt.IsZero() || !list[1].DisabledAt.IsZero() {
		t.Errorf("approvers %+v %v", list, err)
	}
	// Dave is not disabled.
	if _, err := f.dave.Approvals(ctx, "", ""); err != nil {
		t.Errorf("dave: %v", err)
	}
}

// A flood of others' requests cannot push an approver's own out of their
// listing: it is filtered to what they may decide before it is cut.
func TestApprovalListingNotBuried(t *testing.T) {
	f := newApprovalFixture(t)
	ctx := context.Background()
	id := f.pending(t)
	now := time.Now()
	const flood = 1005
	errs := make(chan error, flood)
	for i := range flood {
		go func() {
			at := now.Add(time.Duration(i+1) * time.Millisecond)
			errs <- f.store.CreateApproval(ctx, &mandate.Approval{ID: mandate.NewID(mandate.ApprovalIDPrefix, at), Action: mandate.ApprovalMint,
				Task: mandate.NewID(mandate.TaskIDPrefix, at), Agent: agentID("flood"), Actor: agentID("flood"), Subject: "user:dave@example.org",
				Approvers: []string{"dave@example.org"}, RequestHash: "h", CreatedAt: at, ExpiresAt: at.Add(time.Hour)},
				mandate.ApprovalLimits{PerAgent: mandate.MaxPendingLimit}, nil)
		}()
	}
	for range flood {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	list, err := f.carol.Approvals(ctx, "pending", "")
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("carol's approvals under a flood: %d %v", len(list), err)
	}
}
