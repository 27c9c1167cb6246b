package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/jose"
)

// demoAgents are registered by `serve --demo`.
var demoAgents = []struct {
	name, owner, ceiling string
}{
	{"orchestrator", "alice@example.org", "mcp:crm:* mcp:email:* http:crm:GET:/**"},
	{"researcher", "alice@example.org", "mcp:crm:list_* mcp:crm:get_*"},
	{"mailer", "bob@example.org", "mcp:email:send"},
}

// setUpDemo registers the demo agents (once) with keys written to
// <data>/demo/<name>.jwk, and prints what to try.
func (m *Main) setUpDemo(ctx context.Context) error {
	dir := filepath.Join(m.DataDir, "demo")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	now := m.Now().UTC().Truncate(time.Millisecond)
	for _, d := range demoAgents {
		id := mandate.AgentID(m.TrustDomain, d.name)
		if _, err := m.Store.Agent(ctx, id); err == nil {
			continue // registered on an earlier start
		}
		keyPath := filepath.Join(dir, d.name+".jwk")
		_, priv, _ := ed25519.GenerateKey(rand.Reader)
		b, _ := json.MarshalIndent(jose.NewPrivateJWK(priv), "", "  ")
		os.Remove(keyPath) // a key left by a start that did not register
		if err := writeFileExcl(keyPath, append(b, '\n')); err != nil {
			return fmt.Errorf("demo: write %s: %w", keyPath, err)
		}
		ceiling, err := mandate.ParseScopeSet(d.ceiling)
		if err != nil {
			return err
		}
		pub := priv.Public().(ed25519.PublicKey)
		a := &mandate.Agent{
			ID: id, Name: d.name, Owner: d.owner, Ceiling: ceiling, PublicKey: pub, KeyID: jose.Thumbprint(pub),
			Status: mandate.AgentActive, CreatedAt: now, UpdatedAt: now,
		}
		if err := m.Store.CreateAgent(ctx, a, &mandate.Event{V: mandate.EventVersion, Time: now.UnixNano(),
			Type: mandate.EventAgentRegistered, Agent: id, Subject: a.Subject(), Action: "register", Outcome: mandate.OutcomeOK,
			By: "demo", Details: map[string]any{"owner": a.Owner, "ceiling": ceiling.Strings(), "key_thumbprint": a.KeyID}}); err != nil {
			return fmt.Errorf("demo: register %s: %w", d.name, err)
		}
	}
	play := ""
	if m.DemoPace > 0 {
		play = fmt.Sprintf("\nEvery %v it plays the demo's scenario (--demo-pace): an orchestrator's sub-agents call the demo CRM\n"+
			"and email servers behind the gateway (/mcp/crm, /mcp/email); one of them reads a customer record and\n"+
			"tries to email it out; policy refuses it and the monitor revokes the task. A line per round below.\n", m.DemoPace)
	}
	fmt.Fprintf(m.Stdout, `Mandate is running at %[1]s with demo agents: orchestrator, researcher, mailer.
Their private keys are in %[2]s.
%[4]s
Try, in another terminal:
  export MANDATE_SERVER=%[1]s
  curl -N -H "Authorization: Bearer $(cat %[3]s/admin.token)" -H 'Accept: text/event-stream' '%[1]s/v1/events?type=alert,mandate.revoked'
  go run ./cmd/mandate alerts -f --data %[3]s
  go run ./cmd/mandate agent list --data %[3]s
  go run ./cmd/mandate token --agent researcher --key %[2]s/researcher.jwk --scope mcp:crm:list_customers --ttl-ms 30000 --dpop > mandate.jwt
  go run ./cmd/mandate verify - < mandate.jwt
  go run ./cmd/mandate keygen sub.jwk
  go run ./cmd/mandate delegate --subject-token mandate.jwt --parent-key %[2]s/researcher.jwk --key sub.jwk --ttl 10s
  go run ./cmd/mandate task list --data %[3]s
  go run ./cmd/mandate audit tail --data %[3]s
  go run ./cmd/mandate audit verify --url %[1]s --data %[3]s
  curl -s %[1]s/.well-known/jwks.json
  curl -s %[1]s/audit/checkpoint
  curl -s %[1]s/.well-known/oauth-authorization-server
  go run ./cmd/mandate demo          # the scenario, narrated step by step, on a server of its own

`, m.URL, dir, m.DataDir, play)
	return nil
}
