package mandate

import (
	"context"
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

// Approval is a request for a person's approval of one delegation. It is
// bound to exactly that request by RequestHash: the same parent mandate,
// actor, scopes, audience and lifetime, and nothing else, may use it, once.
type Approval struct {
	ID            string         `json:"id"`
	Status        ApprovalStatus `json:"status"`
	Task          string         `json:"task"`
	ParentMandate string         `json:"parent_mandate"`
	Agent         string         `json:"agent"` // the delegating agent (the parent's holder)
	Actor         string         `json:"actor"` // the agent that would receive the mandate; for an ephemeral one, "jkt:<thumbprint>"
	Subject       string         `json:"sub"`   // the accountable human
	Scope         string         `json:"scope"`
	Audience      []string       `json:"aud"`
	TTLMillis     int64          `json:"ttl_ms"`
	Reason        string         `json:"reason"`    // why approval is needed: which rule asked for it
	Approvers     []string       `json:"approvers"` // who may decide
	RequestHash   string         `json:"-"`         // binds the approval to its request
	CreatedAt     time.Time      `json:"created_at"`
	ExpiresAt     time.Time      `json:"expires_at"` // undecided by then: denied
	DecidedAt     time.Time      `json:"decided_at,omitzero"`
	DecidedBy     string         `json:"decided_by,omitempty"` // user:<email>, or "system" for a timeout
	Note          string         `json:"note,omitempty"`       // the decider's comment
}

// MayDecide reports whether the person with this email may decide a.
func (a *Approval) MayDecide(email string) bool {
	for _, x := range a.Approvers {
		if x == email {
			return true
		}
	}
	return false
}

// ApprovalFilter selects approvals. Zero fields do not filter.
type ApprovalFilter struct {
	Status ApprovalStatus
	Task   string
	Limit  int // at most this many, newest first (default and maximum 1000)
}

// ApprovalStore keeps approval requests. Every change is written with its
// audit event in one transaction.
type ApprovalStore interface {
	// CreateApproval stores a new pending approval and appends ev.
	CreateApproval(ctx context.Context, a *Approval, ev *Event) error
	// Approval returns one approval; ENOTFOUND if there is none.
	Approval(ctx context.Context, id string) (*Approval, error)
	// Approvals lists approvals, newest first.
	Approvals(ctx context.Context, f ApprovalFilter) ([]*Approval, error)
	// DecideApproval moves a pending approval to approved or denied,
	// recording who decided, when and why, and appends ev; it returns the
	// updated approval. ENOTFOUND if there is none, ECONFLICT if it is not
	// pending any more.
	DecideApproval(ctx context.Context, id string, to ApprovalStatus, by, note string, at time.Time, ev *Event) (*Approval, error)
}

// Approver is a person who may decide approvals, known to the server by a
// credential of their own: the admin credential cannot approve, so every
// decision names a person.
type Approver struct {
	Email     string    `json:"email"`
	TokenHash []byte    `json:"-"` // SHA-256 of the approver's bearer credential
	CreatedAt time.Time `json:"created_at"`
}

// ApproverStore keeps approvers.
type ApproverStore interface {
	// CreateApprover stores a new approver and appends ev; ECONFLICT if
	// one with that email exists.
	CreateApprover(ctx context.Context, a *Approver, ev *Event) error
	// ApproverByTokenHash finds the approver whose credential hashes to h;
	// ENOTFOUND if none.
	ApproverByTokenHash(ctx context.Context, h []byte) (*Approver, error)
	// Approvers lists approvers by email.
	Approvers(ctx context.Context) ([]*Approver, error)
}
