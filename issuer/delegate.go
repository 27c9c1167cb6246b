package issuer

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/policy"
)

// Token exchange (RFC 8693) values.
const (
	GrantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	TokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
	TokenTypeAccessToken   = "urn:ietf:params:oauth:token-type:access_token"
)

// DefaultMaxDepth is the longest delegation chain, counting the root agent,
// when no agent of the chain sets a smaller limit.
const DefaultMaxDepth = 5

// DelegateRequest is a token exchange request (RFC 8693 §2.1): the holder
// of SubjectToken (the parent mandate) delegates part of it to the agent
// that signed ActorToken.
type DelegateRequest struct {
	SubjectToken     string
	SubjectTokenType string // TokenTypeJWT or TokenTypeAccessToken
	ActorToken       string // a JWT signed by the sub-agent's key; see [Issuer.Delegate]
	ActorTokenType   string // TokenTypeJWT
	Scope            string // empty: the parent's scopes
	Resources        []string
	TTL              time.Duration // 0: Config.DefaultTTL, cut to the parent's expiry
	DPoP             string        // a proof by the parent's key, if the parent is DPoP-bound
	// ApprovalID names the approval this request waited for; Wait is how
	// long to wait for a pending approval's decision (at most MaxWait).
	ApprovalID string
	Wait       time.Duration
}

// actor is the verified sub-agent of a delegation.
type actor struct {
	ID        string
	Agent     *mandate.Agent // nil for an ephemeral agent
	JKT       string         // thumbprint of its key
	Assertion assertion
}

// Delegate issues a child mandate of the parent mandate in req, to the
// actor that proved its key, under these rules (docs/delegation.md):
//
//   - the parent is a mandate of this issuer, recorded, unexpired and not
//     revoked; if it is DPoP-bound, req.DPoP is a fresh proof by its key;
//   - the actor token is a JWT of typ vnd.mandatehq.actor+jwt the actor
//     signed with EdDSA, for this parent (par = its jti), with aud the
//     issuer alone, a single-use jti, exp at most MaxAssertionLifetime
//     ahead, and either iss = sub = a registered agent's ID, or no iss
//     and the key in the jwk header: a new ephemeral agent, named
//     <parent's agent>/sub/<id>, whose key is none of the chain's;
//   - scopes ⊆ the parent's and the registered actor's ceiling; audience
//     ⊆ the parent's; expiry ≤ the parent's; depth ≤ the smallest limit
//     of the chain's registered agents (DefaultMaxDepth); no agent twice
//     in the chain; every registered agent of the chain active;
//   - a scope that a chain agent's Approval list names waits for a
//     person's approval (a *PendingError until then).
//
// The child keeps the parent's sub and task, names the parent in par, and
// nests the parent's act. It is bound to the actor's key if the parent was
// bound. The issuance is durable before Delegate returns; a refusal after
// the parent was authenticated is an audit event too.
func (is *Issuer) Delegate(ctx context.Context, req DelegateRequest) (*Token, error) {
	if is.cfg.Issuances == nil || is.cfg.Revocations == nil {
		return nil, mandate.Errorf(mandate.EINTERNAL, "issuer: Config.Issuances and Config.Revocations are required for delegation")
	}
	now := is.cfg.Now()
	parent, err := is.parent(ctx, req.SubjectToken, req.SubjectTokenType, now)
	if err != nil {
		if parent.claims != nil {
			// A genuine parent, expired or revoked: the refusal names its
			// task, for the monitor (dead-mandate-use), rate-limited as
			// anyone holding it can send it again and again.
			is.refusedGenuine(ctx, parent, now, err)
		} else {
			is.refused(ctx, nil, now, err)
		}
		return nil, err
	}
	// The proof of the parent's key comes first: until it is checked, the
	// sender may be anyone who obtained the parent, and a refusal names
	// the parent for the monitor (dpop-mismatch), rate-limited.
	proof, refused, err := is.parentProof(req.DPoP, parent.claims, now)
	if err != nil {
		parent.refused = refused
		is.refusedGenuine(ctx, parent, now, err)
		return nil, err
	}
	tok, err := is.delegate(ctx, req, parent, proof, now)
	if err != nil {
		if _, pending := err.(*PendingError); !pending {
			is.refused(ctx, parent.claims, now, err)
		}
		return nil, err
	}
	return tok, nil
}

// parentProof checks the DPoP proof of a delegation by its genuine parent
// c, and uses it up: a bound parent needs a fresh proof by its key; a
// bearer parent takes none. A refusal of a bound parent's proof says, as
// the gateway's do (verify.Error), whether the sender proved the key:
// "dpop-bearer" (no proof), "dpop-key" (no proof by the bound key: another
// key, a bad signature, alg none, garbage), "dpop-proof" (the holder's
// proof, for another request or too old), "dpop-replay".
//
// The proof is used up here, before the rest of the request is checked,
// so that a replayed request is refused for its proof (rate-limited), not
// for whatever fails next on the holder's authority.
func (is *Issuer) parentProof(proof string, c *mandate.Claims, now time.Time) (*dpop.Proof, string, error) {
	if c.Confirm == nil {
		if proof != "" {
			return nil, "", mandate.OAuthErrorf(mandate.EINVALID, "invalid_dpop_proof", "the parent mandate is a bearer token: a DPoP proof cannot be checked against it")
		}
		return nil, "", nil
	}
	if proof == "" {
		return nil, "dpop-bearer", mandate.OAuthErrorf(mandate.EUNAUTHORIZED, "invalid_dpop_proof", "the parent mandate is DPoP-bound: send a DPoP proof signed by its key")
	}
	p, err := is.checkDPoP(proof, now)
	if err != nil {
		if dpop.SignedBy(proof, c.Confirm.JKT) {
			return nil, "dpop-proof", err
		}
		return nil, "dpop-key", err
	}
	if p.JKT != c.Confirm.JKT {
		return nil, "dpop-key", mandate.OAuthErrorf(mandate.EUNAUTHORIZED, "invalid_dpop_proof", "the DPoP proof is not signed by the key the parent mandate is bound to")
	}
	if err := is.useOnce("d\x00"+p.JKT+"\x00"+p.ID, p.IssuedAt.Add(is.cfg.DPoPMaxAge), now, "invalid_dpop_proof", "DPoP proof"); err != nil {
		if oauthCodeOf(err) == "invalid_dpop_proof" {
			return nil, "dpop-replay", err
		}
		return nil, "", err // the replay set is full: not the sender's doing
	}
	return p, "", nil
}

func (is *Issuer) delegate(ctx context.Context, req DelegateRequest, pe issued, proof *dpop.Proof, now time.Time) (*Token, error) {
	if err := refuseSecrets(req.Scope, req.Resources, ""); err != nil {
		return nil, err
	}
	parent, ancestors := pe.claims, pe.ancestors
	act, err := is.actor(ctx, req.ActorToken, req.ActorTokenType, parent, now)
	if err != nil {
		return nil, err
	}
	// Chain: every registered agent in it must be active; their limits and
	// approval rules apply.
	chain := append([]string{act.ID}, parent.Actor.Chain()...)
	agents, err := is.chainAgents(ctx, chain, act)
	if err != nil {
		return nil, err
	}
	if err := ownKey(act, parent, chain, agents); err != nil {
		return nil, err
	}
	depth := len(chain)
	limit := is.cfg.MaxDepth
	for _, a := range agents {
		if a.MaxDepth > 0 && a.MaxDepth < limit {
			limit = a.MaxDepth
		}
	}
	if depth > limit {
		return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_grant", "the chain would be %d deep, over its limit of %d", depth, limit)
	}

	parentScopes, err := parent.Scopes()
	if err != nil {
		return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_grant", "the parent mandate's scope does not parse")
	}
	scopes := parentScopes
	if req.Scope != "" {
		if scopes, err = mandate.ParseScopeSet(req.Scope); err != nil {
			return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_scope", "%s", mandate.ErrorMessage(err))
		}
	}
	if out := parentScopes.Uncovered(scopes); len(out) > 0 {
		return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_scope", "scope %s is not within the parent mandate's scope %s: a delegation can only narrow", out, parent.Scope)
	}
	if act.Agent != nil {
		if out := act.Agent.Ceiling.Uncovered(scopes); len(out) > 0 {
			return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_scope", "scope %s is outside the ceiling of agent %s", out, act.Agent.Name)
		}
	}
	aud, err := childAudience(req.Resources, scopes, parent.Audience)
	if err != nil {
		return nil, err
	}
	exp, err := is.childExpiry(req.TTL, parent, now)
	if err != nil {
		return nil, err
	}
	// Policy decides with the chain of the mandate being asked for; the
	// principal is the agent that would receive it (for an ephemeral one,
	// the labels and owner of its registered ancestor, agents[0]).
	iat := mandate.NewNumericDate(now)
	risk := 0
	if is.cfg.Risk != nil {
		risk = is.cfg.Risk(parent.Task, parent.ClientID)
	}
	d, asked := is.decision(ctx, policy.Request{
		Action: policy.ActionDelegate, Subject: parent.Subject, Agent: agentInfo(act.ID, agents[0]),
		Chain: chain, Task: parent.Task, Purpose: pe.purpose, Risk: risk,
		DPoP: proof != nil, Scopes: scopes.Strings(), TTL: exp.Sub(iat.Time), Time: now,
	})
	if !d.Allow {
		return nil, &DeniedError{Action: policy.ActionDelegate, Decision: d}
	}
	if capped := iat.Add(capTTL(exp.Sub(iat.Time), d)); capped.Before(exp) {
		exp = capped
	}

	// Approval: a poll (with approval_id) may repeat its actor token until
	// the approval is decided; the approval itself is single-use.
	var jkt string
	if parent.Confirm != nil {
		jkt = act.JKT
	}
	actorUsed := false
	// The rules of the delegating side apply: the parent's chain, not the
	// registered actor receiving the mandate.
	delegators := agents
	if act.Agent != nil {
		delegators = agents[1:]
	}
	rule, asking := approvalRule(delegators, scopes)
	parties := mandate.ApprovalParties{Subject: parent.Subject, Chain: delegators, Recipient: act.Agent, Asking: asking}
	if d.NeedsApproval {
		// Policy asks too: the accountable side of the whole chain decides.
		rule, parties.Asking = joinRules(rule, policyApproval(d)), nil
	}
	if rule != "" || req.ApprovalID != "" {
		if rule == "" {
			return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "approval_id given, but this delegation needs no approval")
		}
		if req.ApprovalID == "" {
			// A new approval request uses up its actor token, so that one
			// token cannot file many requests (not even after a restart);
			// polls need fresh ones.
			actorUsed = true
			if err := is.useDurably(ctx, act.ID, &act.Assertion, now, "invalid_grant", "actor token"); err != nil {
				return nil, err
			}
		}
		hash := requestHash(parent.ID, actorKey(act), scopes.String(), aud, req.TTL, jkt)
		ap, err := is.approval(ctx, req.ApprovalID, req.TTL, req.Wait, approvalFields{
			action: mandate.ApprovalDelegate, task: parent.Task, parent: parent.ID, agent: parent.ClientID,
			actorKey: actorKey(act), actorID: act.ID, subject: parent.Subject, chain: parent.Actor.Chain(), until: parent.Expiry.Time,
			scopes: scopes, aud: aud, hash: hash, rule: rule, parties: parties, purpose: pe.purpose, risk: risk}, now)
		if err != nil {
			return nil, err
		}
		req.ApprovalID = ap.ID
	}

	if !actorUsed {
		// Recorded with the issuance (AgentID act.ID), which RestoreReplay
		// reads.
		if err := is.useOnce(usedKey(act.ID, act.Assertion.ID), act.Assertion.Expiry.Time, now, "invalid_grant", "actor token"); err != nil {
			return nil, err
		}
	}
	if act.Agent == nil {
		if err := is.ephemeral.add(act.ID, act.JKT, parent.Task, exp, now); err != nil {
			return nil, err
		}
	}

	c := &mandate.Claims{
		Issuer:    is.cfg.Issuer,
		Subject:   parent.Subject,
		ClientID:  act.ID,
		Actor:     &mandate.Actor{Subject: act.ID, Actor: parent.Actor},
		Audience:  aud,
		IssuedAt:  mandate.NumericDate{Time: iat.Truncate(time.Second)}, // as for a root mandate
		NotBefore: mandate.NumericDate{Time: iat.Truncate(time.Second)},
		Expiry:    mandate.NumericDate{Time: exp},
		ID:        mandate.NewID(mandate.MandateIDPrefix, now),
		Scope:     scopes.String(),
		Task:      parent.Task,
		Parent:    parent.ID,
	}
	if jkt != "" {
		c.Confirm = &mandate.Confirmation{JKT: jkt}
	}
	tok, key, err := is.sign(c)
	if err != nil {
		return nil, err
	}
	rec := &mandate.Issuance{
		MandateID: c.ID, TaskID: c.Task, ParentID: parent.ID, AgentID: act.ID, Subject: c.Subject, Scope: c.Scope,
		Audience: aud, KeyID: key, JKT: jkt, IssuedAt: iat.Time, ExpiresAt: c.Expiry.Time,
		AssertionID: act.Assertion.ID, AssertionExpiry: act.Assertion.Expiry.Time, ApprovalID: req.ApprovalID,
	}
	details := map[string]any{"depth": json.Number(strconv.Itoa(depth))}
	rec.PutDetails(details)
	if act.Agent == nil {
		details["ephemeral"] = true
		details["agent_jkt"] = act.JKT
	}
	if asked {
		policyDetails(details, d)
	}
	ev := &mandate.Event{
		V: mandate.EventVersion, Time: now.UnixNano(), Type: mandate.EventMandateDelegated,
		Task: c.Task, Mandate: c.ID, Parent: parent.ID, Agent: act.ID, Chain: c.Actor.Chain(), Subject: c.Subject,
		Action: "delegate", Resource: strings.Join(aud, " "), Outcome: mandate.OutcomeOK, By: parent.ClientID,
		Details: details,
	}
	if err := is.cfg.Log.RecordIssuance(ctx, rec, ev); err != nil {
		if mandate.ErrorCode(err) == mandate.ECONFLICT && req.ApprovalID != "" {
			return nil, mandate.OAuthErrorf(mandate.ECONFLICT, "invalid_grant", "approval %s was used already: an approval allows one delegation", req.ApprovalID)
		}
		is.logError("issuance not recorded: mandate withheld", err, "agent", act.ID)
		return nil, &mandate.Error{Code: mandate.EUNAVAILABLE, OAuth: "temporarily_unavailable",
			Message: "the issuance could not be recorded, so no mandate was issued: try again later with a new actor token", Err: err}
	}
	// The parent or an ancestor may have been revoked, or an agent of the
	// chain disabled, while the child was being issued (each is in force
	// once its event is durable, and so before this issuance's was): then
	// the child is revoked too, before anyone sees it.
	lineage := append(append(make([]string, 0, len(ancestors)+1), ancestors...), parent.ID)
	if id, err := is.revokedAmong(ctx, lineage); err != nil || id != "" {
		is.revokeIssued(ctx, c, now, "the parent mandate was revoked during the exchange")
		if err != nil {
			return nil, err
		}
		return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_grant", "mandate %s, an ancestor of this delegation, was revoked during the exchange", id)
	}
	if id, err := is.inactiveAmong(ctx, chain); err != nil || id != "" {
		is.revokeIssued(ctx, c, now, "an agent of the chain was disabled during the exchange")
		if err != nil {
			return nil, err
		}
		return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_grant", "agent %s of the chain was disabled during the exchange", id)
	}
	is.issued.add(tok, c, lineage, pe.purpose, now)
	typ := "Bearer"
	if jkt != "" {
		typ = "DPoP"
	}
	return &Token{AccessToken: tok, TokenType: typ, Claims: c, Lifetime: exp.Sub(iat.Time)}, nil
}

// revokeIssued revokes a mandate whose issuance is recorded but which is
// withheld from its caller, because what it stood on (its parent, an agent
// of its chain) stopped while it was being issued.
func (is *Issuer) revokeIssued(ctx context.Context, c *mandate.Claims, now time.Time, why string) {
	err := is.cfg.Revocations.Revoke(ctx, &mandate.Revocation{
		MandateID: c.ID, ExpiresAt: c.Expiry.Time, RevokedAt: now, RevokedBy: "issuer", Reason: why,
	}, &mandate.Event{V: mandate.EventVersion, Time: now.UnixNano(), Type: mandate.EventMandateRevoked,
		Task: c.Task, Mandate: c.ID, Parent: c.Parent, Agent: c.ClientID, Chain: c.Actor.Chain(), Subject: c.Subject,
		Action: "revoke", Outcome: mandate.OutcomeOK, Reason: why, By: "issuer"})
	if err != nil {
		is.cfg.Logger.Error("a withheld mandate not revoked", "mandate", c.ID, "err", err)
	}
}

// inactiveAmong returns the first registered agent of chain (the
// registered ancestor of each actor) that is disabled or no longer
// registered, or "".
func (is *Issuer) inactiveAmong(ctx context.Context, chain []string) (string, error) {
	var checked []string
	for _, id := range chain {
		reg := mandate.RegisteredAncestor(id)
		if slices.Contains(checked, reg) {
			continue
		}
		checked = append(checked, reg)
		a, err := is.cfg.Agents.Agent(ctx, reg)
		if mandate.ErrorCode(err) == mandate.ENOTFOUND {
			return reg, nil
		} else if err != nil {
			return "", err
		}
		if a.Status != mandate.AgentActive {
			return reg, nil
		}
	}
	return "", nil
}

// parent authenticates the subject token: a mandate this issuer signed and
// recorded, unexpired, neither it nor any ancestor revoked. It returns the
// claims, the ancestors' IDs from the root down, and the task's purpose.
func (is *Issuer) parent(ctx context.Context, token, typ string, now time.Time) (issued, error) {
	fail := func(format string, args ...any) (issued, error) {
		return issued{}, mandate.OAuthErrorf(mandate.EUNAUTHORIZED, "invalid_grant", "subject_token: "+format, args...)
	}
	if token == "" {
		return issued{}, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "subject_token is required: the parent mandate")
	}
	switch typ {
	case TokenTypeJWT, TokenTypeAccessToken:
	case "":
		return issued{}, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "subject_token_type is required: %s", TokenTypeJWT)
	default:
		return issued{}, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "subject_token_type %q is not supported: use %s", typ, TokenTypeJWT)
	}
	e, ok := is.issued.get(token)
	c, ancestors := e.claims, e.ancestors
	if !ok {
		var err error
		jws, err := jose.Parse(token)
		if err != nil {
			return fail("%v", err)
		}
		if p := typProblem(jws.Header.Typ, mandate.TypMandate); p != "" {
			return fail("not a mandate: %s", p)
		}
		pub, ok := is.cfg.Keys.PublicKey(jws.Header.Kid, now)
		if !ok {
			return fail("signed with an unknown key %q", jws.Header.Kid)
		}
		if err := jws.Verify(pub); err != nil {
			return fail("signature does not verify")
		}
		c = new(mandate.Claims)
		if err := json.Unmarshal(jws.Payload, c); err != nil {
			return fail("claims do not parse: %v", err)
		}
		if c.Issuer != is.cfg.Issuer || c.ID == "" || c.Task == "" || c.Actor == nil || c.Actor.Subject != c.ClientID {
			return fail("not a mandate of this issuer")
		}
		if !now.Before(c.Expiry.Time) { // before the lookup: expired records are pruned
			_, err := fail("the parent mandate expired at %s", c.Expiry.UTC().Format(time.RFC3339Nano))
			return issued{claims: c, refused: "exp"}, err
		}
		rec, err := is.cfg.Issuances.Issuance(ctx, c.ID)
		if mandate.ErrorCode(err) == mandate.ENOTFOUND {
			return fail("mandate %s was never issued here", c.ID)
		} else if err != nil {
			return issued{}, err
		}
		if !rec.ExpiresAt.Equal(c.Expiry.Time) || rec.AgentID != c.ClientID || rec.ParentID != c.Parent {
			return fail("mandate %s does not match its issuance record", c.ID)
		}
		if ancestors, err = is.ancestors(ctx, rec); err != nil {
			return issued{}, err
		}
		e.purpose = rec.TaskPurpose
	}
	if !now.Before(c.Expiry.Time) {
		_, err := fail("the parent mandate expired at %s", c.Expiry.UTC().Format(time.RFC3339Nano))
		return issued{claims: c, refused: "exp"}, err
	}
	id, err := is.revokedAmong(ctx, append(ancestors[:len(ancestors):len(ancestors)], c.ID))
	if err != nil {
		return issued{}, err
	}
	if id == c.ID {
		_, err := fail("the parent mandate %s is revoked", c.ID)
		return issued{claims: c, refused: "revocation"}, err
	} else if id != "" {
		_, err := fail("mandate %s, an ancestor of the parent, is revoked", id)
		return issued{claims: c, refused: "revocation"}, err
	}
	return issued{claims: c, ancestors: ancestors, purpose: e.purpose}, nil
}

// ancestors walks the issuance records up from rec to the root and returns
// the IDs from the root down. A live mandate's ancestors are live too (a
// child never outlives its parent), so their records are there.
func (is *Issuer) ancestors(ctx context.Context, rec *mandate.Issuance) ([]string, error) {
	var up []string
	for id := rec.ParentID; id != ""; {
		if len(up) >= mandate.MaxAgentDepth {
			return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_grant", "subject_token: the chain of issuance records is too deep")
		}
		r, err := is.cfg.Issuances.Issuance(ctx, id)
		if mandate.ErrorCode(err) == mandate.ENOTFOUND {
			return nil, mandate.OAuthErrorf(mandate.EUNAUTHORIZED, "invalid_grant", "subject_token: its ancestor %s is not on record", id)
		} else if err != nil {
			return nil, err
		}
		up = append(up, id)
		id = r.ParentID
	}
	slices.Reverse(up)
	return up, nil
}

// revokedAmong returns the first of ids that is revoked, or "".
func (is *Issuer) revokedAmong(ctx context.Context, ids []string) (string, error) {
	for _, id := range ids {
		revoked, err := is.cfg.Revocations.IsRevoked(ctx, id)
		if err != nil {
			return "", err
		}
		if revoked {
			return id, nil
		}
	}
	return "", nil
}

// actor verifies the actor token: the sub-agent's proof of its own key.
func (is *Issuer) actor(ctx context.Context, raw, typ string, parent *mandate.Claims, now time.Time) (*actor, error) {
	fail := func(format string, args ...any) (*actor, error) {
		return nil, mandate.OAuthErrorf(mandate.EUNAUTHORIZED, "invalid_grant", "actor_token: "+format, args...)
	}
	if raw == "" {
		return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "actor_token is required: a JWT signed by the sub-agent's key")
	}
	if typ != TokenTypeJWT {
		return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "actor_token_type must be %s", TokenTypeJWT)
	}
	jws, err := jose.Parse(raw)
	if err != nil {
		return fail("%v", err)
	}
	if p := typProblem(jws.Header.Typ, mandate.TypActorToken); p != "" {
		return fail("%s", p)
	}
	var c assertionClaims
	if err := json.Unmarshal(jws.Payload, &c); err != nil {
		return fail("claims are not a JSON object with the expected types: %v", err)
	}
	a := &actor{}
	var pub ed25519.PublicKey
	switch {
	case c.Issuer == "" && jws.Header.JWK != nil:
		if pub, err = jws.VerifyWithJWK(); errors.Is(err, jose.ErrMalformed) {
			return fail("jwk: %v", err)
		} else if err != nil {
			return fail("signature does not verify with the key in the jwk header")
		}
		a.JKT = jose.Thumbprint(pub)
		a.ID = ephemeralID(parent.ClientID, a.JKT)
	case c.Issuer != "":
		if c.Issuer != c.Subject {
			return fail("iss and sub must both be the registered agent's id")
		}
		agent, err := is.cfg.Agents.Agent(ctx, c.Subject)
		if mandate.ErrorCode(err) == mandate.ENOTFOUND {
			return fail("unknown agent %q: register it, or send an ephemeral agent's key in the jwk header without iss", c.Subject)
		} else if err != nil {
			return nil, err
		}
		pub, a.Agent, a.ID, a.JKT = ed25519.PublicKey(agent.PublicKey), agent, agent.ID, agent.KeyID
		if err := jws.Verify(pub); err != nil {
			return fail("signature does not verify with the key of %s", a.ID)
		}
	default:
		return fail("give iss = sub = a registered agent's id, or, for an ephemeral agent, no iss and its public key in the jwk header")
	}
	// Bound to one exchange: the delegation from the parent it names, so
	// that the delegator cannot spend it on another of its mandates.
	if c.Parent != parent.ID {
		if c.Parent == "" {
			return fail("par is required: the jti of the parent mandate (subject_token) the sub-agent made this token for")
		}
		return fail("par names mandate %q, not the subject_token %s: an actor token is good for the one delegation it was made for", c.Parent, parent.ID)
	}
	if p := is.claimsProblem(&c, now, "actor token", false); p != "" {
		return fail("%s", p)
	}
	a.Assertion = assertion{ID: c.ID, Expiry: *c.Expiry}
	return a, nil
}

// actorKey identifies an actor in approvals: its ID if registered, its
// key's thumbprint if ephemeral. (Replay keys use the actor's ID, as the
// issuance records it: usedKey.)
func actorKey(a *actor) string {
	if a.Agent != nil {
		return a.ID
	}
	return "jkt:" + a.JKT
}

// ephemeralID names an ephemeral agent under the agent that delegates to
// it. The name derives from its key, so one key under one parent is one
// agent, and a SPIFFE path segment needs nothing beyond hex.
func ephemeralID(parentAgent, jkt string) string {
	return parentAgent + mandate.EphemeralSeparator + ephemeralShort(jkt)
}

// ephemeralShort is the last segment of the ID of an ephemeral agent
// whose key has the thumbprint jkt.
func ephemeralShort(jkt string) string {
	h := sha256.Sum256([]byte(jkt))
	return hex.EncodeToString(h[:6])
}

// ownKey refuses a delegation to a key that already acts in the chain:
// an agent delegating to itself under a new name, out of the reach of the
// rules that stop it delegating to itself by name. The actor's key is
// none of the keys of the chain's registered agents (agents), none of its
// ephemeral agents' (whose IDs derive from their keys), and not the key the
// parent is bound to.
func ownKey(act *actor, parent *mandate.Claims, chain []string, agents []*mandate.Agent) error {
	refuse := func(who string) error {
		return mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_grant", "the actor's key already acts as %s in the chain: an agent cannot delegate to itself", who)
	}
	if parent.Confirm != nil && parent.Confirm.JKT == act.JKT {
		return refuse(parent.ClientID)
	}
	for _, a := range agents {
		if a != act.Agent && jose.Thumbprint(ed25519.PublicKey(a.PublicKey)) == act.JKT {
			return refuse(a.ID)
		}
	}
	suffix := mandate.EphemeralSeparator + ephemeralShort(act.JKT)
	for _, id := range chain[1:] {
		if strings.HasSuffix(id, suffix) {
			return refuse(id)
		}
	}
	return nil
}

// chainAgents checks the chain: no agent twice, every registered agent
// (and the registered ancestor of every ephemeral one) active. It returns
// the registered agents, whose limits and rules apply to the delegation.
func (is *Issuer) chainAgents(ctx context.Context, chain []string, act *actor) ([]*mandate.Agent, error) {
	seen := make(map[string]bool, len(chain))
	var agents []*mandate.Agent
	for _, id := range chain {
		if seen[id] {
			return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_grant", "agent %s would appear twice in the chain: an agent cannot delegate to itself or to an agent above it", id)
		}
		seen[id] = true
		reg := mandate.RegisteredAncestor(id)
		if seen["reg\x00"+reg] {
			continue
		}
		seen["reg\x00"+reg] = true
		a := act.Agent
		if id != act.ID || a == nil {
			var err error
			a, err = is.cfg.Agents.Agent(ctx, reg)
			if mandate.ErrorCode(err) == mandate.ENOTFOUND {
				return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_grant", "agent %s of the chain is not registered any more", reg)
			} else if err != nil {
				return nil, err
			}
		}
		if a.Status != mandate.AgentActive {
			return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_grant", "agent %s of the chain is %s", a.ID, a.Status)
		}
		agents = append(agents, a)
	}
	return agents, nil
}

// childAudience returns the child's aud: the resources asked for, each
// within the parent's audience and reached by the child's scopes, or
// else the parent's audience reached by the child's scopes.
func childAudience(resources []string, scopes mandate.ScopeSet, parent mandate.Audience) (mandate.Audience, error) {
	if len(resources) > 0 {
		aud, err := audience(resources, scopes)
		if err != nil {
			return nil, err
		}
		for _, r := range aud {
			if !parent.Contains(r) {
				return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_target", "resource %q is not in the parent mandate's audience %s", r, strings.Join(parent, " "))
			}
		}
		return aud, nil
	}
	var aud mandate.Audience
	for _, r := range parent {
		kind, target, _ := strings.Cut(r, ":")
		if reaches(scopes, kind, target) {
			aud = append(aud, r)
		}
	}
	if len(aud) == 0 {
		return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_target", "the requested scopes reach none of the parent mandate's audience %s", strings.Join(parent, " "))
	}
	return aud, nil
}

// childExpiry returns the child's exp: now + ttl, never after the parent's.
// An explicit ttl past the parent's expiry is refused rather than cut.
func (is *Issuer) childExpiry(ttl time.Duration, parent *mandate.Claims, now time.Time) (time.Time, error) {
	explicit := ttl != 0
	if !explicit {
		ttl = is.cfg.DefaultTTL
	}
	if ttl < MinTTL || ttl > MaxTTL || ttl%time.Millisecond != 0 {
		return time.Time{}, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "ttl_ms must be a whole number of milliseconds from %d to %d", MinTTL.Milliseconds(), MaxTTL.Milliseconds())
	}
	iat := mandate.NewNumericDate(now).Time
	exp := iat.Add(ttl)
	if exp.After(parent.Expiry.Time) {
		if explicit {
			return time.Time{}, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_request", "ttl_ms %d would outlive the parent mandate, which expires in %d ms", ttl.Milliseconds(), parent.Expiry.Sub(iat).Milliseconds())
		}
		exp = parent.Expiry.Time
	}
	if exp.Sub(iat) < MinTTL {
		return time.Time{}, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_grant", "the parent mandate expires in less than %d ms: nothing left to delegate", MinTTL.Milliseconds())
	}
	return exp, nil
}

// approvalRule returns why the delegation of scopes needs approval (the
// scopes that chain agents' Approval lists name), and the agents whose
// rule applies; "" if none applies. Who decides is
// mandate.ApprovalParties' rule.
func approvalRule(agents []*mandate.Agent, scopes mandate.ScopeSet) (string, []*mandate.Agent) {
	var reasons []string
	var asking []*mandate.Agent
	for _, a := range agents {
		if len(a.Approval) == 0 {
			continue
		}
		hit := a.Approval.Overlapping(scopes)
		if len(hit) == 0 {
			continue
		}
		reasons = append(reasons, "agent "+a.Name+" requires approval to delegate "+a.Approval.String()+" (asked: "+hit.String()+")")
		asking = append(asking, a)
	}
	return strings.Join(reasons, "; "), asking
}

// requestHash binds an approval to exactly one request: the parent, the
// actor, the scopes, the audience, the requested lifetime and key binding.
func requestHash(parent, actor, scope string, aud []string, ttl time.Duration, jkt string) string {
	return hashFields(parent, actor, scope, strings.Join(aud, " "), strconv.FormatInt(ttl.Milliseconds(), 10), jkt)
}

// hashFields hashes fields, each ended by a NUL (no field holds one).
func hashFields(fields ...string) string {
	h := sha256.New()
	for _, s := range fields {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// refusedGenuine records the refusal of a delegation whose parent is
// genuine (this issuer's signature, on record) but expired or revoked, or
// presented without a good proof of its key, naming its task and
// mandate, with details refused (and expired_ms) as the gateway records
// such refusals. Anyone who holds the parent can send it again and
// again: once a minute per mandate and check (as at the gateway), and
// rate-limited with the unauthenticated ones.
func (is *Issuer) refusedGenuine(ctx context.Context, pe issued, now time.Time, err error) {
	if is.cfg.Events == nil || pe.refused == "" {
		return
	}
	if is.refusedOnce.Use(pe.claims.ID+" "+pe.refused, now.Add(refusedFor), now) != nil || !is.refusals.Allow(now) {
		return
	}
	c := pe.claims
	ev := refusalEvent("delegate", err, now)
	ev.Task, ev.Mandate, ev.Parent, ev.Agent, ev.Chain, ev.Subject = c.Task, c.ID, c.Parent, c.ClientID, c.Actor.Chain(), c.Subject
	if ev.Details == nil {
		ev.Details = map[string]any{}
	}
	ev.Details["refused"] = pe.refused
	if pe.refused == "exp" {
		ev.Details["expired_ms"] = now.Sub(c.Expiry.Time).Milliseconds()
	}
	if err := is.cfg.Events.Append(ctx, ev); err != nil {
		is.logError("refused delegation not audited", err)
	}
}

// refused records a refused delegation in the audit log. Refusals of an
// unauthenticated request (no valid parent) are rate-limited, so that
// garbage cannot fill the log; the limiter counts what it drops.
func (is *Issuer) refused(ctx context.Context, parent *mandate.Claims, now time.Time, err error) {
	if is.cfg.Events == nil {
		return
	}
	ev := refusalEvent("delegate", err, now)
	if parent == nil {
		if !is.refusals.Allow(now) {
			return
		}
	} else {
		ev.Task, ev.Mandate, ev.Agent, ev.Chain, ev.Subject = parent.Task, parent.ID, parent.ClientID, parent.Actor.Chain(), parent.Subject
	}
	if err := is.cfg.Events.Append(ctx, ev); err != nil {
		is.logError("refused delegation not audited", err)
	}
}
