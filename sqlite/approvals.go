package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
)

var (
	_ mandate.ApprovalStore = (*Store)(nil)
	_ mandate.ApproverStore = (*Store)(nil)
)

// maxApprovals is the default and the maximum of ApprovalFilter.Limit.
const maxApprovals = 1000

const approvalColumns = `id, status, task, parent_mandate, agent, actor, subject, scope, audience, ttl_ms,
	reason, approvers, request_hash, created_at, expires_at, decided_at, decided_by, note,
	action, registered, chain, purpose, risk, server, tool, arguments, arguments_bytes, arguments_shortened, secrets`

// timeOrZero reads a decided_at: 0 (undecided) is the zero time, not 1970.
func timeOrZero(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

func scanApproval(row interface{ Scan(...any) error }) (*mandate.Approval, error) {
	var a mandate.Approval
	var status, aud, approvers, registered, chain, args, secrets string
	var created, expires, decided int64
	var shortened bool
	if err := row.Scan(&a.ID, &status, &a.Task, &a.ParentMandate, &a.Agent, &a.Actor, &a.Subject, &a.Scope, &aud, &a.TTLMillis,
		&a.Reason, &approvers, &a.RequestHash, &created, &expires, &decided, &a.DecidedBy, &a.Note,
		&a.Action, &registered, &chain, &a.Purpose, &a.Risk, &a.Server, &a.Tool, &args, &a.ArgumentsBytes, &shortened, &secrets); err != nil {
		return nil, err
	}
	a.Status = mandate.ApprovalStatus(status)
	a.Audience, a.Approvers, a.Chain, a.Secrets = splitList(aud), splitList(approvers), splitList(chain), splitList(secrets)
	if args != "" {
		a.Arguments = json.RawMessage(args)
	}
	a.ArgumentsShortened = shortened
	a.CreatedAt, a.ExpiresAt, a.DecidedAt = time.UnixMilli(created).UTC(), time.UnixMilli(expires).UTC(), timeOrZero(decided)
	return &a, nil
}

// validateApproval checks what CreateApproval stores. Lists are stored
// space-separated, so their items must be non-empty and free of spaces to
// come back as they went in.
func validateApproval(a *mandate.Approval) error {
	switch {
	case !strings.HasPrefix(a.ID, mandate.ApprovalIDPrefix) || len(a.ID) == len(mandate.ApprovalIDPrefix):
		return mandate.Errorf(mandate.EINVALID, "approval id %q does not start with %q: mint it with mandate.NewID", a.ID, mandate.ApprovalIDPrefix)
	case a.Status != "" && a.Status != mandate.ApprovalPending:
		return mandate.Errorf(mandate.EINVALID, "approval %s is %s: a new approval is pending", a.ID, a.Status)
	case a.RequestHash == "":
		return mandate.Errorf(mandate.EINVALID, "approval %s has no request hash: an approval must be bound to its request", a.ID)
	case len(a.Approvers) == 0:
		return mandate.Errorf(mandate.EINVALID, "approval %s names no approvers: nobody could decide it", a.ID)
	case a.ExpiresAt.IsZero():
		return mandate.Errorf(mandate.EINVALID, "approval %s has no expiry", a.ID)
	case a.Action != mandate.ApprovalMint && a.Action != mandate.ApprovalDelegate && a.Action != mandate.ApprovalToolCall:
		return mandate.Errorf(mandate.EINVALID, "approval %s: action %q: use %s, %s or %s", a.ID, a.Action, mandate.ApprovalMint, mandate.ApprovalDelegate, mandate.ApprovalToolCall)
	case a.Agent == "":
		return mandate.Errorf(mandate.EINVALID, "approval %s names no agent: its pending approvals could not be counted", a.ID)
	case len(a.Arguments) > mandate.MaxApprovalArguments:
		return mandate.Errorf(mandate.EINVALID, "approval %s: arguments of %d bytes, over %d: shorten them first", a.ID, len(a.Arguments), mandate.MaxApprovalArguments)
	case len(a.Arguments) > 0 && !json.Valid(a.Arguments):
		return mandate.Errorf(mandate.EINVALID, "approval %s: arguments are not JSON", a.ID)
	}
	for _, list := range [][]string{a.Chain, a.Secrets} {
		for _, x := range list {
			if x == "" || strings.Contains(x, " ") {
				return mandate.Errorf(mandate.EINVALID, "approval %s: invalid list item %q: it may not be empty or hold a space", a.ID, x)
			}
		}
	}
	for _, ap := range a.Approvers {
		if err := mandate.ValidateOwner(ap); err != nil {
			return mandate.Errorf(mandate.EINVALID, "approval %s: invalid approver %q: give a person's email address", a.ID, ap)
		}
	}
	for _, aud := range a.Audience {
		if aud == "" || strings.Contains(aud, " ") {
			return mandate.Errorf(mandate.EINVALID, "approval %s: invalid audience %q: it may not be empty or hold a space", a.ID, aud)
		}
	}
	return nil
}

// CreateApproval implements mandate.ApprovalStore. An empty Status means
// pending; any other status is refused (EINVALID), as is an approval with
// no ID of the form ap_<ULID>, no request hash, no approvers, no agent, no
// expiry or an unknown action. ECONFLICT if an approval with that ID
// exists. The pending approvals of the asking agent's registered agent and
// of the task are counted in the write's transaction, so that writers
// racing cannot pass the limits together.
func (s *Store) CreateApproval(ctx context.Context, a *mandate.Approval, lim mandate.ApprovalLimits, ev *mandate.Event) error {
	if err := validateApproval(a); err != nil {
		return err
	}
	lim, err := lim.WithDefaults()
	if err != nil {
		return err
	}
	reg := mandate.RegisteredAncestor(a.Agent)
	return s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
		for _, c := range []struct {
			of, name, col string
			limit         int
		}{{"agent", reg, "registered", lim.PerAgent}, {"task", a.Task, "task", lim.PerTask}} {
			var n int
			err := tx.QueryRowContext(ctx, "SELECT count(*) FROM approvals WHERE "+c.col+" = ? AND status = 'pending' AND expires_at > ?",
				c.name, ms(a.CreatedAt)).Scan(&n)
			if err != nil {
				return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
			}
			if n >= c.limit {
				return &mandate.PendingLimitError{Of: c.of, Name: c.name, Pending: n, Limit: c.limit}
			}
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO approvals("+approvalColumns+") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
			a.ID, string(mandate.ApprovalPending), a.Task, a.ParentMandate, a.Agent, a.Actor, a.Subject, a.Scope,
			strings.Join(a.Audience, " "), a.TTLMillis, a.Reason, strings.Join(a.Approvers, " "), a.RequestHash,
			ms(a.CreatedAt), ms(a.ExpiresAt), int64(0), "", "",
			a.Action, reg, strings.Join(a.Chain, " "), a.Purpose, a.Risk, a.Server, a.Tool, string(a.Arguments),
			a.ArgumentsBytes, a.ArgumentsShortened, strings.Join(a.Secrets, " "))
		if isUnique(err) {
			return mandate.Errorf(mandate.ECONFLICT, "approval %s exists", a.ID)
		}
		if err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		return nil
	}, nil, ev)
}

// Approval implements mandate.ApprovalStore.
func (s *Store) Approval(ctx context.Context, id string) (*mandate.Approval, error) {
	a, err := scanApproval(s.db.QueryRowContext(ctx, "SELECT "+approvalColumns+" FROM approvals WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "no approval %q", id)
	}
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	return a, nil
}

// Approvals implements mandate.ApprovalStore: newest first (IDs sort by
// creation time), at most f.Limit, and at most maxApprovals, after every
// filter (f.Approver included) applied.
func (s *Store) Approvals(ctx context.Context, f mandate.ApprovalFilter) ([]*mandate.Approval, error) {
	limit := f.Limit
	if limit <= 0 || limit > maxApprovals {
		limit = maxApprovals
	}
	q := "SELECT " + approvalColumns + " FROM approvals WHERE 1=1"
	var args []any
	if f.Status != "" {
		q += " AND status = ?"
		args = append(args, string(f.Status))
	}
	if f.Task != "" {
		q += " AND task = ?"
		args = append(args, f.Task)
	}
	if f.Approver != "" {
		if mandate.ValidateOwner(f.Approver) != nil {
			return nil, nil // no approval names what is not an email
		}
		// approvers is space-separated and no email holds a space: the
		// person is named iff " email " is in " approvers ".
		q += " AND instr(' ' || approvers || ' ', ' ' || ? || ' ') > 0"
		args = append(args, f.Approver)
	}
	if !f.ExpiredBy.IsZero() {
		q += " AND expires_at <= ?"
		args = append(args, ms(f.ExpiredBy))
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	defer rows.Close()
	var out []*mandate.Approval
	for rows.Next() {
		a, err := scanApproval(rows)
		if err != nil {
			return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	return out, nil
}

// DecideApproval implements mandate.ApprovalStore. The decision is one
// conditional UPDATE (WHERE status = 'pending', and for a person, while
// they are an approver not disabled), so of two deciders racing, exactly
// one wins and the other gets ECONFLICT, and an approver disabled while
// their decision was on its way gets EFORBIDDEN. EINVALID if to is neither
// approved nor denied, or by is empty; a zero at means now.
func (s *Store) DecideApproval(ctx context.Context, id string, to mandate.ApprovalStatus, by, note string, at time.Time, ev *mandate.Event) (*mandate.Approval, error) {
	if to != mandate.ApprovalApproved && to != mandate.ApprovalDenied {
		return nil, mandate.Errorf(mandate.EINVALID, "an approval can be decided as %s or %s, not %q", mandate.ApprovalApproved, mandate.ApprovalDenied, to)
	}
	if by == "" {
		return nil, mandate.Errorf(mandate.EINVALID, "a decision of approval %s must name who decided", id)
	}
	if at.IsZero() {
		at = s.cfg.Now()
	}
	var updated *mandate.Approval
	err := s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
		res, err := tx.ExecContext(ctx, `UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, note = ?
			WHERE id = ? AND status = 'pending' AND (? = 'system' OR EXISTS
				(SELECT 1 FROM approvers WHERE 'user:' || email = ? AND disabled_at = 0))`,
			string(to), ms(at), by, note, id, by, by)
		if err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		if n, err := res.RowsAffected(); err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		} else if n == 0 {
			var status string
			err := tx.QueryRowContext(ctx, "SELECT status FROM approvals WHERE id = ?", id).Scan(&status)
			if errors.Is(err, sql.ErrNoRows) {
				return mandate.Errorf(mandate.ENOTFOUND, "no approval %q", id)
			}
			if err != nil {
				return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
			}
			if status != string(mandate.ApprovalPending) {
				return mandate.Errorf(mandate.ECONFLICT, "approval %s is %s, not pending", id, status)
			}
			return mandate.Errorf(mandate.EFORBIDDEN, "%s is not an active approver: their decisions are refused", by)
		}
		updated, err = scanApproval(tx.QueryRowContext(ctx, "SELECT "+approvalColumns+" FROM approvals WHERE id = ?", id))
		if err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		return nil
	}, nil, ev)
	if err != nil {
		return nil, err
	}
	return updated, nil
}

// useApproval moves an approved approval to used, in the transaction that
// records the issuance it allowed: exactly one issuance can use it.
func useApproval(ctx context.Context, tx *writeTx, id string) error {
	res, err := tx.ExecContext(ctx, "UPDATE approvals SET status = 'used' WHERE id = ? AND status = 'approved'", id)
	if err != nil {
		return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	n, err := res.RowsAffected()
	if err != nil {
		return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	if n == 0 {
		return mandate.Errorf(mandate.ECONFLICT, "approval %s is not approved or was used already", id)
	}
	return nil
}

// CreateApprover implements mandate.ApproverStore: EINVALID unless the
// email is valid and the token hash is a SHA-256 (32 bytes); ECONFLICT if
// an active approver with that email, or any with that credential,
// exists. A disabled approver of that email is replaced, in one upsert.
func (s *Store) CreateApprover(ctx context.Context, a *mandate.Approver, ev *mandate.Event) error {
	if err := mandate.ValidateOwner(a.Email); err != nil {
		return mandate.Errorf(mandate.EINVALID, "invalid approver %q: give a person's email address", a.Email)
	}
	if len(a.TokenHash) != 32 {
		return mandate.Errorf(mandate.EINVALID, "approver %s: the token hash is %d bytes, want a SHA-256 (32 bytes)", a.Email, len(a.TokenHash))
	}
	return s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO approvers(email, token_hash, created_at, disabled_at) VALUES(?,?,?,0)
			ON CONFLICT(email) DO UPDATE SET token_hash = excluded.token_hash, created_at = excluded.created_at, disabled_at = 0
			WHERE approvers.disabled_at != 0`, a.Email, a.TokenHash, ms(a.CreatedAt))
		switch {
		case isUnique(err):
			return mandate.Errorf(mandate.ECONFLICT, "approver %s: another approver has that credential; hint: issue a new one", a.Email)
		case err != nil:
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		if n, err := res.RowsAffected(); err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		} else if n == 0 {
			return mandate.Errorf(mandate.ECONFLICT, "approver %s exists", a.Email)
		}
		return nil
	}, nil, ev)
}

// ApproverByTokenHash implements mandate.ApproverStore. It looks the hash
// up by the unique index, which is not a constant-time comparison, and
// need not be: the credential is a random token of high entropy, so what
// the timing of a lookup may tell about a hash an attacker chose brings
// them no closer to a token that hashes to a stored one. The caller
// compares the digest it gets back in constant time. A disabled approver
// is EUNAUTHORIZED, and is not returned.
func (s *Store) ApproverByTokenHash(ctx context.Context, h []byte) (*mandate.Approver, error) {
	if len(h) != 32 {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "no approver has that credential")
	}
	a, err := scanApprover(s.db.QueryRowContext(ctx, "SELECT email, token_hash, created_at, disabled_at FROM approvers WHERE token_hash = ?", h))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "no approver has that credential")
	}
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	if !a.DisabledAt.IsZero() {
		return nil, mandate.Errorf(mandate.EUNAUTHORIZED, "this approver credential was disabled at %s", a.DisabledAt.Format(time.RFC3339))
	}
	return a, nil
}

func scanApprover(row interface{ Scan(...any) error }) (*mandate.Approver, error) {
	var a mandate.Approver
	var created, disabled int64
	if err := row.Scan(&a.Email, &a.TokenHash, &created, &disabled); err != nil {
		return nil, err
	}
	a.CreatedAt, a.DisabledAt = time.UnixMilli(created).UTC(), timeOrZero(disabled)
	return &a, nil
}

// Approvers implements mandate.ApproverStore.
func (s *Store) Approvers(ctx context.Context) ([]*mandate.Approver, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT email, token_hash, created_at, disabled_at FROM approvers ORDER BY email")
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	defer rows.Close()
	var out []*mandate.Approver
	for rows.Next() {
		a, err := scanApprover(rows)
		if err != nil {
			return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
	}
	return out, nil
}

// DisableApprover implements mandate.ApproverStore: one conditional
// UPDATE, in the transaction of ev, so that a decision racing with it
// (DecideApproval checks the approver in its own) either comes before or
// is refused. A zero at means now.
func (s *Store) DisableApprover(ctx context.Context, email string, at time.Time, ev *mandate.Event) (*mandate.Approver, error) {
	if at.IsZero() {
		at = s.cfg.Now()
	}
	if ms(at) <= 0 {
		return nil, mandate.Errorf(mandate.EINVALID, "approver %s: disable at %s, before 1970", email, at)
	}
	var got *mandate.Approver
	err := s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
		res, err := tx.ExecContext(ctx, "UPDATE approvers SET disabled_at = ? WHERE email = ? AND disabled_at = 0", ms(at), email)
		if err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		n, err := res.RowsAffected()
		if err != nil {
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		}
		a, err := scanApprover(tx.QueryRowContext(ctx, "SELECT email, token_hash, created_at, disabled_at FROM approvers WHERE email = ?", email))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return mandate.Errorf(mandate.ENOTFOUND, "no approver %s", email)
		case err != nil:
			return mandate.Wrapf(err, mandate.EUNAVAILABLE, "store unavailable")
		case n == 0:
			return mandate.Errorf(mandate.ECONFLICT, "approver %s was disabled already, at %s", email, a.DisabledAt.Format(time.RFC3339))
		}
		got = a
		return nil
	}, nil, ev)
	if err != nil {
		return nil, err
	}
	return got, nil
}

// UseApproval moves an approved approval to used and appends ev in the same
// transaction: the one use it allows, for a caller other than the issuer
// (the gateway's held tool calls). ECONFLICT if it is not approved, or was
// used already.
func (s *Store) UseApproval(ctx context.Context, id string, ev *mandate.Event) error {
	return s.exec(ctx, func(ctx context.Context, tx *writeTx) error {
		return useApproval(ctx, tx, id)
	}, nil, ev)
}
