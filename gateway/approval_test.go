package gateway_test

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/policy"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// heldGateway puts a gateway with the default policy set in front of the
// env's server: delete_customer (destructive) waits for a person, for
// hold at most.
func (e *env) heldGateway(hold time.Duration, mod func(*gateway.Config)) {
	e.t.Helper()
	pol, err := policy.Open(policy.Config{Dir: filepath.Join(e.t.TempDir(), "p"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		e.t.Fatal(err)
	}
	e.regateway(func(c *gateway.Config) {
		c.Routes[0].ToolLabels = map[string][]string{"delete_customer": {"destructive"}}
		c.Agents, c.Approvals, c.Policy, c.Issuances, c.ApprovalHold = e.store, e.store, pol, e.store, hold
		if mod != nil {
			mod(c)
		}
	})
}

// Past its limit of calls waiting for approval, a call is denied (and the
// denial audited), and files no approval; the same call again is no new
// request.
func TestHeldCallsBounded(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.heldGateway(50*time.Millisecond, func(c *gateway.Config) { c.ApprovalLimits = mandate.ApprovalLimits{PerAgent: 2} })
	key := e.agent("cleaner", "mcp:crm:*")
	cs, err := e.connect(e.mint("cleaner", key, "mcp:crm:*", time.Minute, false), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	del := func(name string) error {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "delete_customer", Arguments: map[string]any{"name": name}})
		return err
	}
	for _, name := range []string{"ada", "grace", "ada"} { // ada twice: one approval
		if err := del(name); err == nil || !strings.Contains(err.Error(), "is pending") {
			t.Fatalf("held call for %s: %v", name, err)
		}
	}
	denials := len(e.events(mandate.EventDecision))
	err = del("edsger")
	if err == nil || !strings.Contains(err.Error(), "waiting for a person's approval already") {
		t.Fatalf("a call past the limit: %v", err)
	}
	if n := len(e.events(mandate.EventDecision)); n != denials+1 {
		t.Errorf("the refusal is not audited: %d decision events, want %d", n, denials+1)
	}
	if list, _ := e.store.Approvals(ctx, mandate.ApprovalFilter{}); len(list) != 2 {
		t.Errorf("%d approvals, want 2", len(list))
	}
}

// An approval is checked again when the gateway uses it: one approved by
// a person the rule does not let decide it (straight in the store, as no
// issuer would) lets nothing through, and the call asks anew.
func TestHeldCallApprovalCheckedAtUse(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.heldGateway(50*time.Millisecond, nil)
	h := sha256.Sum256([]byte("mallory's token"))
	if err := e.store.CreateApprover(ctx, &mandate.Approver{Email: "mallory@example.org", TokenHash: h[:], CreatedAt: time.Now()}, nil); err != nil {
		t.Fatal(err)
	}
	key := e.agent("cleaner", "mcp:crm:*")
	tok := e.mint("cleaner", key, "mcp:crm:*", time.Minute, false)
	cs, err := e.connect(tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	del := func() error {
		_, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "delete_customer", Arguments: map[string]any{"name": "ada"}})
		return err
	}
	if err := del(); err == nil || !strings.Contains(err.Error(), "is pending") {
		t.Fatalf("held call: %v", err)
	}
	list, _ := e.store.Approvals(ctx, mandate.ApprovalFilter{Status: mandate.ApprovalPending})
	if len(list) != 1 || strings.Join(list[0].Approvers, ",") != "alice@example.org" {
		t.Fatalf("approvals %+v", list)
	}
	ap := list[0]
	if ap.Server != "crm" || ap.Tool != "delete_customer" || string(ap.Arguments) != `{"name":"ada"}` || ap.ArgumentsBytes != len(`{"name":"ada"}`) ||
		ap.Action != mandate.ApprovalToolCall || len(ap.Chain) != 1 {
		t.Errorf("what the approver sees: %+v %s", ap, ap.Arguments)
	}
	if _, err := e.store.DecideApproval(ctx, ap.ID, mandate.ApprovalApproved, "user:mallory@example.org", "", time.Now(), nil); err != nil {
		t.Fatal(err)
	}
	if err := del(); err == nil || !strings.Contains(err.Error(), "is pending") {
		t.Fatalf("a call approved by mallory: %v", err)
	}
	if n := len(e.events(mandate.EventToolCall)); n != 0 {
		t.Errorf("%d tool.call events: the call went through", n)
	}
	if list, _ := e.store.Approvals(ctx, mandate.ApprovalFilter{Status: mandate.ApprovalPending}); len(list) != 1 || list[0].ID == ap.ID {
		t.Errorf("the call did not ask anew: %+v", list)
	}
}
