package httpapi_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
)

// The attack story of token confusion, over HTTP: the orchestrator asks a
// registered sub-agent, the researcher, for an actor token to delegate
// part of its task to it. Posted as the researcher's client assertion, at
// client_credentials, the token would buy a root mandate in the
// researcher's name (its whole ceiling, a task of its own, outside every
// narrowing rule of the orchestrator's chain); at the revocation endpoint
// it would revoke the researcher's mandates. Both are refused as
// invalid_client, and the token is still good for the one exchange it was
// made for.
func TestActorTokenIsNoClientAssertion(t *testing.T) {
	ts := newServer(t)
	orchKey := ts.addAgent(t, "orch", "mcp:crm:list_*")
	researcherKey := ts.addAgent(t, "researcher", "mcp:crm:*")
	parent := ts.root(t, "orch", orchKey, "mcp:crm:list_contacts", false)
	// What the researcher hands the orchestrator.
	actorToken := httpapi.ActorToken(researcherKey, agentID("researcher"), jtiOf(parent), ts.URL, time.Now())

	for _, path := range []string{"/oauth2/token", "/oauth2/revoke"} {
		body := url.Values{
			"client_id":             {agentID("researcher")},
			"client_assertion_type": {issuer.ClientAssertionType},
			"client_assertion":      {actorToken},
		}
		if path == "/oauth2/token" {
			body.Set("grant_type", "client_credentials")
			body.Set("scope", "mcp:crm:delete_contacts")
		} else {
			body.Set("token", parent)
		}
		resp, m := ts.post(t, path, form, body.Encode(), nil)
		if resp.StatusCode != 401 || m["error"] != "invalid_client" || !strings.Contains(m["error_description"].(string), "actor token") {
			t.Errorf("%s with the actor token as client assertion: HTTP %d %v", path, resp.StatusCode, m)
		}
	}

	// In an exchange for another mandate of the orchestrator: refused.
	other := ts.root(t, "orch", orchKey, "mcp:crm:list_contacts", false)
	exchange := func(parent string) (int, map[string]any) {
		f := ts.exchange(parent, researcherKey, agentID("researcher"))
		f.Set("actor_token", actorToken)
		resp, m := ts.post(t, "/oauth2/token", form, f.Encode(), nil)
		return resp.StatusCode, m
	}
	if code, m := exchange(other); code != 400 || m["error"] != "invalid_grant" || !strings.Contains(m["error_description"].(string), "par") {
		t.Errorf("the actor token in an exchange for another parent: HTTP %d %v", code, m)
	}
	// Its own exchange: a child of the parent, within it.
	code, m := exchange(parent)
	if code != 200 {
		t.Fatalf("the actor token in its own exchange: HTTP %d %v", code, m)
	}
	c := mustClaims(t, m["access_token"].(string))
	if c.ClientID != agentID("researcher") || c.Parent != jtiOf(parent) || c.Scope != "mcp:crm:list_contacts" {
		t.Errorf("child %+v", c)
	}
}
