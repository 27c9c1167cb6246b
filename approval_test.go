package mandate

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// ag is an agent for the rule's tests: name, owner and approvers.
func ag(name, owner string, approvers ...string) *Agent {
	return &Agent{ID: AgentID("example.org", name), Name: name, Owner: owner, Approvers: approvers, Status: AgentActive}
}

// Who decides comes from the accountable side: the task's human and the
// agents above the one asking, never the asking agent's owner (or the
// recipient's) unless that is the task's human.
func TestApprovalPartiesApprovers(t *testing.T) {
	const alice, bob, carol, dave = "alice@example.org", "bob@example.org", "carol@example.org", "dave@example.org"
	orch := ag("orch", alice)                // alice's root agent
	orchCarol := ag("orch", alice, carol)    // the same, naming carol
	orchBob := ag("orch", alice, bob, carol) // naming bob too
	helper := ag("helper", bob)              // bob's agent, delegated into alice's task
	helperDave := ag("helper", bob, dave)    // naming dave
	bobLead := ag("bob-lead", bob, dave)     // another of bob's, above helper
	writer := ag("writer", alice, carol)     // alice's, naming carol
	daveAgent := ag("dave-agent", dave)      // dave's, between
	tests := []struct {
		name string
		p    ApprovalParties
		want []string
	}{
		{"root mint: the agent's owner", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{orch}}, []string{alice}},
		{"root mint: the agent's approvers replace its owner", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{orchCarol}}, []string{carol}},
		{"the attack: bob's agent in alice's task, policy asks", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{helper, orch}}, []string{alice}},
		{"bob's agent's own rule asks: alice's side decides", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{helper, orch}, Asking: []*Agent{helper}}, []string{alice}},
		{"bob's agent names dave: not in alice's task", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{helperDave, orch}}, []string{alice}},
		{"bob's other agent above is bob's side too", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{helper, bobLead, orch}}, []string{alice}},
		{"alice names bob: not for bob's own agent", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{helper, orchBob}}, []string{carol}},
		{"alice names only bob: the task's human then", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{helper, ag("orch", alice, bob)}}, []string{alice}},
		{"an agent of the task's human: its rule's approvers", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{writer, orch}, Asking: []*Agent{writer}}, []string{carol}},
		{"an agent of the task's human, policy asks: all the chain's", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{writer, orch}}, []string{carol, alice}},
		{"another's agent between is accountable", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{helper, daveAgent, orch}}, []string{dave, alice}},
		{"the recipient's owner does not decide", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{orchBob}, Recipient: helper}, []string{carol}},
		{"the recipient's owner does not decide, even as the only one named", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{ag("orch", alice, bob)}, Recipient: helper}, []string{alice}},
		{"unattended: the owner is the task's human", ApprovalParties{Subject: "user:" + bob, Chain: []*Agent{helper}}, []string{bob}},
		{"another spelling is the same person", ApprovalParties{Subject: "user:" + alice, Chain: []*Agent{helper, ag("orch", alice, "BOB@example.org", carol)}}, []string{carol}},
		{"no agents known: the task's human", ApprovalParties{Subject: "user:" + alice}, []string{alice}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Approvers(); !slices.Equal(got, tt.want) {
				t.Errorf("approvers %v, want %v", got, tt.want)
			}
		})
	}
}

type agentMap map[string]*Agent

func (m agentMap) Agent(_ context.Context, id string) (*Agent, error) {
	if a, ok := m[id]; ok {
		return a, nil
	}
	return nil, Errorf(ENOTFOUND, "no agent %s", id)
}

// MayDecide holds the rule at decision time, whatever the stored list
// says: an approval listing the asking agent's owner (as lists were made
// before) does not let them decide.
func TestApprovalMayDecide(t *testing.T) {
	helper, orch, other := ag("helper", "bob@example.org"), ag("orch", "alice@example.org"), ag("other", "Carol@example.org")
	agents := agentMap{helper.ID: helper, orch.ID: orch, other.ID: other}
	call := &Approval{ID: "ap_1", Agent: helper.ID + EphemeralSeparator + "7f3a", Actor: helper.ID + EphemeralSeparator + "7f3a",
		Subject: "user:alice@example.org", Approvers: []string{"alice@example.org", "bob@example.org", "dave@example.org"}}
	delegation := &Approval{ID: "ap_2", Agent: orch.ID, Actor: other.ID, Subject: "user:alice@example.org",
		Approvers: []string{"alice@example.org", "carol@example.org"}}
	unattended := &Approval{ID: "ap_3", Agent: helper.ID, Actor: "jkt:x", Subject: "user:bob@example.org", Approvers: []string{"bob@example.org"}}
	tests := []struct {
		ap    *Approval
		email string
		want  string // "" for allowed, else a piece of the error
	}{
		{call, "alice@example.org", ""},
		{call, "dave@example.org", ""},
		{call, "bob@example.org", "nobody approves their own agent's request"},
		{call, "mallory@example.org", "its approvers are"},
		{call, "Alice@example.org", "its approvers are"}, // the list is matched exactly
		{delegation, "alice@example.org", ""},
		{delegation, "carol@example.org", "the agent that would receive the mandate"},
		{unattended, "bob@example.org", ""},
	}
	for _, tt := range tests {
		err := tt.ap.MayDecide(context.Background(), agents, tt.email)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s by %s: %v", tt.ap.ID, tt.email, err)
		case tt.want != "" && (ErrorCode(err) != EFORBIDDEN || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s by %s: %v, want EFORBIDDEN with %q", tt.ap.ID, tt.email, err, tt.want)
		}
	}
	// An agent that cannot be looked up is no permission.
	lost := &Approval{ID: "ap_4", Agent: AgentID("example.org", "gone"), Actor: "jkt:x", Subject: "user:alice@example.org", Approvers: []string{"alice@example.org"}}
	if err := lost.MayDecide(context.Background(), agents, "alice@example.org"); ErrorCode(err) != EFORBIDDEN {
		t.Errorf("an approval whose agent is unknown: %v, want EFORBIDDEN", err)
	}
	// Without agents (a gateway that knows none), the list alone.
	if err := call.MayDecide(context.Background(), nil, "dave@example.org"); err != nil {
		t.Error(err)
	}
}
