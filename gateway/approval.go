package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/verify"
)

// ApprovalUser consumes an approved approval with the event of the call
// it allows, in one transaction (*sqlite.Store).
type ApprovalUser interface {
	UseApproval(ctx context.Context, id string, ev *mandate.Event) error
}

// Defaults of approvals at the gateway.
const (
	DefaultApprovalHold    = 25 * time.Second // how long a call is held for a decision
	DefaultApprovalTimeout = 5 * time.Minute  // undecided by then, an approval is denied
	approvalPoll           = 200 * time.Millisecond
)

// CodeApprovalPending: the call waits for a person's approval; call again
// with the same arguments once it is given (JSON-RPC error data names the
// approval).
const CodeApprovalPending = -32003

// heldCall is what a call needing approval asks a person.
type heldCall struct {
	resource string
	tool     string
	args     json.RawMessage
	decision policy.Decision
	labels   []string       // the tool's
	secrets  map[string]any // found in args
	hold     string         // why the monitor holds the task, if it is that and not policy
}

// approve holds a call that policy allows only after a person's approval:
// it finds the approval asked for this very call (same task, agent, tool
// and arguments) or asks for one, then waits up to ApprovalHold for the
// decision. It returns the approved approval, or the error to answer.
func (g *Gateway) approve(ctx context.Context, rt *route, c *mandate.Claims, h heldCall) (*mandate.Approval, *rpcError) {
	if g.cfg.Approvals == nil || g.approvalUser == nil {
		return nil, &rpcError{Code: CodeDenied, Message: "denied: policy " + strings.Join(h.decision.Policies, ", ") +
			" requires a person's approval, and this gateway takes no approvals"}
	}
	hash := hashCall(c, h)
	now := g.cfg.Now()
	ap, err := g.findApproval(ctx, c, hash, now)
	if err != nil {
		return nil, &rpcError{Code: CodeUnavailable, Message: "the gateway cannot read its approvals now: try again later"}
	}
	if ap == nil {
		if ap, err = g.askApproval(ctx, rt, c, h, hash, now); err != nil {
			var limit *mandate.PendingLimitError
			if errors.As(err, &limit) {
				return nil, &rpcError{Code: CodeDenied, Message: "denied: " + limit.Error()}
			}
			g.logError("gateway: approval not recorded", err)
			return nil, &rpcError{Code: CodeUnavailable, Message: "the gateway could not record the approval request: try again later"}
		}
	}
	deadline := time.NewTimer(g.cfg.ApprovalHold)
	defer deadline.Stop()
	tick := time.NewTicker(approvalPoll)
	defer tick.Stop()
	for ap.Status == mandate.ApprovalPending && g.cfg.Now().Before(ap.ExpiresAt) {
		select {
		case <-ctx.Done():
			return nil, &rpcError{Code: CodeApprovalPending, Message: "stopped waiting for approval " + ap.ID}
		case <-deadline.C:
			return nil, &rpcError{Code: CodeApprovalPending,
				Message: "approval " + ap.ID + " is pending: " + ap.Reason + "; ask " + strings.Join(ap.Approvers, ", ") +
					", then call again with the same arguments",
				Data: map[string]any{"approval_id": ap.ID, "approvers": ap.Approvers, "expires_at": ap.ExpiresAt.UTC()}}
		case <-tick.C:
			// The mandate may be revoked while its call waits (the monitor
			// revokes a task that tries to send out what it read).
			if err := g.revoked(ctx, c); err != nil {
				return nil, &rpcError{Code: CodeDenied, Message: "refused while waiting for approval " + ap.ID + ": " + err.Error()}
			}
			cur, err := g.cfg.Approvals.Approval(ctx, ap.ID)
			if err == nil {
				ap = cur
			}
		}
	}
	if err := g.revoked(ctx, c); err != nil {
		return nil, &rpcError{Code: CodeDenied, Message: "refused while waiting for approval " + ap.ID + ": " + err.Error()}
	}
	switch ap.Status {
	case mandate.ApprovalApproved:
		if !g.cfg.Now().Before(ap.ExpiresAt) {
			return nil, &rpcError{Code: CodeDenied, Message: "approval " + ap.ID + " expired before it was used: call again to ask anew"}
		}
		// The rule of who decides, again at the moment of use.
		if err := g.checkDecider(ctx, ap); err != nil {
			if mandate.ErrorCode(err) != mandate.EFORBIDDEN {
				return nil, &rpcError{Code: CodeUnavailable, Message: "the gateway cannot check who approved " + ap.ID + " now: try again later"}
			}
			return nil, &rpcError{Code: CodeDenied, Message: "approval " + ap.ID + " allows nothing: " + mandate.ErrorMessage(err)}
		}
		return ap, nil
	case mandate.ApprovalPending:
		return nil, &rpcError{Code: CodeDenied, Message: "approval " + ap.ID + " timed out undecided, which is a denial"}
	case mandate.ApprovalUsed:
		return nil, &rpcError{Code: CodeDenied, Message: "approval " + ap.ID + " was used already: it allows one call"}
	}
	return nil, &rpcError{Code: CodeDenied, Message: "approval " + ap.ID + " was denied by " + ap.DecidedBy + noteOf(ap.Note)}
}

// askApproval records the approval of a held call, with what the person
// deciding sees: the server, the tool, the arguments (masked and
// shortened: approvalArguments), the chain, the task's purpose and risk,
// and why it was held. The same is in its approval.requested event.
func (g *Gateway) askApproval(ctx context.Context, rt *route, c *mandate.Claims, h heldCall, hash string, now time.Time) (*mandate.Approval, error) {
	approvers, err := g.approvers(ctx, c)
	if err != nil {
		return nil, err
	}
	args, shortened, secrets := approvalArguments(h.args)
	ap := &mandate.Approval{
		ID: mandate.NewID(mandate.ApprovalIDPrefix, now), Status: mandate.ApprovalPending, Action: mandate.ApprovalToolCall,
		Task: c.Task, ParentMandate: c.ID, Agent: c.ClientID, Actor: c.ClientID, Subject: c.Subject, Chain: c.Actor.Chain(),
		Purpose: g.purpose(ctx, c), Scope: h.resource, Audience: []string{"mcp:" + rt.Name},
		Server: rt.Name, Tool: h.tool, Arguments: args, ArgumentsBytes: len(h.args), ArgumentsShortened: shortened, Secrets: secrets,
		Reason: approvalReason(h), Approvers: approvers, RequestHash: hash, CreatedAt: now, ExpiresAt: now.Add(g.cfg.ApprovalTimeout),
	}
	if g.cfg.Risk != nil {
		ap.Risk = g.cfg.Risk(c.Task, c.ClientID)
	}
	details := map[string]any{"approval": ap.ID, "approvers": ap.Approvers, "expires_ms": ap.ExpiresAt.UnixMilli(),
		"args_bytes": len(h.args), "risk": ap.Risk, "server": ap.Server, "tool": ap.Tool}
	if args != nil {
		details["arguments"] = string(args) // as the approver sees them: masked, shortened
		if shortened {
			details["arguments_shortened"] = true
		}
	}
	if ap.Purpose != "" {
		details["purpose"] = ap.Purpose
	}
	if len(h.labels) > 0 {
		details["tool_labels"] = h.labels // for the monitor: a held call is an attempt
	}
	if h.secrets != nil {
		details["arg_secrets"] = h.secrets
	}
	if h.hold != "" {
		details["held_by"] = "monitor"
	} else {
		details["held_by"] = "policy"
	}
	ev := g.event(mandate.EventApprovalRequested, c, "tools/call", h.resource, "", ap.Reason, details)
	if err := g.cfg.Approvals.CreateApproval(ctx, ap, g.cfg.ApprovalLimits, ev); err != nil {
		return nil, err
	}
	return ap, nil
}

// purpose is the purpose of c's task, for the person asked to approve, or
// "" if the gateway cannot look it up (Config.Issuances).
func (g *Gateway) purpose(ctx context.Context, c *mandate.Claims) string {
	if g.cfg.Issuances == nil {
		return ""
	}
	rec, err := g.cfg.Issuances.Issuance(ctx, c.ID)
	if err != nil {
		g.cfg.Logger.WarnContext(ctx, "gateway: the task's purpose is unknown to its approvers", "mandate", c.ID, "err", err)
		return ""
	}
	return rec.TaskPurpose
}

// checkDecider checks that the person who approved ap may decide it
// (mandate.Approval.MayDecide).
func (g *Gateway) checkDecider(ctx context.Context, ap *mandate.Approval) error {
	email, ok := strings.CutPrefix(ap.DecidedBy, "user:")
	if !ok {
		return mandate.Errorf(mandate.EFORBIDDEN, "%s is not a person", ap.DecidedBy)
	}
	return ap.MayDecide(ctx, g.cfg.Agents, email)
}

// revoked asks Config.Revoked again about a mandate verified earlier.
func (g *Gateway) revoked(ctx context.Context, c *mandate.Claims) error {
	if g.cfg.Revoked == nil {
		return nil
	}
	switch err := g.cfg.Revoked(ctx, c); {
	case errors.Is(err, verify.ErrRevoked):
		return err // names the revoked mandate, c's or an ancestor's
	case err != nil:
		g.cfg.Logger.ErrorContext(ctx, "gateway: revocation status unknown", "mandate", c.ID, "err", err)
		return fmt.Errorf("the revocation status of mandate %s is unknown: refused", c.ID)
	}
	return nil
}

func noteOf(n string) string {
	if n == "" {
		return ""
	}
	return ": " + n
}

// findApproval returns the newest approval of c's task for this call that
// is still of use (pending, or approved by someone who may decide it,
// before its expiry), or nil.
func (g *Gateway) findApproval(ctx context.Context, c *mandate.Claims, hash string, now time.Time) (*mandate.Approval, error) {
	list, err := g.cfg.Approvals.Approvals(ctx, mandate.ApprovalFilter{Task: c.Task})
	if err != nil {
		return nil, err
	}
	for _, a := range list {
		if !now.Before(a.ExpiresAt) || a.RequestHash != hash {
			continue
		}
		switch a.Status {
		case mandate.ApprovalPending:
			return a, nil
		case mandate.ApprovalApproved:
			if err := g.checkDecider(ctx, a); err == nil {
				return a, nil
			} else if mandate.ErrorCode(err) != mandate.EFORBIDDEN {
				return nil, err
			}
		}
	}
	return nil, nil
}

// hashCall binds an approval to one call: the task, the agent, the tool
// and the arguments (in canonical JSON).
func hashCall(c *mandate.Claims, h heldCall) string {
	var args any
	dec := json.NewDecoder(bytes.NewReader(h.args))
	dec.UseNumber() // 9007199254740993 is not 9007199254740992
	dec.Decode(&args)
	canon := marshal(args)
	sum := sha256.New()
	for _, s := range []string{"tools/call", c.Task, c.ClientID, h.resource, string(canon)} {
		sum.Write([]byte(s))
		sum.Write([]byte{0})
	}
	return hex.EncodeToString(sum.Sum(nil))
}

func approvalReason(h heldCall) string {
	if h.hold != "" {
		return mandate.ClipReason(h.hold)
	}
	d := h.decision
	reasons := d.Reasons
	if n := len(reasons); n > 0 && reasons[n-1] == policy.ReasonApproval {
		reasons = reasons[:n-1]
	}
	r := "policy " + strings.Join(d.Policies, ", ") + " requires approval"
	if len(reasons) > 0 {
		r += ": " + strings.Join(reasons, "; ")
	}
	return mandate.ClipReason(r)
}

// approvers are the people who may decide the approval of c's call
// (mandate.ApprovalParties: the accountable side of the calling chain),
// or the accountable human if the gateway knows no agents. An agent of
// the chain that cannot be looked up is an error: the list would be
// someone else's.
func (g *Gateway) approvers(ctx context.Context, c *mandate.Claims) ([]string, error) {
	p := mandate.ApprovalParties{Subject: c.Subject}
	if g.cfg.Agents != nil {
		seen := map[string]bool{}
		for _, id := range c.Actor.Chain() {
			reg := mandate.RegisteredAncestor(id)
			if seen[reg] {
				continue
			}
			seen[reg] = true
			a, err := g.cfg.Agents.Agent(ctx, reg)
			if err != nil {
				return nil, err
			}
			p.Chain = append(p.Chain, a)
		}
	}
	return p.Approvers(), nil
}
