package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/client"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/jose"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// The attack story of separation of duties, end to end on `mandate
// serve` with its shipped policy, a real store and the official MCP
// client. Alice's orchestrator delegates her task to bob's agent; bob's
// agent calls a destructive tool, which the default policy holds for a
// person. Bob, the owner of the calling agent, neither sees the request
// nor may approve it (and his attempt is audited); alice sees what she is
// asked (the server, the tool, the arguments with the secret in them
// masked, the chain, the task's purpose) and approves; the call goes
// through. The secret is stored nowhere.
func TestNobodyApprovesTheirOwnAgentsCall(t *testing.T) {
	ctx := context.Background()
	srv := listServer()
	deleted := make(chan string, 1)
	mcp.AddTool(srv, &mcp.Tool{Name: "delete_customer"}, func(_ context.Context, _ *mcp.CallToolRequest, in struct {
		Name string `json:"name"`
		Note string `json:"note"`
	}) (*mcp.CallToolResult, any, error) {
		deleted <- in.Name
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: "deleted " + in.Name}}}, nil, nil
	})
	m, orchestrator := serveWithMCPLabels(t, srv, false, map[string][]string{"delete_customer": {"destructive"}})
	admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
	_, helperKey, _ := ed25519.GenerateKey(rand.Reader)
	const helperID = "spiffe://example.org/agent/helper"
	if _, err := admin.CreateAgent(ctx, httpapi.AgentRequest{Name: "helper", Owner: "bob@example.org", Ceiling: []string{"mcp:crm:*"},
		PublicKey: jose.NewPublicJWK(helperKey.Public().(ed25519.PublicKey))}); err != nil {
		t.Fatal(err)
	}
	approver := func(email string) (*httpapi.Client, string) {
		a, err := admin.CreateApprover(ctx, email)
		if err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(file, []byte(a.Token), 0o600); err != nil {
			t.Fatal(err)
		}
		return &httpapi.Client{BaseURL: m.URL, ApproverToken: a.Token}, file
	}
	alice, aliceFile := approver("alice@example.org")
	bob, _ := approver("bob@example.org")

	root, err := orchestrator.Root(ctx, client.Request{Scope: "mcp:crm:*", TTL: time.Minute, Purpose: "clean up the test customers"})
	if err != nil {
		t.Fatal(err)
	}
	helper, err := orchestrator.Delegate(ctx, root, client.Actor{ID: helperID, Key: helperKey}, client.Request{}, client.DelegateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := connectMCP(m, helper)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	const secret = "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"
	called := make(chan error, 1)
	go func() {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "delete_customer",
			Arguments: map[string]any{"name": "ada", "note": "token " + secret + " for the audit"}})
		called <- err
	}()

	// The call waits for a person: alice sees it, bob does not.
	var ap *mandate.Approval
	// The request is on record before it is listed: wait for its event.
	awaitEvent(t, m, url.Values{"type": {mandate.EventApprovalRequested}}, func(mandate.LoggedEvent) bool { return true })
	if list, err := alice.Approvals(ctx, "pending", ""); err != nil || len(list) == 0 {
		t.Fatalf("no approval was asked of alice: %v", err)
	} else {
		ap = list[0]
	}
	if got := strings.Join(ap.Approvers, ","); got != "alice@example.org" {
		t.Errorf("approvers %s, want alice's side only", got)
	}
	if list, err := bob.Approvals(ctx, "", ""); err != nil || len(list) != 0 {
		t.Errorf("bob sees %d approvals (%v)", len(list), err)
	}
	if _, err := bob.Approval(ctx, ap.ID); mandate.ErrorCode(err) != mandate.ENOTFOUND {
		t.Errorf("bob reads the approval of his agent's call: %v", err)
	}
	// Bob may not approve his own agent's call; the attempt is audited.
	if _, err := bob.Decide(ctx, ap.ID, true, "my agent is fine"); mandate.ErrorCode(err) != mandate.EFORBIDDEN {
		t.Fatalf("bob approved his own agent's call: %v", err)
	}
	refusals, err := admin.Events(ctx, map[string][]string{"type": {mandate.EventDecision}, "task": {root.Claims.Task}})
	if err != nil || len(refusals) == 0 || refusals[len(refusals)-1].By != "user:bob@example.org" || refusals[len(refusals)-1].Outcome != mandate.OutcomeDeny {
		t.Errorf("bob's attempt is not audited: %v %+v", err, refusals)
	}

	// What alice is asked: in the API, the CLI and the audit event.
	if ap.Action != mandate.ApprovalToolCall || ap.Server != "crm" || ap.Tool != "delete_customer" || ap.Purpose != "clean up the test customers" ||
		strings.Join(ap.Chain, " ") != helperID+" spiffe://example.org/agent/a" || strings.Join(ap.Secrets, " ") != "github_token" ||
		!strings.Contains(string(ap.Arguments), `"token [secret:github_token] for the audit"`) || !strings.Contains(string(ap.Arguments), `"name":"ada"`) ||
		!strings.Contains(ap.Reason, "destructive") {
		t.Errorf("what alice sees: %+v\narguments %s", ap, ap.Arguments)
	}
	show := runCLI(t, m, "approvals", "show", ap.ID, "--approver-token-file", aliceFile)
	for _, want := range []string{"asks:", "tools/call", "server:", "crm", "tool:", "delete_customer", "purpose:", "clean up the test customers",
		"chain:", helperID, "secrets masked: github_token", `"note": "token [secret:github_token] for the audit"`} {
		if !strings.Contains(show, want) {
			t.Errorf("approvals show lacks %q:\n%s", want, show)
		}
	}
	requested, err := admin.Events(ctx, map[string][]string{"type": {mandate.EventApprovalRequested}, "task": {root.Claims.Task}})
	if err != nil || len(requested) != 1 || requested[0].Details["arguments"] != string(ap.Arguments) || requested[0].Details["tool"] != "delete_customer" {
		t.Errorf("approval.requested: %v %+v", err, requested)
	}

	// Alice approves: the held call goes through, once.
	if _, err := alice.Decide(ctx, ap.ID, true, "they were test data"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-called:
		if err != nil {
			t.Fatalf("the approved call: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("the approved call did not return")
	}
	if name := <-deleted; name != "ada" {
		t.Errorf("deleted %q", name)
	}

	// The secret is in no file of the server's: not in the approvals, not
	// in the audit log.
	if err := filepath.WalkDir(m.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if strings.Contains(string(b), secret) {
			t.Errorf("%s holds the secret", path)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}
