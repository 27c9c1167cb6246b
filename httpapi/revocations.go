package httpapi

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
)

// LiveIssuances lists live (unexpired, unrevoked) mandates by holder, or a
// task's root (*sqlite.Store): what a revocation by agent or by task
// revokes.
type LiveIssuances interface {
	LiveIssuances(ctx context.Context, agentID, taskID string, now time.Time) ([]*mandate.Issuance, error)
}

// RevocationRequest revokes one mandate, every live mandate an agent
// holds, or a whole task; exactly one of the three. Descendants of a
// revoked mandate are refused with it: every verifier that asks (the
// gateway, introspection, the issuer at delegation) follows the chain of
// parents.
type RevocationRequest struct {
	Mandate string `json:"mandate,omitempty"`
	Agent   string `json:"agent,omitempty"` // a name or a SPIFFE ID
	Task    string `json:"task,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

// RevocationResponse names the mandates revoked (their descendants go
// with them), and, behind a gateway, what became of their requests that
// were being sent to upstreams when the revocation came into force
// (mandate.Settled): the answer comes once none of them can still reach
// one.
type RevocationResponse struct {
	Revoked  []string         `json:"revoked"`
	InFlight *mandate.Settled `json:"in_flight,omitempty"`
}

// createRevocation answers POST /v1/revocations.
func (s *Server) createRevocation(w http.ResponseWriter, r *http.Request) {
	var req RevocationRequest
	if err := readJSON(w, r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	n := 0
	for _, v := range []string{req.Mandate, req.Agent, req.Task} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "give exactly one of mandate, agent or task"))
		return
	}
	if len(req.Reason) > 512 || strings.ContainsAny(req.Reason, "\n\r") {
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "reason: one line of at most 512 bytes"))
		return
	}
	if err := mandate.RefuseSecret("reason", req.Reason, "a reason is prose for the people who audit the revocation"); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out, err := s.Revoke(r.Context(), req, "admin", nil)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.log.Info("mandates revoked", "count", len(out.Revoked), "mandate", req.Mandate, "agent", req.Agent, "task", req.Task)
	writeJSON(w, http.StatusOK, out)
}

// Revoke revokes what req names (exactly one of its mandate, agent or
// task; POST /v1/revocations checks that), recording a mandate.revoked
// event for each, by by ("admin", "monitor"), with details added to the
// events' (the monitor's detector and evidence). A task with no live root
// mandate is ENOTFOUND; an agent with no live mandate revokes nothing.
func (s *Server) Revoke(ctx context.Context, req RevocationRequest, by string, details map[string]any) (out RevocationResponse, err error) {
	now := s.cfg.Now()
	var recs []*mandate.Issuance
	switch {
	case req.Mandate != "":
		rec, err := s.cfg.Issuances.Issuance(ctx, req.Mandate)
		if err != nil {
			return RevocationResponse{}, err
		}
		recs = []*mandate.Issuance{rec}
	default:
		lister, ok := s.cfg.Issuances.(LiveIssuances)
		if !ok {
			return RevocationResponse{}, mandate.Errorf(mandate.EINTERNAL, "this store cannot list live mandates")
		}
		agent := req.Agent
		if agent != "" && !strings.HasPrefix(agent, "spiffe://") {
			agent = mandate.AgentID(s.cfg.TrustDomain, agent)
		}
		var err error
		if recs, err = lister.LiveIssuances(ctx, agent, req.Task, now); err != nil {
			return RevocationResponse{}, err
		}
		if req.Task != "" && len(recs) == 0 {
			return RevocationResponse{}, mandate.Errorf(mandate.ENOTFOUND, "task %s has no live root mandate", req.Task)
		}
	}
	reason := req.Reason
	if reason == "" {
		reason = "revoked by an operator"
	}
	out = RevocationResponse{Revoked: []string{}}
	// Whatever was revoked is waited out before the answer, even if a
	// later revocation of the list failed.
	defer func() { out.InFlight = s.settle(ctx) }()
	for _, rec := range recs {
		d := map[string]any{"by_mandate": req.Mandate, "by_agent": req.Agent, "by_task": req.Task, "cascade": true}
		for k, v := range details {
			d[k] = v
		}
		ev := &mandate.Event{V: mandate.EventVersion, Time: now.UnixNano(), Type: mandate.EventMandateRevoked,
			Task: rec.TaskID, Mandate: rec.MandateID, Parent: rec.ParentID, Agent: rec.AgentID, Subject: rec.Subject,
			Action: "revoke", Outcome: mandate.OutcomeOK, Reason: reason, By: by, Details: d}
		if err := s.cfg.Revocations.Revoke(ctx, &mandate.Revocation{MandateID: rec.MandateID, ExpiresAt: rec.ExpiresAt,
			RevokedAt: now, RevokedBy: by, Reason: reason}, ev); err != nil {
			return out, err
		}
		out.Revoked = append(out.Revoked, rec.MandateID)
	}
	if req.Task != "" {
		// What waits for a person in a revoked task can no longer happen.
		if n, err := s.cfg.Issuer.WithdrawApprovals(ctx, req.Task, mandate.ClipReason("the task was revoked: "+reason)); err != nil {
			s.log.Error("pending approvals of a revoked task not withdrawn", "task", req.Task, "err", err)
		} else if n > 0 {
			s.log.Info("pending approvals of a revoked task withdrawn", "task", req.Task, "count", n)
		}
	}
	return out, nil
}

// Quarantine disables a registered agent (no new mandates), recording an
// agent.disabled event by by with details, then revokes its live
// mandates, and their descendants with them.
func (s *Server) Quarantine(ctx context.Context, agentID, reason, by string, details map[string]any) (RevocationResponse, error) {
	a, err := s.cfg.Agents.Agent(ctx, agentID)
	if err != nil {
		return RevocationResponse{}, err
	}
	if a.Status != mandate.AgentDisabled {
		ev := &mandate.Event{V: mandate.EventVersion, Time: s.cfg.Now().UnixNano(), Type: mandate.EventAgentDisabled, Agent: a.ID,
			Subject: a.Subject(), Action: string(mandate.AgentDisabled), Outcome: mandate.OutcomeOK, Reason: reason, By: by, Details: details}
		if _, err := s.cfg.Agents.SetAgentStatus(ctx, a.ID, mandate.AgentDisabled, ev); err != nil {
			return RevocationResponse{}, err
		}
	}
	out, err := s.Revoke(ctx, RevocationRequest{Agent: a.ID, Reason: reason}, by, details)
	if out.InFlight == nil {
		out.InFlight = s.settle(ctx) // disabled, whatever became of the revocations
	}
	return out, err
}

// settle waits, through Config.Settler, until no request in flight of a
// mandate that was just stopped (revoked, or its agent disabled) can
// still reach an upstream, and says what it had to cut off. The change
// must be in force (durable) before.
func (s *Server) settle(ctx context.Context) *mandate.Settled {
	if s.cfg.Settler == nil {
		return nil
	}
	st := s.cfg.Settler.Settle(ctx)
	if st.Stopped+st.Unconfirmed > 0 {
		s.log.Warn("requests of stopped mandates were still being sent at the bound: cut off", "sent", st.Sent,
			"stopped", st.Stopped, "unconfirmed", st.Unconfirmed)
	}
	return &st
}

// alerts answers GET /v1/alerts: the monitor's alert events, with the
// filters of GET /v1/events (task, agent, since, until, after, limit, last).
func (s *Server) alerts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if t := q.Get("type"); t != "" && t != mandate.EventAlert {
		// (a stream of alerts and other events is /v1/events?type=alert,...)
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "/v1/alerts lists alerts only: use /v1/events for events of type %q", t))
		return
	}
	q.Set("type", mandate.EventAlert)
	r2 := r.Clone(r.Context())
	r2.URL.RawQuery = q.Encode()
	s.events(w, r2)
}
