package gateway_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/gateway"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// filesServer is an MCP server (the official Go SDK) with public and
// admin resources, templates over both, prompts, completions and
// subscriptions; it records the URIs it is asked to read.
type filesServer struct {
	mu    sync.Mutex
	reads []string
}

func (f *filesServer) start(t *testing.T) string {
	text := func(uri, s string) *mcp.ReadResourceResult {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{URI: uri, MIMEType: "text/plain", Text: s}}}
	}
	srv := mcp.NewServer(&mcp.Implementation{Name: "files", Version: "1"}, &mcp.ServerOptions{
		CompletionHandler: func(_ context.Context, r *mcp.CompleteRequest) (*mcp.CompleteResult, error) {
			return &mcp.CompleteResult{Completion: mcp.CompletionResultDetails{Values: []string{"readme.md", "secret.txt"}}}, nil
		},
		SubscribeHandler:   func(context.Context, *mcp.SubscribeRequest) error { return nil },
		UnsubscribeHandler: func(context.Context, *mcp.UnsubscribeRequest) error { return nil },
	})
	read := func(_ context.Context, r *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		f.mu.Lock()
		f.reads = append(f.reads, r.Params.URI)
		f.mu.Unlock()
		switch r.Params.URI {
		case "file:///public/readme.md":
			return text(r.Params.URI, "public readme"), nil
		case "file:///admin/secret.txt":
			return text(r.Params.URI, "TOP SECRET"), nil
		case "file:///public/dir":
			// A read whose contents reach beyond what was asked.
			return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{
				{URI: "file:///public/dir/a.txt", Text: "a"}, {URI: "file:///admin/secret.txt", Text: "TOP SECRET"}}}, nil
		}
		return nil, mcp.ResourceNotFoundError(r.Params.URI)
	}
	for _, uri := range []string{"file:///public/readme.md", "file:///public/dir", "file:///admin/secret.txt"} {
		srv.AddResource(&mcp.Resource{URI: uri, Name: uri[strings.LastIndex(uri, "/")+1:]}, read)
	}
	for _, tpl := range []string{"file:///public/{name}", "file:///admin/{name}", "file:///{+path}", "db://tables/{table}"} {
		srv.AddResourceTemplate(&mcp.ResourceTemplate{URITemplate: tpl, Name: tpl}, read)
	}
	for _, name := range []string{"review", "leak_secrets"} {
		srv.AddPrompt(&mcp.Prompt{Name: name, Arguments: []*mcp.PromptArgument{{Name: "file"}}},
			func(context.Context, *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
				return &mcp.GetPromptResult{Messages: []*mcp.PromptMessage{{Role: "user", Content: &mcp.TextContent{Text: "prompt " + name}}}}, nil
			})
	}
	up := httptest.NewServer(mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return srv }, nil))
	t.Cleanup(up.Close)
	return up.URL
}

// connectTo opens a session to server through the gateway.
func (e *env) connectTo(server, token string) *mcp.ClientSession {
	e.t.Helper()
	cl := mcp.NewClient(&mcp.Implementation{Name: "test-agent", Version: "1"}, nil)
	tr := &mcp.StreamableClientTransport{Endpoint: e.gw.URL + "/mcp/" + server, DisableStandaloneSSE: true, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: mandateTransport{token: token}}}
	cs, err := cl.Connect(context.Background(), tr, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { cs.Close() })
	return cs
}

// resources/read, resources/subscribe, prompts/get and completion/complete
// need a covering scope, as tools/call does; the lists and reads show only
// what the scopes reach; a URI reaches the server in the spelling its
// scope was checked on. The official Go SDK is client and server.
func TestResourcesAndPromptsNeedScopes(t *testing.T) {
	fs := &filesServer{}
	url := fs.start(t)
	e := newEnv(t)
	e.regateway(func(c *gateway.Config) { c.Routes = []gateway.Route{{Name: "files", URL: url}} })
	key := e.agent("reader", "mcp:files:* mcp:files:resource:** mcp:files:prompt:*")
	tok := e.mint("reader", key, "mcp:files:resource:file:///public/** mcp:files:prompt:review", time.Minute, false).AccessToken
	cs := e.connectTo("files", tok)
	ctx := context.Background()

	res, err := cs.ListResources(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, r := range res.Resources {
		uris = append(uris, r.URI)
	}
	slices.Sort(uris)
	if want := []string{"file:///public/dir", "file:///public/readme.md"}; !slices.Equal(uris, want) {
		t.Errorf("resources/list: %v, want %v", uris, want)
	}
	tpls, err := cs.ListResourceTemplates(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range tpls.ResourceTemplates {
		names = append(names, r.URITemplate)
	}
	slices.Sort(names)
	if want := []string{"file:///public/{name}", "file:///{+path}"}; !slices.Equal(names, want) {
		t.Errorf("resources/templates/list: %v, want %v", names, want)
	}
	prompts, err := cs.ListPrompts(ctx, nil)
	if err != nil || len(prompts.Prompts) != 1 || prompts.Prompts[0].Name != "review" {
		t.Errorf("prompts/list: %+v %v", prompts, err)
	}

	read := func(uri string) (string, error) {
		r, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: uri})
		if err != nil {
			return "", err
		}
		var out []string
		for _, c := range r.Contents {
			out = append(out, c.URI+"="+c.Text)
		}
		return strings.Join(out, " "), nil
	}
	if got, err := read("file:///public/readme.md"); err != nil || got != "file:///public/readme.md=public readme" {
		t.Errorf("a public read: %q %v", got, err)
	}
	// The canonical spelling is what the server reads.
	if got, err := read("file:///public/%72eadme.md"); err != nil || got != "file:///public/readme.md=public readme" {
		t.Errorf("a public read, an unreserved character escaped: %q %v", got, err)
	}
	if got, err := read("file:///public/dir"); err != nil || got != "file:///public/dir/a.txt=a" {
		t.Errorf("a read whose contents reach beyond the scope: %q", got)
	}
	for _, uri := range []string{"file:///admin/secret.txt", "file:///public/../admin/secret.txt", "file:///public/..%2Fadmin%2Fsecret.txt",
		"file:///public/%2e%2e/admin/secret.txt", "file:///public/%252e%252e/admin/secret.txt", "file:///public/..\\admin\\secret.txt",
		"FILE:///admin/secret.txt", ""} {
		if got, err := read(uri); err == nil || strings.Contains(got, "SECRET") {
			t.Errorf("read %q: %q %v", uri, got, err)
		}
	}
	if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "file:///public/readme.md"}); err != nil {
		t.Errorf("subscribe to a public resource: %v", err)
	}
	if err := cs.Subscribe(ctx, &mcp.SubscribeParams{URI: "file:///admin/secret.txt"}); err == nil {
		t.Error("subscribed to the secret")
	}
	if err := cs.Unsubscribe(ctx, &mcp.UnsubscribeParams{URI: "file:///admin/secret.txt"}); err != nil {
		t.Errorf("unsubscribe (it only takes away): %v", err)
	}

	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "review"}); err != nil {
		t.Errorf("the prompt in scope: %v", err)
	}
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "leak_secrets"}); err == nil || !strings.Contains(err.Error(), "does not allow mcp:files:prompt:leak_secrets") {
		t.Errorf("a prompt out of scope: %v", err)
	}
	complete := func(ref *mcp.CompleteReference) error {
		_, err := cs.Complete(ctx, &mcp.CompleteParams{Ref: ref, Argument: mcp.CompleteParamsArgument{Name: "name", Value: "r"}})
		return err
	}
	if err := complete(&mcp.CompleteReference{Type: "ref/prompt", Name: "review"}); err != nil {
		t.Errorf("completing the prompt in scope: %v", err)
	}
	if err := complete(&mcp.CompleteReference{Type: "ref/prompt", Name: "leak_secrets"}); err == nil {
		t.Error("completed a prompt out of scope")
	}
	if err := complete(&mcp.CompleteReference{Type: "ref/resource", URI: "file:///public/{name}"}); err != nil {
		t.Errorf("completing a template the scope covers: %v", err)
	}
	// Every URI file:///{+path} expands to is not covered: its names are
	// not the agent's to learn.
	if err := complete(&mcp.CompleteReference{Type: "ref/resource", URI: "file:///{+path}"}); err == nil || !strings.Contains(err.Error(), "mcp:files:resource:file:///**") {
		t.Errorf("completing a template the scope does not cover: %v", err)
	}

	fs.mu.Lock()
	if slices.Contains(fs.reads, "file:///admin/secret.txt") || slices.ContainsFunc(fs.reads, func(u string) bool { return strings.Contains(u, "..") }) {
		t.Errorf("the server was asked for %v", fs.reads)
	}
	fs.mu.Unlock()
	var denied []string
	for _, ev := range e.events(mandate.EventDecision) {
		denied = append(denied, ev.Event.Resource)
	}
	for _, want := range []string{"mcp:files:resource:file:///admin/secret.txt", "mcp:files:prompt:leak_secrets", "mcp:files:resource:file:///**"} {
		if !slices.Contains(denied, want) {
			t.Errorf("no decision event for %s in %v", want, denied)
		}
	}
}

// A tool scope is not a resource or prompt scope: mcp:files:* reaches
// every tool, and no resource or prompt.
func TestToolScopesDoNotReachResources(t *testing.T) {
	fs := &filesServer{}
	url := fs.start(t)
	e := newEnv(t)
	e.regateway(func(c *gateway.Config) { c.Routes = []gateway.Route{{Name: "files", URL: url}} })
	key := e.agent("tools", "mcp:files:*")
	cs := e.connectTo("files", e.mint("tools", key, "mcp:files:*", time.Minute, false).AccessToken)
	ctx := context.Background()
	if res, err := cs.ListResources(ctx, nil); err != nil || len(res.Resources) != 0 {
		t.Errorf("resources/list: %+v %v", res, err)
	}
	if res, err := cs.ListPrompts(ctx, nil); err != nil || len(res.Prompts) != 0 {
		t.Errorf("prompts/list: %+v %v", res, err)
	}
	if _, err := cs.ReadResource(ctx, &mcp.ReadResourceParams{URI: "file:///public/readme.md"}); err == nil {
		t.Error("a tool scope read a resource")
	}
	if _, err := cs.GetPrompt(ctx, &mcp.GetPromptParams{Name: "review"}); err == nil {
		t.Error("a tool scope got a prompt")
	}
}
