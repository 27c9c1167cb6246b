package mandate

import (
	"context"
	"encoding/json"
	"strings"
	"time"
)

// Issuance is the durable record of one issued mandate: enough to rebuild the
// delegation tree, to introspect the mandate, and to revoke it. It is written
// before the mandate leaves the issuer (the write-ahead seam of DESIGN.md).
type Issuance struct {
	MandateID   string
	TaskID      string
	ParentID    string // empty for a root mandate
	AgentID     string // the holder (client_id)
	Subject     string // the accountable human
	Scope       string
	Audience    []string
	KeyID       string // the kid of the signing key
	JKT         string // cnf.jkt, empty for a bearer mandate
	IssuedAt    time.Time
	ExpiresAt   time.Time
	TaskPurpose string // recorded with the task of a root mandate
	// AssertionID and AssertionExpiry are the jti and exp of the client
	// assertion (or actor token) that asked for this mandate. Assertions
	// are single-use; see UsedAssertions.
	AssertionID     string
	AssertionExpiry time.Time
	// ApprovalID, if set, is the approval this issuance uses: recording
	// the issuance moves it from approved to used in the same transaction,
	// and fails with ECONFLICT if it is not approved (used already, say).
	ApprovalID string
}

// IssuanceLog is the write-ahead seam. An issuer MUST NOT return a mandate
// to its caller until RecordIssuance returned nil for it.
//
// RecordIssuance stores rec and appends ev to the audit log in one
// transaction. It returns nil once both are durable (on disk, fsynced),
// ECONFLICT if a mandate with that ID exists, and EUNAVAILABLE if they
// cannot be made durable; in every error case nothing of either is stored.
type IssuanceLog interface {
	RecordIssuance(ctx context.Context, rec *Issuance, ev *Event) error
}

// EventLog appends events to the audit log.
//
// Append returns nil once the events are durable, in the order given,
// EINVALID if one does not encode, EUNAVAILABLE if they cannot be made
// durable (then none is stored).
type EventLog interface {
	Append(ctx context.Context, evs ...*Event) error
}

// MaxEventsPerQuery bounds the events one query returns.
const MaxEventsPerQuery = 10000

// EventFilter selects events from the audit log. Zero fields do not filter.
type EventFilter struct {
	Task, Mandate, Agent, Type string
	Since, Until               time.Time // event time in [Since, Until)
	After                      int64     // log position >= After
	Limit                      int       // at most this many (MaxEventsPerQuery)
	Last                       bool      // the last Limit matches rather than the first
}

// LoggedEvent is an event with its position in the log.
type LoggedEvent struct {
	Index int64 `json:"index"`
	*Event
}

// EventQuerier answers queries over the audit log.
type EventQuerier interface {
	Events(ctx context.Context, f EventFilter) ([]LoggedEvent, error)
}

// AgentGetter finds a registered agent by its SPIFFE ID.
//
// Agent returns ENOTFOUND if there is no such agent. The returned value is
// shared: callers MUST NOT modify it.
type AgentGetter interface {
	Agent(ctx context.Context, id string) (*Agent, error)
}

// AgentStore is the registry of agents.
type AgentStore interface {
	AgentGetter
	// CreateAgent stores a new agent and appends ev (if not nil) to the
	// audit log, in one transaction; ECONFLICT if its ID or name exists.
	CreateAgent(ctx context.Context, a *Agent, ev *Event) error
	// Agents lists every agent, ordered by name.
	Agents(ctx context.Context) ([]*Agent, error)
	// SetAgentStatus changes an agent's status, appends ev (if not nil),
	// and returns the updated agent; ENOTFOUND if there is no such agent.
	// As for RevocationStore.Revoke, the new status MUST be what Agent
	// answers before any write returns whose event follows ev in the log.
	SetAgentStatus(ctx context.Context, id string, status AgentStatus, ev *Event) (*Agent, error)
}

// Revocation records that a mandate was revoked before its expiry.
type Revocation struct {
	MandateID string
	ExpiresAt time.Time // the mandate's own expiry: after it the record may be forgotten
	RevokedAt time.Time
	RevokedBy string // who asked: "admin" or the holder's agent ID
	Reason    string
}

// RevocationChecker answers whether a mandate is revoked. Implementations
// MUST answer from memory or a local index: it is on every verification.
type RevocationChecker interface {
	IsRevoked(ctx context.Context, mandateID string) (bool, error)
}

// RevocationStore records and answers revocations.
type RevocationStore interface {
	RevocationChecker
	// Revoke records r and appends ev (if not nil) in one transaction.
	// Revoking a revoked mandate again is not an error. The revocation MUST
	// be in force (IsRevoked answers true) before Append, or any other
	// write, returns for an event that follows ev in the log: a verifier
	// that checks again once its call's record is durable relies on it.
	Revoke(ctx context.Context, r *Revocation, ev *Event) error
}

// IssuanceGetter finds the issuance record of a mandate; ENOTFOUND if the
// mandate was never issued here.
type IssuanceGetter interface {
	Issuance(ctx context.Context, mandateID string) (*Issuance, error)
}

// AssertionRecorder durably records a client assertion that was used
// without obtaining a mandate (at the revocation endpoint, say), so that
// UsedAssertions still knows it after a restart. It returns once the record
// is durable; EUNAVAILABLE otherwise.
type AssertionRecorder interface {
	RecordAssertion(ctx context.Context, agentID, jti string, exp time.Time) error
}

// UsedAssertions lists the client assertions that obtained mandates and
// have not expired, so that an issuer's replay set survives a restart.
//
// UsedAssertions calls fn for every assertion recorded (with an issuance,
// or by AssertionRecorder) at or after since that expires after now; it
// stops at fn's first error.
type UsedAssertions interface {
	UsedAssertions(ctx context.Context, since, now time.Time, fn func(agentID, jti string, exp time.Time) error) error
}

// PutDetails adds to d the details of an issuance event (mandate.issued or
// mandate.delegated) that carry rec's fields beyond the event's own (task,
// mandate, parent, agent, subject, and the audience as the resource):
// scope, iat_ms, exp_ms, kid, jkt, purpose, assertion, assertion_exp_ms
// and approval (docs/events.md). The event is the durable record of the
// issuance: IssuanceOf reads it back.
func (rec *Issuance) PutDetails(d map[string]any) {
	d["scope"] = rec.Scope
	d["iat_ms"] = rec.IssuedAt.UnixMilli()
	d["exp_ms"] = rec.ExpiresAt.UnixMilli()
	d["kid"] = rec.KeyID
	if rec.JKT != "" {
		d["jkt"] = rec.JKT
	}
	if rec.TaskPurpose != "" {
		d["purpose"] = rec.TaskPurpose
	}
	if rec.AssertionID != "" {
		d["assertion"] = rec.AssertionID
		d["assertion_exp_ms"] = rec.AssertionExpiry.UnixMilli()
	}
	if rec.ApprovalID != "" {
		d["approval"] = rec.ApprovalID
	}
}

// NewIssuanceEvent returns the issuance event of rec at time t: a
// mandate.delegated event if rec has a parent, mandate.issued otherwise.
// An issuer adds the chain and what policy said.
func NewIssuanceEvent(rec *Issuance, t time.Time) *Event {
	typ, action := EventMandateIssued, "mint"
	if rec.ParentID != "" {
		typ, action = EventMandateDelegated, "delegate"
	}
	d := map[string]any{}
	rec.PutDetails(d)
	return &Event{V: EventVersion, Time: t.UnixNano(), Type: typ, Task: rec.TaskID, Mandate: rec.MandateID,
		Parent: rec.ParentID, Agent: rec.AgentID, Subject: rec.Subject, Action: action,
		Resource: strings.Join(rec.Audience, " "), Outcome: OutcomeOK, Details: d}
}

// IssuanceOf returns the issuance record that an issuance event carries
// (see PutDetails); EINVALID if ev is not an issuance event or lacks a
// field of the record. A delegated mandate's TaskPurpose is its task's,
// which the root's event carries: IssuanceOf leaves it empty.
func IssuanceOf(ev *Event) (*Issuance, error) {
	if ev == nil || (ev.Type != EventMandateIssued && ev.Type != EventMandateDelegated) {
		return nil, Errorf(EINVALID, "not an issuance event")
	}
	if ev.Mandate == "" || ev.Task == "" || ev.Agent == "" || (ev.Type == EventMandateDelegated) != (ev.Parent != "") {
		return nil, Errorf(EINVALID, "issuance event of %q: mandate, task, agent or parent missing", ev.Mandate)
	}
	rec := &Issuance{MandateID: ev.Mandate, TaskID: ev.Task, ParentID: ev.Parent, AgentID: ev.Agent, Subject: ev.Subject}
	if ev.Resource != "" {
		rec.Audience = strings.Split(ev.Resource, " ")
	}
	str := func(k string, required bool) (string, error) {
		switch v := ev.Details[k].(type) {
		case string:
			return v, nil
		case nil:
			if !required {
				return "", nil
			}
		}
		return "", Errorf(EINVALID, "issuance event of %s: details.%s is missing or not a string", ev.Mandate, k)
	}
	msTime := func(k string, required bool) (time.Time, error) {
		var n int64
		switch v := ev.Details[k].(type) {
		case json.Number:
			var err error
			if n, err = v.Int64(); err != nil {
				return time.Time{}, Errorf(EINVALID, "issuance event of %s: details.%s is not an integer", ev.Mandate, k)
			}
		case int64:
			n = v
		case nil:
			if !required {
				return time.Time{}, nil
			}
			return time.Time{}, Errorf(EINVALID, "issuance event of %s: details.%s is missing", ev.Mandate, k)
		default:
			return time.Time{}, Errorf(EINVALID, "issuance event of %s: details.%s is not an integer", ev.Mandate, k)
		}
		return time.UnixMilli(n), nil
	}
	var err error
	for _, f := range []struct {
		p        *string
		k        string
		required bool
	}{{&rec.Scope, "scope", true}, {&rec.KeyID, "kid", true}, {&rec.JKT, "jkt", false},
		{&rec.TaskPurpose, "purpose", false}, {&rec.AssertionID, "assertion", false}, {&rec.ApprovalID, "approval", false}} {
		if *f.p, err = str(f.k, f.required); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		p        *time.Time
		k        string
		required bool
	}{{&rec.IssuedAt, "iat_ms", true}, {&rec.ExpiresAt, "exp_ms", true}, {&rec.AssertionExpiry, "assertion_exp_ms", rec.AssertionID != ""}} {
		if *f.p, err = msTime(f.k, f.required); err != nil {
			return nil, err
		}
	}
	return rec, nil
}
