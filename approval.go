package mandate

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ApprovalStatus is where an approval request stands.
type ApprovalStatus string

const (
	ApprovalPending  ApprovalStatus = "pending"  // waiting for a person
	ApprovalApproved ApprovalStatus = "approved" // granted; not yet used
	ApprovalDenied   ApprovalStatus = "denied"   // refused by a person, or timed out
	ApprovalUsed     ApprovalStatus = "used"     // granted and consumed by the issuance it allowed
)

// What an approval asks for (Approval.Action).
const (
	ApprovalMint     = "mint"       // a root mandate of a new task
	ApprovalDelegate = "delegate"   // a delegation
	ApprovalToolCall = "tools/call" // a tool call the gateway holds
)

// MaxApprovalArguments bounds Approval.Arguments, the held call's
// arguments as a person deciding sees them: longer values, and members
// past what fits, are shortened (ArgumentsShortened says so).
const MaxApprovalArguments = 16 << 10

// Approval is a request for a person's approval of one root mint,
// delegation or tool call. It is bound to exactly that request by
// RequestHash: the same request, and nothing else, may use it, once.
//
// Everything but RequestHash is shown to the people who may decide it, so
// that they see what they approve: who asks in which chain, for which
// task and purpose, why it was held, and for a tool call the server, the
// tool and the arguments, with every secret the gateway's detectors find
// masked. The arguments as sent are never stored.
type Approval struct {
	ID            string         `json:"id"`
	Status        ApprovalStatus `json:"status"`
	Action        string         `json:"action"` // ApprovalMint, ApprovalDelegate or ApprovalToolCall
	Task          string         `json:"task"`
	ParentMandate string         `json:"parent_mandate"`
	Agent         string         `json:"agent"`             // the agent asking: the delegating agent (the parent's holder), the minting or the calling agent
	Actor         string         `json:"actor"`             // the agent that would receive the mandate; for an ephemeral one, "jkt:<thumbprint>"; for a call, Agent
	Subject       string         `json:"sub"`               // the accountable human
	Chain         []string       `json:"chain,omitempty"`   // the asking agent, then those above it (act, outermost first)
	Purpose       string         `json:"purpose,omitempty"` // the task's purpose, as its root mint gave it
	Risk          int            `json:"risk"`              // the task's risk score (0-100) when asked
	Scope         string         `json:"scope"`
	Audience      []string       `json:"aud"`
	TTLMillis     int64          `json:"ttl_ms"`
	// A held tool call's server and tool, and its arguments: canonical
	// JSON in the order sent, every secret found masked ("[secret:<detector>]",
	// Secrets names the detectors), at most MaxApprovalArguments bytes;
	// ArgumentsBytes is the size of the arguments as sent.
	Server             string          `json:"server,omitempty"`
	Tool               string          `json:"tool,omitempty"`
	Arguments          json.RawMessage `json:"arguments,omitempty"`
	ArgumentsBytes     int             `json:"arguments_bytes,omitempty"`
	ArgumentsShortened bool            `json:"arguments_shortened,omitempty"`
	Secrets            []string        `json:"secrets,omitempty"`
	Reason             string          `json:"reason"`    // why it was held: which rule, policy or monitor detection asked
	Approvers          []string        `json:"approvers"` // who may decide ([ApprovalParties.Approvers])
	RequestHash        string          `json:"-"`         // binds the approval to its request
	CreatedAt          time.Time       `json:"created_at"`
	ExpiresAt          time.Time       `json:"expires_at"` // undecided by then: denied
	DecidedAt          time.Time       `json:"decided_at,omitzero"`
	DecidedBy          string          `json:"decided_by,omitempty"` // user:<email>, or "system" for a timeout
	Note               string          `json:"note,omitempty"`       // the decider's comment
}

// Names reports whether the approval names the person with this email
// among its approvers. It is not the whole rule: see MayDecide.
func (a *Approval) Names(email string) bool {
	return slices.Contains(a.Approvers, email)
}

// MayDecide checks that the person with this email may decide a: named
// among its approvers, and without a stake in the request, that is
// neither the owner of the agent that asked nor of the agent a delegation
// would give the mandate to, unless they are the task's human (a's
// Subject). Issuers and gateways check it when a person decides and again
// when an approval is used, so that an approval listed or decided under
// another rule (an older version, a store written by hand) allows nothing.
//
// agents finds the owners; nil (a gateway that knows no agents) checks
// the list alone. It returns nil, an EFORBIDDEN error that says why (an
// agent that is not registered included), or the error of a lookup that
// failed.
func (a *Approval) MayDecide(ctx context.Context, agents AgentGetter, email string) error {
	if !a.Names(email) {
		return Errorf(EFORBIDDEN, "%s may not decide approval %s: its approvers are %s", email, a.ID, strings.Join(a.Approvers, ", "))
	}
	if agents == nil {
		return nil
	}
	human := strings.TrimPrefix(a.Subject, "user:")
	ids := []string{RegisteredAncestor(a.Agent)}
	if a.Actor != a.Agent && !strings.HasPrefix(a.Actor, "jkt:") && a.Actor != "" {
		ids = append(ids, RegisteredAncestor(a.Actor))
	}
	for i, id := range ids {
		ag, err := agents.Agent(ctx, id)
		if ErrorCode(err) == ENOTFOUND {
			return Errorf(EFORBIDDEN, "%s may not decide approval %s: its agent %s is not registered, so who owns it cannot be told", email, a.ID, id)
		} else if err != nil {
			return err
		}
		if conflicted(email, human, ag.Owner) {
			whose := "the agent that asked, " + ag.ID
			if i > 0 {
				whose = "the agent that would receive the mandate, " + ag.ID
			}
			return Errorf(EFORBIDDEN, "%s may not decide approval %s: they own %s, and the task is %s's: nobody approves their own agent's request", email, a.ID, whose, human)
		}
	}
	return nil
}

// conflicted reports whether the person with email owns one of owners'
// agents without being the task's human. Emails compare without case, so
// that a second spelling is no way around the rule.
func conflicted(email, human string, owners ...string) bool {
	if strings.EqualFold(email, human) {
		return false
	}
	for _, o := range owners {
		if strings.EqualFold(email, o) {
			return true
		}
	}
	return false
}

// ApprovalParties are the agents of a request that needs a person's
// approval, for the rule of who decides it.
type ApprovalParties struct {
	// Subject is the task's accountable human, as in the mandate's sub
	// (user:<email>).
	Subject string
	// Chain are the registered agents of the asking chain, each once: the
	// agent asking first (for an ephemeral agent, the registered agent it
	// descends from), then the agents above it, up to the root.
	Chain []*Agent
	// Recipient is the registered agent a delegation would give the
	// mandate to; nil for an ephemeral one, a root mint or a tool call.
	Recipient *Agent
	// Asking are the agents of Chain whose own rule (Agent.Approval) asks
	// for the approval; none when policy or the monitor asks.
	Asking []*Agent
}

// Approvers returns the people who may decide the approval (docs/delegation.md,
// "Who decides"). They come from the accountable side of the request:
//
//   - the approvers (Agent.Approvers, else the owner) of the agents whose
//     rule asks, or of every agent of the chain when policy or the monitor
//     asks;
//   - of those, only agents above the asking one and not owned by its
//     owner, unless that owner is the task's human (then the asking
//     agent's own approvers decide too);
//   - never the owner of the asking agent or of the recipient, unless they
//     are the task's human: nobody approves their own agent's request.
//
// If that leaves nobody (the asking agents' approvers were all on the
// asking side), the accountable agents of the whole chain decide, and
// failing them the task's human.
func (p ApprovalParties) Approvers() []string {
	human := strings.TrimPrefix(p.Subject, "user:")
	var owners []string
	var asker string
	if len(p.Chain) > 0 {
		asker = p.Chain[0].Owner
		owners = append(owners, asker)
	}
	if p.Recipient != nil {
		owners = append(owners, p.Recipient.Owner)
	}
	// The asking agent's side (the agents its owner owns) decides only if
	// that owner is the task's human.
	aside := asker != "" && !strings.EqualFold(asker, human)
	pick := func(from []*Agent) []string {
		var out []string
		for _, a := range from {
			if aside && strings.EqualFold(a.Owner, asker) {
				continue // the asking agent's side
			}
			for _, e := range ApproversOf(a) {
				if !conflicted(e, human, owners...) && !slices.Contains(out, e) {
					out = append(out, e)
				}
			}
		}
		return out
	}
	from := p.Asking
	if len(from) == 0 {
		from = p.Chain
	}
	out := pick(from)
	if len(out) == 0 {
		out = pick(p.Chain)
	}
	if len(out) == 0 && human != "" {
		out = []string{human}
	}
	return out
}

// ApproversOf returns the people an agent names to decide the approvals
// its requests need: its Approvers, or its owner.
func ApproversOf(a *Agent) []string {
	if len(a.Approvers) == 0 {
		return []string{a.Owner}
	}
	return a.Approvers
}

// Pending approval limits: one agent cannot bury the approvals of others
// in requests (ApprovalLimits).
const (
	DefaultMaxPendingPerAgent = 20
	DefaultMaxPendingPerTask  = 10
	// MaxPendingLimit bounds either limit.
	MaxPendingLimit = 10_000
)

// ApprovalLimits bound the approvals waiting for a person: those asked by
// one registered agent and its ephemeral sub-agents, in any task
// (PerAgent), and those of one task (PerTask). Zero fields mean the
// defaults; CreateApproval refuses a request past either with a
// *PendingLimitError.
type ApprovalLimits struct {
	PerAgent int
	PerTask  int
}

// WithDefaults returns l with zero fields set to the defaults, or an
// EINVALID error for a limit out of [1, MaxPendingLimit].
func (l ApprovalLimits) WithDefaults() (ApprovalLimits, error) {
	if l.PerAgent == 0 {
		l.PerAgent = DefaultMaxPendingPerAgent
	}
	if l.PerTask == 0 {
		l.PerTask = DefaultMaxPendingPerTask
	}
	if l.PerAgent < 1 || l.PerAgent > MaxPendingLimit || l.PerTask < 1 || l.PerTask > MaxPendingLimit {
		return l, Errorf(EINVALID, "pending approval limits %d per agent, %d per task: each must be 1 to %d", l.PerAgent, l.PerTask, MaxPendingLimit)
	}
	return l, nil
}

// PendingLimitError is CreateApproval's refusal of a request past its
// ApprovalLimits: EFORBIDDEN (OAuth access_denied). Nothing was stored.
type PendingLimitError struct {
	Of      string // "agent" or "task"
	Name    string // the registered agent's ID, or the task's
	Pending int    // how many wait already
	Limit   int
}

func (e *PendingLimitError) Error() string {
	what := "agent " + e.Name + " and its sub-agents have"
	if e.Of == "task" {
		what = "task " + e.Name + " has"
	}
	return fmt.Sprintf("%s %d requests waiting for a person's approval already, the most allowed (%d): wait for their decisions, or ask an approver to deny them", what, e.Pending, e.Limit)
}

// Unwrap lets ErrorCode and the OAuth mapping see it as access_denied.
func (e *PendingLimitError) Unwrap() error {
	return &Error{Code: EFORBIDDEN, OAuth: "access_denied", Message: e.Error()}
}

// ApprovalFilter selects approvals. Zero fields do not filter.
type ApprovalFilter struct {
	Status ApprovalStatus
	Task   string
	// Approver selects the approvals that name this person among their
	// approvers, before Limit applies: a flood of others' requests cannot
	// push a person's own out of their listing.
	Approver string
	// ExpiredBy selects the approvals whose expiry is at or before it.
	ExpiredBy time.Time
	Limit     int // at most this many, newest first (default and maximum 1000)
}

// ApprovalStore keeps approval requests. Every change is written with its
// audit event in one transaction.
type ApprovalStore interface {
	// CreateApproval stores a new pending approval and appends ev, unless
	// it would be past lim (counted in the same transaction, among the
	// approvals pending and unexpired at a.CreatedAt): then it returns a
	// *PendingLimitError and stores nothing. ECONFLICT if the ID exists,
	// EINVALID if a is not a valid new approval.
	CreateApproval(ctx context.Context, a *Approval, lim ApprovalLimits, ev *Event) error
	// Approval returns one approval; ENOTFOUND if there is none.
	Approval(ctx context.Context, id string) (*Approval, error)
	// Approvals lists approvals, newest first.
	Approvals(ctx context.Context, f ApprovalFilter) ([]*Approval, error)
	// DecideApproval moves a pending approval to approved or denied,
	// recording who decided, when and why, and appends ev; it returns the
	// updated approval. A person (by "user:<email>") must be an approver
	// that is not disabled at that moment, checked in the same
	// transaction: EFORBIDDEN otherwise. ENOTFOUND if there is no such
	// approval, ECONFLICT if it is not pending any more.
	DecideApproval(ctx context.Context, id string, to ApprovalStatus, by, note string, at time.Time, ev *Event) (*Approval, error)
}

// Approver is a person who may decide approvals, known to the server by a
// credential of their own: the admin credential cannot approve, so every
// decision names a person.
type Approver struct {
	Email     string    `json:"email"`
	TokenHash []byte    `json:"-"` // SHA-256 of the approver's bearer credential
	CreatedAt time.Time `json:"created_at"`
	// DisabledAt is when the admin disabled the approver: from then on
	// their credential is refused and they decide nothing.
	DisabledAt time.Time `json:"disabled_at,omitzero"`
}

// ApproverStore keeps approvers.
type ApproverStore interface {
	// CreateApprover stores a new approver and appends ev; ECONFLICT if
	// an active one with that email exists. A disabled one is replaced:
	// the person decides again, with the new credential only.
	CreateApprover(ctx context.Context, a *Approver, ev *Event) error
	// ApproverByTokenHash finds the active approver whose credential
	// hashes to h; ENOTFOUND if none, EUNAUTHORIZED if that approver is
	// disabled (it MUST NOT return a disabled approver).
	ApproverByTokenHash(ctx context.Context, h []byte) (*Approver, error)
	// Approvers lists approvers by email, disabled ones too.
	Approvers(ctx context.Context) ([]*Approver, error)
	// DisableApprover disables an approver at at and appends ev, in one
	// transaction, and returns it: their credential is refused and their
	// decisions are refused from then on. ENOTFOUND if there is no such
	// approver, ECONFLICT if they are disabled already.
	DisableApprover(ctx context.Context, email string, at time.Time, ev *Event) (*Approver, error)
}
