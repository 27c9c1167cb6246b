package gateway

import (
	"encoding/json"
	"strings"

	"github.com/mandatehq/mandate"
)

// Resources and prompts need scopes as tools do (docs/gateway.md,
// "Resources and prompts"): mcp:<server>:resource:<uri> to read a
// resource or follow its changes, mcp:<server>:prompt:<name> to get a
// prompt, either to complete an argument of it; and the lists show only
// what the mandate's scopes reach.

// Views: answers the gateway filters by the mandate's scopes before they
// reach the client (verdict.view).
const (
	viewResources = "resources" // resources/list: the resources a scope covers
	viewTemplates = "templates" // resources/templates/list: those a scope may reach
	viewPrompts   = "prompts"   // prompts/list: the prompts a scope covers
	viewRead      = "read"      // resources/read: the contents a scope covers
)

// resourceURI is the canonical spelling of a resource URI a client sent,
// which the scope is checked against and the server is sent, or why it
// is refused.
func resourceURI(uri string) (string, *rpcError) {
	if uri == "" {
		return "", &rpcError{Code: CodeInvalidRequest, Message: "params.uri is required"}
	}
	canon, why := canonical(uri, pathRules{uri: true})
	if why != "" {
		return "", &rpcError{Code: CodeDenied, Message: "resource URI " + uri + " refused: it holds " + why}
	}
	return canon, nil
}

// templateScope is the resource scope every URI that template t expands
// to is matched by: the URI up to the "/" before its first variable,
// followed by "/**" ("**" if there is no such "/"), or t itself when it
// has no variable (RFC 6570: whatever a variable expands to comes after
// the literal text before it). ok is false if that text is refused.
func templateScope(server, t string) (mandate.Scope, bool) {
	i := strings.IndexByte(t, '{')
	if i < 0 {
		canon, why := canonical(t, pathRules{uri: true})
		sc, err := mandate.ParseScope("mcp:" + server + ":resource:" + canon)
		return sc, why == "" && t != "" && err == nil
	}
	bound := "**"
	if j := strings.LastIndexByte(t[:i], '/'); j >= 0 {
		canon, why := canonical(t[:j], pathRules{uri: true})
		if why != "" {
			return mandate.Scope{}, false
		}
		bound = canon + "/**"
	}
	sc, err := mandate.ParseScope("mcp:" + server + ":resource:" + bound)
	return sc, err == nil
}

// setParams sets the named params of m to the values the gateway decided
// on, spelt exactly as MCP spells them: any key that differs from one
// only in case goes (the gateway's decoder matched it; the server's would
// not), so that the server reads what was decided.
func setParams(m *message, values map[string]any) {
	params := map[string]json.RawMessage{}
	json.Unmarshal(m.Params, &params)
	for k := range params {
		for name := range values {
			if strings.EqualFold(k, name) {
				delete(params, k)
			}
		}
	}
	for name, v := range values {
		params[name] = marshal(v)
	}
	m.Params = marshal(params)
}

// filterView rewrites the answer m to a list or read whose entries c's
// scopes do not reach: they are left out, and the answer is rebuilt from
// the keys MCP defines for it, spelt exactly, so that no client reads a
// list the gateway did not filter. It returns nil for an error answer,
// which is relayed as it is.
func (g *Gateway) filterView(m *message, c *mandate.Claims, rt *route, view string) []byte {
	if len(m.Error) > 0 {
		return nil
	}
	key := map[string]string{viewResources: "resources", viewTemplates: "resourceTemplates", viewPrompts: "prompts", viewRead: "contents"}[view]
	var res map[string]json.RawMessage
	json.Unmarshal(m.Result, &res)
	var entries []json.RawMessage
	json.Unmarshal(res[key], &entries)
	out := map[string]json.RawMessage{}
	keep := []string{"nextCursor", "_meta"}
	if view == viewRead {
		keep = keep[1:]
	}
	for _, k := range keep {
		if v, ok := res[k]; ok {
			out[k] = v
		}
	}
	scopes, _ := c.Scopes()
	kept := []json.RawMessage{}
	for _, raw := range entries {
		var e struct {
			URI         string `json:"uri"`
			URITemplate string `json:"uriTemplate"`
			Name        string `json:"name"`
		}
		if json.Unmarshal(raw, &e) != nil {
			continue
		}
		ok := false
		switch view {
		case viewResources, viewRead:
			uri, why := canonical(e.URI, pathRules{uri: true})
			ok = e.URI != "" && why == "" && scopes.Allows("mcp:"+rt.Name+":resource:"+uri)
		case viewTemplates:
			// Listed if some resource it names may be read: a template
			// is a view of what the agent might ask for.
			sc, valid := templateScope(rt.Name, e.URITemplate)
			ok = valid && len(scopes.Overlapping(mandate.ScopeSet{sc})) > 0
		case viewPrompts:
			ok = scopes.Allows("mcp:" + rt.Name + ":prompt:" + e.Name)
		}
		if ok {
			kept = append(kept, raw)
		}
	}
	out[key] = marshal(kept)
	m.Result = marshal(out)
	return marshal(m)
}
