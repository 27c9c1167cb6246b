package gateway_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/gateway"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// A JSON-RPC error the gateway answers with quotes what the caller sent
// (a tool's name, a method, a resource's URI) with its secrets masked:
// an error is read and logged by more than its caller.
func TestErrorAnswersMaskSecrets(t *testing.T) {
	e := newEnvWith(t, &mcp.StreamableHTTPOptions{Stateless: true, JSONResponse: true})
	key := e.agent("caller", "mcp:crm:*")
	tok := e.mint("caller", key, "mcp:crm:*", time.Minute, false)
	const secret = "AKIAIOSFODNN7EXAMPLE"
	for name, msg := range map[string]string{
		"tool name":    `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"` + secret + `","arguments":{}}}`,
		"method":       `{"jsonrpc":"2.0","id":1,"method":"x/` + secret + `"}`,
		"resource uri": `{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///` + secret + `"}}`,
		"prompt":       `{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"` + secret + `"}}`,
	} {
		_, body := e.post(tok.AccessToken, "", msg)
		if !strings.Contains(body, `"error"`) || strings.Contains(body, "AKIAIOSF") {
			t.Errorf("%s: %s", name, body)
		}
	}
}

// An HTTP route's refusals quote the path the client sent with its
// secrets masked, in the body and in WWW-Authenticate.
func TestHTTPRefusalsMaskSecrets(t *testing.T) {
	api := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	t.Cleanup(api.Close)
	e := newEnv(t)
	e.regateway(func(c *gateway.Config) {
		c.Routes, c.HTTPRoutes = nil, []gateway.HTTPRoute{{Name: "crm", URL: api.URL}}
	})
	key := e.agent("api", "http:crm:*:/**")
	tok := e.mint("api", key, "http:crm:GET:/contacts/**", time.Minute, false).AccessToken
	for _, target := range []string{
		"/http/crm/keys/AKIAIOSFODNN7EXAMPLE",                 // outside the scope
		"/http/crm/contacts/AKIAIOSFODNN7EXAMPLE/..%2F..%2Fx", // a refused path
	} {
		req, _ := http.NewRequest("GET", e.gw.URL+target, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 400 || strings.Contains(string(b)+fmt.Sprint(resp.Header), "AKIAIOSF") {
			t.Errorf("GET %s: %d %v %s", target, resp.StatusCode, resp.Header, b)
		}
	}
}
