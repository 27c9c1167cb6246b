package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/client"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/verify"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// Disabling an agent stops its live mandates, and every mandate delegated
// through it, at the gateway on their next call, in sessions opened
// before (issue 15, item 12), as introspection says; delegating from them
// is refused too. Enabling it again lets them go on: they were not
// revoked. An agent no longer registered stops its chain the same way.
func TestDisabledAgentIsStoppedAtTheGateway(t *testing.T) {
	ctx := context.Background()
	m, a := serveWithMCPLabels(t, listServer(), false, map[string][]string{"list": {"read_only"}})
	admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
	bKey := addAgent(t, admin, "b")
	b, err := client.New(client.Config{Issuer: m.URL, AgentID: "spiffe://example.org/agent/b", Key: bKey})
	if err != nil {
		t.Fatal(err)
	}
	root, err := a.Root(ctx, client.Request{Scope: "mcp:crm:list", TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	toB, err := a.Delegate(ctx, root, client.Actor{ID: "spiffe://example.org/agent/b", Key: bKey}, client.Request{}, client.DelegateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Delegate(ctx, toB, client.NewEphemeral(), client.Request{}, client.DelegateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sessions := map[string]*mcp.ClientSession{}
	for name, md := range map[string]*client.Mandate{"root": root, "b": toB, "b's sub-agent": sub} {
		cs, err := connectMCP(m, md)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs.Close() })
		sessions[name] = cs
	}
	call := func(name string) error {
		_, err := sessions[name].CallTool(ctx, &mcp.CallToolParams{Name: "list", Arguments: map[string]any{}})
		return err
	}
	for name := range sessions {
		if err := call(name); err != nil {
			t.Fatalf("%s before: %v", name, err)
		}
	}
	if _, err := admin.SetAgentStatus(ctx, "b", mandate.AgentDisabled); err != nil {
		t.Fatal(err)
	}
	if err := call("root"); err != nil {
		t.Errorf("the root's call, b being no part of its chain: %v", err)
	}
	for _, name := range []string{"b", "b's sub-agent"} {
		if err := call(name); err == nil {
			t.Errorf("%s: a call with b disabled went through", name)
		}
	}
	if _, err := b.Delegate(ctx, toB, client.NewEphemeral(), client.Request{}, client.DelegateOptions{}); err == nil {
		t.Error("b delegated while disabled")
	}
	// The refusals are audited, naming what stopped them, for the monitor.
	evs, err := m.Store.Events(ctx, mandate.EventFilter{Task: root.Claims.Task, Type: mandate.EventDecision, Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	refused := 0
	for _, e := range evs {
		if e.Details["refused"] == "revocation" && strings.Contains(e.Reason, "agent spiffe://example.org/agent/b of the chain is disabled") {
			refused++
		}
	}
	if refused != 2 {
		t.Errorf("%d refusals naming the disabled agent, want 2: %+v", refused, evs)
	}
	if _, err := admin.SetAgentStatus(ctx, "b", mandate.AgentActive); err != nil {
		t.Fatal(err)
	}
	if cs, err := connectMCP(m, sub); err != nil {
		t.Errorf("b's sub-agent once b is enabled again: %v", err)
	} else {
		cs.Close()
	}

	// An agent of the chain that is not registered (any more).
	gone := *toB.Claims
	gone.Actor = &mandate.Actor{Subject: gone.ClientID, Actor: &mandate.Actor{Subject: "spiffe://example.org/agent/gone"}}
	if err := m.validChain(ctx, &gone); !errors.Is(err, verify.ErrRevoked) || !strings.Contains(err.Error(), "not registered") {
		t.Errorf("a chain through an unregistered agent: %v", err)
	}
}
