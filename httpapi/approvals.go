package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
)

// ApproverTokenPrefix starts every approver credential, so that one is
// recognised at a glance (and by secret scanners) and never mistaken for
// the admin's (mdt_).
const ApproverTokenPrefix = "mapr_"

// approverKey is the context key of the authenticated approver.
type approverKey struct{}

// approverFrom returns the approver that authenticated the request; nil
// for the admin.
func approverFrom(ctx context.Context) *mandate.Approver {
	a, _ := ctx.Value(approverKey{}).(*mandate.Approver)
	return a
}

// errNoApproverCredential is authApprover's answer to a request that
// bears no approver credential at all.
var errNoApproverCredential = mandate.Errorf(mandate.EUNAUTHORIZED,
	"approver credential required: send Authorization: Bearer %s… (made by `mandate approver add EMAIL`)", ApproverTokenPrefix)

// authApprover finds the active approver whose credential the request
// bears. It looks the credential up by its SHA-256 and compares the
// digests in constant time; only digests are stored. A disabled
// approver's credential is refused (the store does not return them).
func (s *Server) authApprover(r *http.Request) (*mandate.Approver, error) {
	tok, ok := bearer(r)
	if !ok || !strings.HasPrefix(tok, ApproverTokenPrefix) {
		return nil, errNoApproverCredential
	}
	h := sha256.Sum256([]byte(tok))
	a, err := s.cfg.Approvers.ApproverByTokenHash(r.Context(), h[:])
	switch {
	case mandate.ErrorCode(err) == mandate.ENOTFOUND || err == nil && subtle.ConstantTimeCompare(a.TokenHash, h[:]) != 1:
		return nil, mandate.Errorf(mandate.EUNAUTHORIZED, "the approver credential is not known here: ask the admin for one (`mandate approver add EMAIL`)")
	case mandate.ErrorCode(err) == mandate.EUNAUTHORIZED:
		s.log.WarnContext(r.Context(), "a disabled approver credential was presented", "path", r.URL.Path)
		return nil, mandate.Errorf(mandate.EUNAUTHORIZED, "this approver credential was disabled: it decides and shows nothing; ask the admin for a new one")
	case err != nil:
		return nil, err
	}
	return a, nil
}

// approver wraps h so that it runs only for a request bearing an
// approver's credential. The admin is refused: approvals are decided by a
// person, whom the audit log names.
func (s *Server) approver(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.isAdmin(r) {
			err := mandate.Errorf(mandate.EFORBIDDEN,
				"the admin credential cannot decide approvals: a person decides, with their own approver credential "+
					"(`mandate approver add EMAIL` makes one; then `mandate approvals approve ID --approver-token-file FILE`)")
			s.refusedCredential(r, "approver", "admin", err)
			writeError(w, r, s.log, err)
			return
		}
		a, err := s.authApprover(r)
		if err != nil {
			if mandate.ErrorCode(err) == mandate.EUNAUTHORIZED {
				s.refusedCredential(r, "approver", "", err)
				w.Header().Set("WWW-Authenticate", `Bearer realm="mandate-approver"`)
			}
			writeError(w, r, s.log, err)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), approverKey{}, a)))
	}
}

// adminOrApprover wraps h so that it runs for the admin or an approver.
func (s *Server) adminOrApprover(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.isAdmin(r) {
			h(w, r)
			return
		}
		a, err := s.authApprover(r)
		if err != nil {
			if err == errNoApproverCredential {
				err = mandate.Errorf(mandate.EUNAUTHORIZED, "admin or approver credential required: send Authorization: Bearer <admin token, or %s… approver credential>", ApproverTokenPrefix)
			}
			if mandate.ErrorCode(err) == mandate.EUNAUTHORIZED {
				w.Header().Set("WWW-Authenticate", `Bearer realm="mandate"`)
				s.refusedCredential(r, "admin-or-approver", "", err)
			}
			writeError(w, r, s.log, err)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), approverKey{}, a)))
	}
}

// ApproverRequest is the body of POST /v1/approvers.
type ApproverRequest struct {
	Email string `json:"email"`
}

// ApproverResponse is an approver as the API shows it. Token, the
// approver's credential, is in the answer to POST /v1/approvers only: the
// server keeps its SHA-256 and cannot show it again.
type ApproverResponse struct {
	Email      string    `json:"email"`
	CreatedAt  time.Time `json:"created_at"`
	DisabledAt time.Time `json:"disabled_at,omitzero"`
	Token      string    `json:"token,omitempty"`
}

func (s *Server) createApprover(w http.ResponseWriter, r *http.Request) {
	var req ApproverRequest
	if err := readJSON(w, r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if err := mandate.ValidateOwner(req.Email); err != nil {
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "invalid approver email %q: give the person's email address, as agents name it in --approver", req.Email))
		return
	}
	var raw [32]byte
	rand.Read(raw[:]) // never fails (crypto/rand, Go 1.24+)
	tok := ApproverTokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	h := sha256.Sum256([]byte(tok))
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	a := &mandate.Approver{Email: req.Email, TokenHash: h[:], CreatedAt: now}
	ev := &mandate.Event{V: mandate.EventVersion, Time: now.UnixNano(), Type: mandate.EventApproverAdded,
		Subject: "user:" + a.Email, Action: "add", Outcome: mandate.OutcomeOK, By: "admin",
		Details: map[string]any{"email": a.Email}}
	if err := s.cfg.Approvers.CreateApprover(r.Context(), a, ev); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.log.Info("approver added", "email", a.Email)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, ApproverResponse{Email: a.Email, CreatedAt: a.CreatedAt, Token: tok})
}

func (s *Server) listApprovers(w http.ResponseWriter, r *http.Request) {
	list, err := s.cfg.Approvers.Approvers(r.Context())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out := struct {
		Approvers []ApproverResponse `json:"approvers"`
	}{Approvers: []ApproverResponse{}}
	for _, a := range list {
		out.Approvers = append(out.Approvers, ApproverResponse{Email: a.Email, CreatedAt: a.CreatedAt.UTC(), DisabledAt: a.DisabledAt.UTC()})
	}
	writeJSON(w, http.StatusOK, out)
}

// disableApprover answers POST /v1/approvers/{email}/disable: from the
// moment it is recorded (with its approver.disabled event), the
// approver's credential is refused everywhere and no decision of theirs is
// taken, even one already on its way. Their pending approvals that name no
// one else are denied when they time out.
func (s *Server) disableApprover(w http.ResponseWriter, r *http.Request) {
	email := r.PathValue("email")
	if err := mandate.ValidateOwner(email); err != nil {
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "invalid approver email %q: give the person's email address", email))
		return
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	ev := &mandate.Event{V: mandate.EventVersion, Time: now.UnixNano(), Type: mandate.EventApproverDisabled,
		Subject: "user:" + email, Action: "disable", Outcome: mandate.OutcomeOK, By: "admin",
		Details: map[string]any{"email": email}}
	a, err := s.cfg.Approvers.DisableApprover(r.Context(), email, now, ev)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.log.Info("approver disabled", "email", a.Email)
	writeJSON(w, http.StatusOK, ApproverResponse{Email: a.Email, CreatedAt: a.CreatedAt.UTC(), DisabledAt: a.DisabledAt.UTC()})
}

// ApprovalsResponse is a list of approvals, newest first.
type ApprovalsResponse struct {
	Approvals []*mandate.Approval `json:"approvals"`
}

// maxApprovals bounds one listing of approvals.
const maxApprovals = 1000

// listApprovals answers GET /v1/approvals?status=&task=&limit=. An
// approver sees only the approvals they may decide: the store selects
// those that name them before it cuts the list to its limit, so that a
// flood of others' requests cannot push theirs out.
func (s *Server) listApprovals(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := mandate.ApprovalFilter{Status: mandate.ApprovalStatus(q.Get("status")), Task: q.Get("task"), Limit: maxApprovals}
	switch f.Status {
	case "", mandate.ApprovalPending, mandate.ApprovalApproved, mandate.ApprovalDenied, mandate.ApprovalUsed:
	default:
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "status %q: use pending, approved, denied or used", f.Status))
		return
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxApprovals {
			writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "limit must be 1 to %d", maxApprovals))
			return
		}
		f.Limit = n
	}
	me := approverFrom(r.Context())
	if me != nil {
		f.Approver = me.Email
	}
	list, err := s.cfg.Approvals.Approvals(r.Context(), f)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out := ApprovalsResponse{Approvals: []*mandate.Approval{}}
	for _, a := range list {
		if me != nil {
			// Named, but perhaps by a list made under another rule: the
			// rule decides (MayDecide), as it will when they decide.
			if err := a.MayDecide(r.Context(), s.cfg.Agents, me.Email); mandate.ErrorCode(err) == mandate.EFORBIDDEN {
				continue
			} else if err != nil {
				writeError(w, r, s.log, err)
				return
			}
		}
		out.Approvals = append(out.Approvals, a)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getApproval(w http.ResponseWriter, r *http.Request) {
	a, err := s.cfg.Approvals.Approval(r.Context(), r.PathValue("id"))
	if me := approverFrom(r.Context()); err == nil && me != nil {
		if err = a.MayDecide(r.Context(), s.cfg.Agents, me.Email); mandate.ErrorCode(err) == mandate.EFORBIDDEN {
			// An approver learns nothing of the approvals of others.
			err = mandate.Errorf(mandate.ENOTFOUND, "no approval %s that %s may decide", r.PathValue("id"), me.Email)
		}
	}
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, a)
}

// DecisionRequest is the optional body of POST /v1/approvals/{id}/approve
// and /deny.
type DecisionRequest struct {
	Note string `json:"note,omitempty"`
}

// decide records the authenticated approver's decision. The issuer checks
// that they may decide this approval, and audits a refusal.
func (s *Server) decide(approve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req DecisionRequest
		// The note is optional: no body at all is no note.
		if r.ContentLength > 0 || r.ContentLength < 0 && r.Header.Get("Content-Type") != "" {
			if err := readJSON(w, r, &req); err != nil {
				writeError(w, r, s.log, err)
				return
			}
		}
		me := approverFrom(r.Context())
		a, err := s.cfg.Issuer.Decide(r.Context(), r.PathValue("id"), me.Email, approve, req.Note)
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		writeJSON(w, http.StatusOK, a)
	}
}
