package issuer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
)

// Approval defaults.
const (
	// DefaultApprovalTimeout is how long a person has to decide; undecided,
	// the request is denied. It is also cut to the parent mandate's expiry.
	DefaultApprovalTimeout = 5 * time.Minute
	// MaxWait bounds how long one token request waits for a decision
	// (wait_ms); a client that needs longer polls again.
	MaxWait = 60 * time.Second
	// PollInterval is the interval a client polling a pending approval is
	// asked to keep (RFC 8628 §3.5 "interval", in seconds).
	PollInterval = time.Second
)

// PendingError is the answer to a delegation that waits for a person's
// approval: OAuth authorization_pending (as in CIBA and RFC 8628 §3.5),
// with the approval's ID for polling.
type PendingError struct {
	Approval *mandate.Approval
}

func (e *PendingError) Error() string {
	fresh := "a fresh actor token"
	if e.Approval.ParentMandate == "" {
		fresh = "a fresh client assertion"
	}
	return fmt.Sprintf("approval %s is pending: %s; ask %s, then repeat the request with approval_id=%s (and %s)",
		e.Approval.ID, e.Approval.Reason, strings.Join(e.Approval.Approvers, ", "), e.Approval.ID, fresh)
}

// Unwrap lets mandate.ErrorCode and the OAuth mapping see it as
// authorization_pending.
func (e *PendingError) Unwrap() error {
	return &mandate.Error{Code: mandate.EFORBIDDEN, OAuth: "authorization_pending", Message: e.Error()}
}

// approvalFields are what an approval request records.
type approvalFields struct {
	action   string // mandate.ApprovalMint or mandate.ApprovalDelegate
	task     string // the task; for a root mint, the ID the new task will get
	parent   string // the parent mandate; "" for a root mint
	agent    string // the agent asking: the parent's holder, or the minting agent
	actorKey string // who would receive the mandate (actorKey)
	actorID  string
	subject  string
	chain    []string  // the asking agent's, outermost first
	until    time.Time // no approval outlives this (the parent's expiry)
	scopes   mandate.ScopeSet
	aud      mandate.Audience
	hash     string
	rule     string
	parties  mandate.ApprovalParties // who decides: parties.Approvers()
	purpose  string                  // the task's purpose, for the person deciding
	risk     int                     // the task's risk score now
}

// approval returns the approved approval this request may use, or the
// error that says why it may not (yet): a new request is recorded as
// pending; a known one must be bound to this very request.
func (is *Issuer) approval(ctx context.Context, approvalID string, ttl, wait time.Duration, f approvalFields, now time.Time) (*mandate.Approval, error) {
	if is.cfg.Approvals == nil {
		return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "access_denied", "%s, and this server takes no approvals", f.rule)
	}
	var ap *mandate.Approval
	if approvalID == "" {
		exp := now.Add(is.cfg.ApprovalTimeout)
		if !f.until.IsZero() && exp.After(f.until) {
			exp = f.until
		}
		ap = &mandate.Approval{
			ID: mandate.NewID(mandate.ApprovalIDPrefix, now), Status: mandate.ApprovalPending, Action: f.action,
			Task: f.task, ParentMandate: f.parent, Agent: f.agent, Actor: f.actorKey,
			Subject: f.subject, Chain: f.chain, Purpose: f.purpose, Risk: f.risk,
			Scope: f.scopes.String(), Audience: f.aud, TTLMillis: ttl.Milliseconds(),
			Reason: f.rule, Approvers: f.parties.Approvers(), RequestHash: f.hash, CreatedAt: now, ExpiresAt: exp,
		}
		ev := approvalEvent(mandate.EventApprovalRequested, ap, now)
		ev.Details["actor_id"] = f.actorID
		if err := is.cfg.Approvals.CreateApproval(ctx, ap, is.cfg.ApprovalLimits, ev); err != nil {
			var limit *mandate.PendingLimitError
			if errors.As(err, &limit) {
				return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "access_denied", "%s: this request was not filed", limit.Error())
			}
			return nil, err
		}
	} else {
		var err error
		if ap, err = is.cfg.Approvals.Approval(ctx, approvalID); mandate.ErrorCode(err) == mandate.ENOTFOUND {
			return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_grant", "approval %s does not exist", approvalID)
		} else if err != nil {
			return nil, err
		}
		if ap.RequestHash != f.hash {
			return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_grant", "approval %s was given for another request: an approval is bound to the agent, parent, scope, audience and lifetime it was asked for", ap.ID)
		}
	}
	if ap.Status == mandate.ApprovalPending && wait > 0 {
		var err error
		if ap, err = is.wait(ctx, ap, min(wait, MaxWait)); err != nil {
			return nil, err
		}
	}
	if ap.Status == mandate.ApprovalPending && !now.Before(ap.ExpiresAt) {
		ap = is.expire(ctx, ap, now)
	}
	switch ap.Status {
	case mandate.ApprovalApproved:
		// Checked again at the moment of use: a decision by someone the
		// rule does not allow (an approval of an older version, a store
		// written by hand) allows nothing.
		if err := is.checkDecider(ctx, ap); err != nil {
			return nil, err
		}
		return ap, nil
	case mandate.ApprovalPending:
		return nil, &PendingError{Approval: ap}
	case mandate.ApprovalUsed:
		return nil, mandate.OAuthErrorf(mandate.ECONFLICT, "invalid_grant", "approval %s was used already: an approval allows one delegation", ap.ID)
	}
	if ap.DecidedBy == "system" {
		return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "expired_token", "approval %s timed out undecided at %s, which is a denial", ap.ID, ap.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "access_denied", "approval %s was denied by %s%s", ap.ID, ap.DecidedBy, noteSuffix(ap.Note))
}

// checkDecider checks that the person who approved ap may decide it.
func (is *Issuer) checkDecider(ctx context.Context, ap *mandate.Approval) error {
	email, ok := strings.CutPrefix(ap.DecidedBy, "user:")
	var err error = mandate.Errorf(mandate.EFORBIDDEN, "%s is not a person", ap.DecidedBy)
	if ok {
		err = ap.MayDecide(ctx, is.cfg.Agents, email)
	}
	if mandate.ErrorCode(err) == mandate.EFORBIDDEN {
		return mandate.OAuthErrorf(mandate.EFORBIDDEN, "access_denied", "approval %s allows nothing: %s; ask for a new approval (repeat the request without approval_id)", ap.ID, mandate.ErrorMessage(err))
	}
	return err
}

func noteSuffix(note string) string {
	if note == "" {
		return ""
	}
	return ": " + note
}

// wait waits up to d for ap to be decided and returns it as it then is.
func (is *Issuer) wait(ctx context.Context, ap *mandate.Approval, d time.Duration) (*mandate.Approval, error) {
	ch := is.waiters.watch(ap.ID)
	defer is.waiters.unwatch(ap.ID, ch)
	// Read again after watching: a decision made before the watch began
	// would otherwise be missed.
	cur, err := is.cfg.Approvals.Approval(ctx, ap.ID)
	if err != nil || cur.Status != mandate.ApprovalPending {
		return cur, err
	}
	if left := ap.ExpiresAt.Sub(is.cfg.Now()); left < d {
		d = max(left, 0)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	case <-ctx.Done():
		// The caller gave up, or the server is stopping: the approval is
		// as it was, pending, and the client may poll again.
		return ap, nil
	}
	return is.cfg.Approvals.Approval(ctx, ap.ID)
}

// expire denies a pending approval whose time ran out, as "system".
func (is *Issuer) expire(ctx context.Context, ap *mandate.Approval, now time.Time) *mandate.Approval {
	return is.withdraw(ctx, ap, now, "timed out undecided")
}

// withdraw denies a pending approval on the system's behalf, for reason.
func (is *Issuer) withdraw(ctx context.Context, ap *mandate.Approval, now time.Time, reason string) *mandate.Approval {
	ev := approvalEvent(mandate.EventApprovalDenied, ap, now)
	ev.Outcome, ev.Reason, ev.By = mandate.OutcomeDeny, reason, "system"
	got, err := is.cfg.Approvals.DecideApproval(ctx, ap.ID, mandate.ApprovalDenied, "system", reason, now, ev)
	if err != nil {
		// Decided meanwhile, or the store failed: read what it is now.
		if cur, err := is.cfg.Approvals.Approval(ctx, ap.ID); err == nil {
			return cur
		}
		return ap
	}
	is.waiters.notify(ap.ID)
	return got
}

// ExpireApprovals denies every pending approval whose time ran out, each
// with its audit event, and returns how many. Call it periodically: a
// timeout is a denial, and its event should not wait for the next poll.
func (is *Issuer) ExpireApprovals(ctx context.Context) (int, error) {
	if is.cfg.Approvals == nil {
		return 0, nil
	}
	now := is.cfg.Now()
	n := 0
	// Only those whose time ran out, page by page: however many others
	// wait, none is left pending past its expiry.
	for {
		list, err := is.cfg.Approvals.Approvals(ctx, mandate.ApprovalFilter{Status: mandate.ApprovalPending, ExpiredBy: now})
		if err != nil {
			return n, err
		}
		denied := 0
		for _, ap := range list {
			if is.expire(ctx, ap, now).Status == mandate.ApprovalDenied {
				denied++
			}
		}
		n += denied
		if denied == 0 || ctx.Err() != nil {
			return n, nil
		}
	}
}

// WithdrawApprovals denies the pending approvals of a task, on the
// system's behalf, for reason (its tree was revoked: nothing they would
// allow can happen, and approvers need not see them), and returns how many.
func (is *Issuer) WithdrawApprovals(ctx context.Context, task, reason string) (int, error) {
	if is.cfg.Approvals == nil || task == "" {
		return 0, nil
	}
	list, err := is.cfg.Approvals.Approvals(ctx, mandate.ApprovalFilter{Status: mandate.ApprovalPending, Task: task})
	if err != nil {
		return 0, err
	}
	now := is.cfg.Now()
	n := 0
	for _, ap := range list {
		if is.withdraw(ctx, ap, now, reason).Status == mandate.ApprovalDenied {
			n++
		}
	}
	return n, nil
}

// Decide records a person's decision on a pending approval. approver is
// the person's email, authenticated by the caller (an approver
// credential, never the admin's). A person the rule does not let decide
// it (mandate.Approval.MayDecide: not among its approvers, or the owner of
// the agent that asked) is refused (EFORBIDDEN), and so is an approver
// disabled meanwhile; each attempt is audited.
func (is *Issuer) Decide(ctx context.Context, id, approver string, approve bool, note string) (*mandate.Approval, error) {
	if is.cfg.Approvals == nil {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "this server takes no approvals")
	}
	if len(note) > MaxPurposeLength {
		return nil, mandate.Errorf(mandate.EINVALID, "note: at most %d bytes", MaxPurposeLength)
	}
	if err := checkPurpose(note); err != nil {
		return nil, mandate.Errorf(mandate.EINVALID, "note must be printable text of at most %d bytes", MaxPurposeLength)
	}
	// Written to the audit log and shown to whoever reads the approval.
	if err := mandate.RefuseSecret("note", note, "a note is prose for the people who audit the decision"); err != nil {
		return nil, err
	}
	ap, err := is.cfg.Approvals.Approval(ctx, id)
	if err != nil {
		return nil, err
	}
	now := is.cfg.Now()
	by := "user:" + approver
	refuse := func(why error) (*mandate.Approval, error) {
		ev := approvalEvent(mandate.EventDecision, ap, now)
		ev.Action, ev.Outcome, ev.By = "approve", mandate.OutcomeDeny, by
		ev.Reason = mandate.ClipReason(mandate.ErrorMessage(why))
		if err := is.cfg.Events.Append(ctx, ev); err != nil {
			return nil, err
		}
		return nil, why
	}
	if err := ap.MayDecide(ctx, is.cfg.Agents, approver); mandate.ErrorCode(err) == mandate.EFORBIDDEN {
		return refuse(err)
	} else if err != nil {
		return nil, err
	}
	if ap.Status == mandate.ApprovalPending && !now.Before(ap.ExpiresAt) {
		ap = is.expire(ctx, ap, now)
		return nil, mandate.Errorf(mandate.ECONFLICT, "approval %s timed out at %s: it is %s", ap.ID, ap.ExpiresAt.UTC().Format(time.RFC3339), ap.Status)
	}
	to, typ, outcome := mandate.ApprovalDenied, mandate.EventApprovalDenied, mandate.OutcomeDeny
	if approve {
		to, typ, outcome = mandate.ApprovalApproved, mandate.EventApprovalGranted, mandate.OutcomeOK
	}
	ev := approvalEvent(typ, ap, now)
	ev.Outcome, ev.By, ev.Reason = outcome, by, note
	got, err := is.cfg.Approvals.DecideApproval(ctx, id, to, by, note, now, ev)
	if mandate.ErrorCode(err) == mandate.EFORBIDDEN {
		// Disabled between the authentication of the credential and now.
		return refuse(mandate.Errorf(mandate.EFORBIDDEN, "%s may not decide approval %s: they are not an active approver", approver, id))
	} else if err != nil {
		return nil, err
	}
	is.waiters.notify(id)
	is.cfg.Logger.Info("approval decided", "approval", id, "status", got.Status, "by", by)
	return got, nil
}

// approvalEvent is the audit event of a step of ap. Every step names the
// chain; the request's event also says what the person deciding sees.
func approvalEvent(typ string, ap *mandate.Approval, now time.Time) *mandate.Event {
	ev := &mandate.Event{
		V: mandate.EventVersion, Time: now.UnixNano(), Type: typ,
		Task: ap.Task, Mandate: ap.ParentMandate, Agent: ap.Agent, Subject: ap.Subject, Chain: ap.Chain,
		Action: ap.Action, Resource: strings.Join(ap.Audience, " "), Reason: ap.Reason,
		Details: map[string]any{"approval": ap.ID, "actor": ap.Actor, "scope": ap.Scope,
			"approvers": ap.Approvers, "expires_ms": ap.ExpiresAt.UnixMilli()},
	}
	if typ == mandate.EventApprovalRequested {
		ev.Details["risk"] = ap.Risk
		if ap.Purpose != "" {
			ev.Details["purpose"] = ap.Purpose
		}
	}
	return ev
}

// waiters wakes the token requests waiting for an approval's decision.
type waiters struct {
	mu sync.Mutex
	m  map[string][]chan struct{}
}

func (w *waiters) watch(id string) chan struct{} {
	ch := make(chan struct{})
	w.mu.Lock()
	if w.m == nil {
		w.m = make(map[string][]chan struct{})
	}
	w.m[id] = append(w.m[id], ch)
	w.mu.Unlock()
	return ch
}

func (w *waiters) unwatch(id string, ch chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	list := w.m[id]
	for i, c := range list {
		if c == ch {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(w.m, id)
	} else {
		w.m[id] = list
	}
}

func (w *waiters) notify(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ch := range w.m[id] {
		close(ch)
	}
	delete(w.m, id)
}
