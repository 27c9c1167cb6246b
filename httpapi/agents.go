package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
)

// AgentRequest is the body of POST /v1/agents.
type AgentRequest struct {
	Name      string   `json:"name"`
	Owner     string   `json:"owner"`
	Ceiling   []string `json:"ceiling"`
	PublicKey jose.JWK `json:"public_key"`
	// MaxDepth bounds the delegation chains the agent is part of (0: the
	// server's default).
	MaxDepth int `json:"max_depth,omitempty"`
	// Approval lists the scopes whose delegation, by this agent or any
	// agent below it, needs a person's approval.
	Approval []string `json:"approval,omitempty"`
	// Approvers may decide those approvals (email addresses); the owner
	// alone if empty.
	Approvers []string `json:"approvers,omitempty"`
	// Labels are what policies know the agent by (principal.labels): at
	// most 32, each 1-64 characters of [a-z0-9:._-], none twice.
	Labels []string `json:"labels,omitempty"`
}

// AgentResponse is an agent as the API shows it.
type AgentResponse struct {
	ID            string    `json:"id"`
	Name          string    `json:"name"`
	Owner         string    `json:"owner"`
	Ceiling       []string  `json:"ceiling"`
	PublicKey     jose.JWK  `json:"public_key"`
	KeyThumbprint string    `json:"key_thumbprint"`
	Status        string    `json:"status"`
	MaxDepth      int       `json:"max_depth,omitempty"`
	Approval      []string  `json:"approval,omitempty"`
	Approvers     []string  `json:"approvers,omitempty"`
	Labels        []string  `json:"labels,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
}

func agentResponse(a *mandate.Agent) AgentResponse {
	return AgentResponse{
		ID: a.ID, Name: a.Name, Owner: a.Owner, Ceiling: a.Ceiling.Strings(),
		PublicKey: jose.NewPublicJWK(a.PublicKey), KeyThumbprint: a.KeyID,
		Status: string(a.Status), MaxDepth: a.MaxDepth, Approval: a.Approval.Strings(), Approvers: a.Approvers,
		Labels: a.Labels, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt,
	}
}

func (s *Server) createAgent(w http.ResponseWriter, r *http.Request) {
	var req AgentRequest
	if err := readJSON(w, r, &req); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if req.PublicKey.D != "" {
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "public_key holds a private key (member d): send only the public JWK, and keep the private key with the agent"))
		return
	}
	pub, err := req.PublicKey.PublicKey()
	if err != nil {
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "public_key: %v: send an Ed25519 public JWK (kty OKP, crv Ed25519, x)", err))
		return
	}
	ceiling, err := parseScopes(req.Ceiling)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	approval, err := parseScopes(req.Approval)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	// An approval rule that overlaps nothing the agent may hold would never
	// apply: say so rather than let the owner believe it guards something.
	for _, sc := range approval {
		if len(ceiling.Overlapping(mandate.ScopeSet{sc})) == 0 {
			writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "approval scope %s overlaps nothing in the ceiling %s, so it would never apply", sc, ceiling))
			return
		}
	}
	if err := mandate.ValidateAgentName(req.Name); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	if err := mandate.ValidateAgentLabels(req.Labels); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	a := &mandate.Agent{
		ID: mandate.AgentID(s.cfg.TrustDomain, req.Name), Name: req.Name, Owner: req.Owner, Ceiling: ceiling,
		PublicKey: pub, KeyID: jose.Thumbprint(pub), Status: mandate.AgentActive, CreatedAt: now, UpdatedAt: now,
		MaxDepth: req.MaxDepth, Approval: approval, Approvers: req.Approvers, Labels: req.Labels,
	}
	details := map[string]any{"owner": a.Owner, "ceiling": a.Ceiling.Strings(), "key_thumbprint": a.KeyID}
	if a.MaxDepth != 0 {
		details["max_depth"] = a.MaxDepth
	}
	if len(a.Approval) > 0 {
		details["approval"] = a.Approval.Strings()
	}
	if len(a.Approvers) > 0 {
		details["approvers"] = a.Approvers
	}
	if len(a.Labels) > 0 {
		details["labels"] = a.Labels
	}
	ev := &mandate.Event{V: mandate.EventVersion, Time: now.UnixNano(), Type: mandate.EventAgentRegistered,
		Agent: a.ID, Subject: a.Subject(), Action: "register", Outcome: mandate.OutcomeOK, By: "admin",
		Details: details}
	if err := s.cfg.Agents.CreateAgent(r.Context(), a, ev); err != nil {
		writeError(w, r, s.log, err)
		return
	}
	s.log.Info("agent registered", "agent", a.ID, "owner", a.Owner)
	writeJSON(w, http.StatusCreated, agentResponse(a))
}

// parseScopes parses a list of scopes, each on its own.
func parseScopes(list []string) (mandate.ScopeSet, error) {
	out := make(mandate.ScopeSet, 0, len(list))
	for _, c := range list {
		sc, err := mandate.ParseScope(c)
		if err != nil {
			return nil, err
		}
		out = append(out, sc)
	}
	return out, nil
}

func (s *Server) listAgents(w http.ResponseWriter, r *http.Request) {
	agents, err := s.cfg.Agents.Agents(r.Context())
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	out := struct {
		Agents []AgentResponse `json:"agents"`
	}{Agents: []AgentResponse{}}
	for _, a := range agents {
		out.Agents = append(out.Agents, agentResponse(a))
	}
	writeJSON(w, http.StatusOK, out)
}

// agentByName resolves the {name} path value.
func (s *Server) agentByName(r *http.Request) (*mandate.Agent, error) {
	name := r.PathValue("name")
	if err := mandate.ValidateAgentName(name); err != nil {
		return nil, err
	}
	return s.cfg.Agents.Agent(r.Context(), mandate.AgentID(s.cfg.TrustDomain, name))
}

func (s *Server) getAgent(w http.ResponseWriter, r *http.Request) {
	a, err := s.agentByName(r)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, agentResponse(a))
}

func (s *Server) setAgentStatus(status mandate.AgentStatus) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a, err := s.agentByName(r)
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		typ := mandate.EventAgentDisabled
		if status == mandate.AgentActive {
			typ = mandate.EventAgentEnabled
		}
		ev := &mandate.Event{V: mandate.EventVersion, Time: s.cfg.Now().UnixNano(), Type: typ, Agent: a.ID,
			Subject: a.Subject(), Action: string(status), Outcome: mandate.OutcomeOK, By: "admin"}
		a, err = s.cfg.Agents.SetAgentStatus(r.Context(), a.ID, status, ev)
		if err != nil {
			writeError(w, r, s.log, err)
			return
		}
		if status == mandate.AgentDisabled {
			// Its mandates, and their descendants', are refused from now:
			// what of them is being sent is waited out.
			s.settle(r.Context())
		}
		s.log.Info("agent status changed", "agent", a.ID, "status", status)
		writeJSON(w, http.StatusOK, agentResponse(a))
	}
}

// KeyResponse describes one signing key; never the private half.
type KeyResponse struct {
	ID        string     `json:"kid"`
	Status    string     `json:"status"` // active, retired, pending (published, not signing yet)
	CreatedAt time.Time  `json:"created_at"`
	RetiredAt *time.Time `json:"retired_at,omitempty"`
	PublicKey jose.JWK   `json:"public_key"`
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request) {
	out := struct {
		Keys []KeyResponse `json:"keys"`
	}{}
	for _, k := range s.cfg.Keys.Published(s.cfg.Now()) {
		kr := KeyResponse{ID: k.ID, Status: "active", CreatedAt: k.CreatedAt, PublicKey: jose.NewPublicJWK(k.Public())}
		if !k.RetiredAt.IsZero() {
			t := k.RetiredAt
			kr.Status, kr.RetiredAt = "retired", &t
		} else if k.Pending {
			kr.Status = "pending"
		}
		out.Keys = append(out.Keys, kr)
	}
	writeJSON(w, http.StatusOK, out)
}

// rotateKeys makes a new signing key write-ahead (issuer.Keyring): saved
// as pending, announced by its key.rotated event, durable in the log, and
// only then signing. A failure before the event leaves the key pending (it
// never signed) and the caller hears of it; the next rotation, or the next
// start, announces and activates that key.
func (s *Server) rotateKeys(w http.ResponseWriter, r *http.Request) {
	k, err := s.cfg.Keys.Rotate(r.Context(), s.cfg.Now(), func(ctx context.Context, next *issuer.SigningKey, prev string) error {
		return s.cfg.Events.Append(ctx, issuer.KeyRotatedEvent(s.cfg.Now(), next.ID, prev, "admin", ""))
	})
	if err != nil {
		writeError(w, r, s.log, mandate.Wrapf(err, mandate.ErrorCode(err), "rotate keys"))
		return
	}
	s.log.Info("signing key rotated", "kid", k)
	writeJSON(w, http.StatusOK, KeyResponse{ID: k.ID, Status: "active", CreatedAt: k.CreatedAt, PublicKey: jose.NewPublicJWK(k.Public())})
}

// MandateResponse is the issuance record of a mandate.
type MandateResponse struct {
	ID        string    `json:"id"`
	Task      string    `json:"task"`
	Parent    string    `json:"parent,omitempty"`
	Agent     string    `json:"agent"`
	Subject   string    `json:"sub"`
	Scope     string    `json:"scope"`
	Audience  []string  `json:"aud"`
	KeyID     string    `json:"kid"`
	JKT       string    `json:"jkt,omitempty"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Purpose   string    `json:"task_purpose,omitempty"`
	Revoked   bool      `json:"revoked"`
}

func (s *Server) getMandate(w http.ResponseWriter, r *http.Request) {
	rec, err := s.cfg.Issuances.Issuance(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	revoked, err := s.cfg.Revocations.IsRevoked(r.Context(), rec.MandateID)
	if err != nil {
		writeError(w, r, s.log, err)
		return
	}
	writeJSON(w, http.StatusOK, MandateResponse{
		ID: rec.MandateID, Task: rec.TaskID, Parent: rec.ParentID, Agent: rec.AgentID, Subject: rec.Subject,
		Scope: rec.Scope, Audience: rec.Audience, KeyID: rec.KeyID, JKT: rec.JKT,
		IssuedAt: rec.IssuedAt.UTC(), ExpiresAt: rec.ExpiresAt.UTC(), Purpose: rec.TaskPurpose, Revoked: revoked,
	})
}
