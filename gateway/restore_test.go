package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/gateway"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// restored is a new gateway (of mod, on e's store) that rebuilt its task
// state from the whole log, as mandate serve does at start.
func (e *env) restored(mod func(*gateway.Config)) *gateway.Gateway {
	e.t.Helper()
	e.g.Drain()
	evs, err := e.store.Events(context.Background(), mandate.EventFilter{Limit: mandate.MaxEventsPerQuery})
	if err != nil {
		e.t.Fatal(err)
	}
	g := e.regateway(mod)
	for _, ev := range evs {
		g.Restore(ev)
	}
	g.RestoreDone(nil)
	return g
}

// What the gateway rebuilds of a task at start is what it held before
// (issue 15, item 11): the labels and counters of each kind of request it
// handled, on an MCP route and an HTTP route, allowed or refused, so that
// a restart neither forgets what the task read nor counts what it did
// not do.
func TestTaskStateRebuiltAsHeld(t *testing.T) {
	e := newEnvWith(t, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"ok":true}`) }))
	defer api.Close()
	routes := func(c *gateway.Config) {
		c.Routes[0].ToolLabels = map[string][]string{"list_customers": {"data:customer-data"}}
		c.HTTPRoutes = []gateway.HTTPRoute{{Name: "files", URL: api.URL, Labels: []string{"data:confidential", "destructive"}}}
	}
	e.regateway(routes)
	key := e.agent("worker", "mcp:crm:* http:files:*:/**")
	tok := e.mint("worker", key, "mcp:crm:list_customers http:files:GET:/**", time.Minute, false)
	get := func(path string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", e.gw.URL+"/http/files"+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	call := func(tool string) string {
		t.Helper()
		_, body := e.post(tok.AccessToken, "", `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"`+tool+`","arguments":{"name":"x"}}}`)
		return body
	}
	if body := call("list_customers"); !strings.Contains(body, "ada") {
		t.Fatalf("the MCP call: %s", body)
	}
	if body := call("delete_customer"); !strings.Contains(body, "does not allow") {
		t.Fatalf("the call out of scope: %s", body)
	}
	if code := get("/reports/q3.txt"); code != http.StatusOK {
		t.Fatalf("the HTTP read: %d", code)
	}
	if code := get("/a/../b"); code != http.StatusBadRequest {
		t.Fatalf("a path refused before any decision: %d", code)
	}
	if resp, _ := e.post(tok.AccessToken, "", `{"jsonrpc":"2.0","id":1,"method":`); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a malformed message: %d", resp.StatusCode)
	}
	labels, history := gateway.TaskState(e.g, tok.Claims.Task)
	held := fmt.Sprint(labels, history)
	if !strings.Contains(held, "confidential") || !strings.Contains(held, "customer-data") {
		t.Fatalf("the state held: %s", held)
	}
	g := e.restored(routes)
	labels, history = gateway.TaskState(g, tok.Claims.Task)
	if got := fmt.Sprint(labels, history); got != held {
		t.Errorf("the state rebuilt at start: %s\nwant what was held:    %s", got, held)
	}
}
