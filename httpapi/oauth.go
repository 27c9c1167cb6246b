package httpapi

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/verify"
)

// Metadata is the authorization server metadata (RFC 8414 §2), with one
// extension: the SPIFFE trust domain that agent IDs live in.
type Metadata struct {
	Issuer                        string   `json:"issuer"`
	TokenEndpoint                 string   `json:"token_endpoint"`
	JWKSURI                       string   `json:"jwks_uri"`
	IntrospectionEndpoint         string   `json:"introspection_endpoint"`
	RevocationEndpoint            string   `json:"revocation_endpoint"`
	GrantTypesSupported           []string `json:"grant_types_supported"`
	ResponseTypesSupported        []string `json:"response_types_supported"`
	TokenEndpointAuthMethods      []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgs  []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	RevocationEndpointAuthMethods []string `json:"revocation_endpoint_auth_methods_supported"`
	RevocationEndpointAuthAlgs    []string `json:"revocation_endpoint_auth_signing_alg_values_supported"`
	DPoPSigningAlgs               []string `json:"dpop_signing_alg_values_supported"`
	TrustDomain                   string   `json:"spiffe_trust_domain"`
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	iss := strings.TrimSuffix(s.cfg.Issuer.Issuer(), "/")
	writeJSON(w, http.StatusOK, Metadata{
		Issuer:                        s.cfg.Issuer.Issuer(),
		TokenEndpoint:                 s.cfg.Issuer.TokenEndpoint(),
		JWKSURI:                       iss + "/.well-known/jwks.json",
		IntrospectionEndpoint:         iss + "/oauth2/introspect",
		RevocationEndpoint:            iss + "/oauth2/revoke",
		GrantTypesSupported:           []string{"client_credentials", issuer.GrantTypeTokenExchange},
		ResponseTypesSupported:        []string{},
		TokenEndpointAuthMethods:      []string{"private_key_jwt"},
		TokenEndpointAuthSigningAlgs:  []string{"EdDSA", "Ed25519"},
		RevocationEndpointAuthMethods: []string{"private_key_jwt"},
		RevocationEndpointAuthAlgs:    []string{"EdDSA", "Ed25519"},
		DPoPSigningAlgs:               []string{"EdDSA", "Ed25519"},
		TrustDomain:                   s.cfg.TrustDomain,
	})
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) {
	// Short caching: a rotated key must reach verifiers well within the
	// retention of the retired one.
	w.Header().Set("Cache-Control", "public, max-age=60")
	writeJSON(w, http.StatusOK, struct {
		Keys []jose.JWK `json:"keys"`
	}{s.cfg.Keys.JWKS(s.cfg.Now())})
}

// TokenResponse is the RFC 6749 §5.1 success body. ExpiresIn is whole
// seconds rounded up: §5.1 has no fractions, and a 0 reads as "never
// expires" to clients such as x/oauth2, which then keep a dead mandate;
// ExpiresInMS is the exact lifetime. IssuedTokenType is set for a token
// exchange (RFC 8693 §2.2.1).
type TokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	ExpiresInMS     int64  `json:"expires_in_ms"`
	Scope           string `json:"scope"`
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	form, err := readForm(w, r, "resource")
	if err != nil {
		s.oauthError(w, r, err)
		return
	}
	if dp := r.Header.Values("DPoP"); len(dp) > 1 {
		s.oauthError(w, r, mandate.OAuthErrorf(mandate.EINVALID, "invalid_dpop_proof", "more than one DPoP header"))
		return
	}
	ttl, err := parseTTL(form.Get("ttl_ms"))
	if err != nil {
		s.oauthError(w, r, err)
		return
	}
	wait, err := parseWait(form.Get("wait_ms"))
	if err != nil {
		s.oauthError(w, r, err)
		return
	}
	ctx, stop := s.waitContext(r.Context(), &wait)
	defer stop()
	var tok *issuer.Token
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
		// approval_id and wait_ms as for token exchange, when a policy
		// asks a person to approve a new task.
		tok, err = s.cfg.Issuer.MintRoot(ctx, issuer.RootRequest{
			ClientID:            form.Get("client_id"),
			ClientAssertionType: form.Get("client_assertion_type"),
			ClientAssertion:     form.Get("client_assertion"),
			Scope:               form.Get("scope"),
			Resources:           form["resource"],
			TTL:                 ttl,
			TaskPurpose:         form.Get("task_purpose"),
			DPoP:                r.Header.Get("DPoP"),
			ApprovalID:          form.Get("approval_id"),
			Wait:                wait,
		})
	case issuer.GrantTypeTokenExchange:
		tok, err = s.tokenExchange(ctx, r, form, ttl, wait)
	case "":
		err = mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "grant_type is required")
	default:
		err = mandate.OAuthErrorf(mandate.EINVALID, "unsupported_grant_type", "grant_type %q is not supported: use client_credentials or %s", gt, issuer.GrantTypeTokenExchange)
	}
	if err != nil {
		s.oauthError(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	life := tok.Lifetime
	resp := TokenResponse{
		AccessToken: tok.AccessToken, TokenType: tok.TokenType,
		ExpiresIn: int64((life + time.Second - 1) / time.Second), ExpiresInMS: life.Milliseconds(), Scope: tok.Claims.Scope,
	}
	if tok.Claims.Parent != "" {
		resp.IssuedTokenType = issuer.TokenTypeAccessToken
	}
	writeJSON(w, http.StatusOK, resp)
}

// parseTTL reads ttl_ms: empty is 0 (the issuer's default).
func parseTTL(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < issuer.MinTTL.Milliseconds() || n > issuer.MaxTTL.Milliseconds() {
		return 0, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request",
			"ttl_ms must be a whole number of milliseconds from %d to %d", issuer.MinTTL.Milliseconds(), issuer.MaxTTL.Milliseconds())
	}
	return time.Duration(n) * time.Millisecond, nil
}

// parseWait reads wait_ms: how long the request may wait here for a
// pending approval's decision (at most issuer.MaxWait); empty is 0.
func parseWait(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > issuer.MaxWait.Milliseconds() {
		return 0, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request",
			"wait_ms must be a whole number of milliseconds from 0 to %d: poll again to wait longer", issuer.MaxWait.Milliseconds())
	}
	return time.Duration(n) * time.Millisecond, nil
}

// waitContext returns the context of a request that may wait *wait for an
// approval: a shutting-down server stops waiting (StopWaiting), and the
// client polls again. Once the server stops waiting, *wait is set to 0.
func (s *Server) waitContext(ctx context.Context, wait *time.Duration) (context.Context, context.CancelFunc) {
	if *wait == 0 {
		return ctx, func() {}
	}
	select {
	case <-s.stopWaits:
		*wait = 0
		return ctx, func() {}
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-s.stopWaits:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// tokenExchange is a delegation (RFC 8693 §2.1): subject_token is the
// parent mandate, actor_token the sub-agent's proof of its key; scope,
// resource and ttl_ms narrow the child as for root mandates. approval_id
// names the approval the request waited for, and wait_ms (at most
// issuer.MaxWait) how long to wait here for a pending one's decision.
func (s *Server) tokenExchange(ctx context.Context, r *http.Request, form url.Values, ttl, wait time.Duration) (*issuer.Token, error) {
	for _, p := range []string{"subject_token", "subject_token_type", "actor_token", "actor_token_type"} {
		if form.Get(p) == "" {
			return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "%s is required (RFC 8693 §2.1): see docs/delegation.md", p)
		}
	}
	return s.cfg.Issuer.Delegate(ctx, issuer.DelegateRequest{
		SubjectToken:     form.Get("subject_token"),
		SubjectTokenType: form.Get("subject_token_type"),
		ActorToken:       form.Get("actor_token"),
		ActorTokenType:   form.Get("actor_token_type"),
		Scope:            form.Get("scope"),
		Resources:        form["resource"],
		TTL:              ttl,
		DPoP:             r.Header.Get("DPoP"),
		ApprovalID:       form.Get("approval_id"),
		Wait:             wait,
	})
}

// check verifies a token issued here for introspection and revocation: any
// audience, binding not checked (the caller is the admin or the holder).
// It also requires the issuance record, so a token signed with our key but
// never recorded is not honoured.
func (s *Server) check(ctx context.Context, token string) (*mandate.Claims, *mandate.Issuance, error) {
	c, err := s.inspector.Verify(ctx, token)
	if err != nil {
		return nil, nil, err
	}
	rec, err := s.cfg.Issuances.Issuance(ctx, c.ID)
	if err != nil {
		return c, nil, err
	}
	return c, rec, nil
}

// IntrospectionResponse is the RFC 7662 §2.2 body. exp, iat and nbf are
// integers as §2.2 says (exp rounded down, so never later than the truth);
// ExpMS is the exact expiry in Unix milliseconds.
type IntrospectionResponse struct {
	Active    bool                  `json:"active"`
	Scope     string                `json:"scope,omitempty"`
	ClientID  string                `json:"client_id,omitempty"`
	TokenType string                `json:"token_type,omitempty"`
	Exp       int64                 `json:"exp,omitempty"`
	ExpMS     int64                 `json:"exp_ms,omitempty"`
	Iat       int64                 `json:"iat,omitempty"`
	Nbf       int64                 `json:"nbf,omitempty"`
	Sub       string                `json:"sub,omitempty"`
	Aud       mandate.Audience      `json:"aud,omitempty"`
	Iss       string                `json:"iss,omitempty"`
	Jti       string                `json:"jti,omitempty"`
	Act       *mandate.Actor        `json:"act,omitempty"`
	Task      string                `json:"task,omitempty"`
	Par       string                `json:"par,omitempty"`
	Cnf       *mandate.Confirmation `json:"cnf,omitempty"`
}

func (s *Server) introspect(w http.ResponseWriter, r *http.Request) {
	form, err := readForm(w, r)
	if err != nil {
		s.oauthError(w, r, err)
		return
	}
	token := form.Get("token")
	if token == "" {
		s.oauthError(w, r, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "token is required"))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	c, rec, err := s.check(r.Context(), token)
	if err != nil || rec == nil {
		if code := mandate.ErrorCode(err); code == mandate.EUNAVAILABLE {
			s.oauthError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, IntrospectionResponse{Active: false})
		return
	}
	if err := s.live(r.Context(), c, rec); err != nil {
		if code := mandate.ErrorCode(err); code == mandate.EUNAVAILABLE || code == mandate.EINTERNAL {
			s.oauthError(w, r, err)
			return
		}
		s.log.DebugContext(r.Context(), "introspection: inactive", "mandate", c.ID, "why", mandate.ErrorMessage(err))
		writeJSON(w, http.StatusOK, IntrospectionResponse{Active: false})
		return
	}
	typ := "Bearer"
	if c.Confirm != nil {
		typ = "DPoP"
	}
	writeJSON(w, http.StatusOK, IntrospectionResponse{
		Active: true, Scope: c.Scope, ClientID: c.ClientID, TokenType: typ,
		Exp: c.Expiry.Unix(), ExpMS: c.Expiry.UnixMilli(), Iat: c.IssuedAt.Unix(), Nbf: c.NotBefore.Unix(), Sub: c.Subject, Aud: c.Audience,
		Iss: c.Issuer, Jti: c.ID, Act: c.Actor, Task: c.Task, Par: c.Parent, Cnf: c.Confirm,
	})
}

// maxChain bounds the ancestors live follows: deeper than any chain the
// issuer allows.
const maxChain = mandate.MaxAgentDepth + 1

// live reports (nil) whether a verified mandate is still good as a whole
// chain: it and every ancestor, followed through the issuance records'
// ParentID, recorded here, unexpired and unrevoked; and every agent of
// its chain — the registered ancestor of each act entry — registered and
// active. A verifier's online check (verify.VerifyOnline) relies on this.
// The error says why not: ENOTFOUND or EFORBIDDEN for an inactive
// mandate, EUNAVAILABLE if the store cannot say.
func (s *Server) live(ctx context.Context, c *mandate.Claims, rec *mandate.Issuance) error {
	now := s.cfg.Now()
	seen := map[string]bool{}
	for i := 0; ; i++ {
		if i > maxChain || seen[rec.MandateID] {
			return mandate.Errorf(mandate.EFORBIDDEN, "mandate %s: the chain of parents is too long or loops", c.ID)
		}
		seen[rec.MandateID] = true
		if !now.Before(rec.ExpiresAt) {
			return mandate.Errorf(mandate.EFORBIDDEN, "mandate %s has expired", rec.MandateID)
		}
		revoked, err := s.cfg.Revocations.IsRevoked(ctx, rec.MandateID)
		if err != nil {
			return err
		}
		if revoked {
			return mandate.Errorf(mandate.EFORBIDDEN, "mandate %s is revoked", rec.MandateID)
		}
		if rec.ParentID == "" {
			break
		}
		parent := rec.ParentID
		if rec, err = s.cfg.Issuances.Issuance(ctx, parent); err != nil {
			return err // ENOTFOUND: an unknown ancestor is not vouched for
		}
	}
	checked := map[string]bool{}
	for _, id := range c.Actor.Chain() {
		reg := mandate.RegisteredAncestor(id)
		if checked[reg] {
			continue
		}
		checked[reg] = true
		a, err := s.cfg.Agents.Agent(ctx, reg)
		if err != nil {
			return err
		}
		if a.Status != mandate.AgentActive {
			return mandate.Errorf(mandate.EFORBIDDEN, "agent %s of the chain is %s", a.ID, a.Status)
		}
	}
	return nil
}

// revoke implements RFC 7009. The caller is the admin (Bearer) or the
// holder, authenticated with its client assertion as at the token endpoint.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	form, err := readForm(w, r)
	if err != nil {
		s.oauthError(w, r, err)
		return
	}
	by := "admin"
	if !s.isAdmin(r) {
		agent, err := s.cfg.Issuer.Authenticate(r.Context(), form.Get("client_id"), form.Get("client_assertion_type"), form.Get("client_assertion"))
		if err != nil {
			if mandate.ErrorCode(err) == mandate.EUNAUTHORIZED {
				s.refusedCredential(r, "client_assertion", "", err)
			}
			s.oauthError(w, r, err)
			return
		}
		by = agent.ID
	}
	token := form.Get("token")
	if token == "" {
		s.oauthError(w, r, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "token is required"))
		return
	}
	c, rec, err := s.check(r.Context(), token)
	var ve *verify.Error
	switch {
	case errors.As(err, &ve), mandate.ErrorCode(err) == mandate.ENOTFOUND:
		// RFC 7009 §2.2: an invalid or unknown token is not an error; an
		// expired one needs no revocation.
		w.WriteHeader(http.StatusOK)
		return
	case err != nil:
		s.oauthError(w, r, err)
		return
	}
	if by != "admin" && by != c.ClientID {
		// An authenticated agent asking to revoke another's mandate: on
		// record as its own refusal (the mandate's task is not told: the
		// request was not its holder's).
		err := mandate.OAuthErrorf(mandate.EFORBIDDEN, "unauthorized_client", "the token was not issued to this client")
		s.appendRefusal(r.Context(), &mandate.Event{V: mandate.EventVersion, Time: s.cfg.Now().UnixNano(), Type: mandate.EventDecision,
			Mandate: c.ID, Agent: by, Chain: []string{by}, Action: "revoke", Resource: c.ID, Outcome: mandate.OutcomeDeny,
			Reason: mandate.ErrorMessage(err), Details: map[string]any{"error": "unauthorized_client"}})
		s.oauthError(w, r, err)
		return
	}
	now := s.cfg.Now()
	if err := s.cfg.Revocations.Revoke(r.Context(), &mandate.Revocation{
		MandateID: c.ID, ExpiresAt: rec.ExpiresAt, RevokedAt: now, RevokedBy: by, Reason: "revoked at the revocation endpoint",
	}, &mandate.Event{V: mandate.EventVersion, Time: now.UnixNano(), Type: mandate.EventMandateRevoked,
		Task: c.Task, Mandate: c.ID, Parent: c.Parent, Agent: c.ClientID, Chain: c.Actor.Chain(), Subject: c.Subject,
		Action: "revoke", Outcome: mandate.OutcomeOK, Reason: "revoked at the revocation endpoint (RFC 7009)", By: by,
	}); err != nil {
		s.oauthError(w, r, err)
		return
	}
	s.settle(r.Context())
	s.log.Info("mandate revoked", "mandate", c.ID, "by", by)
	w.WriteHeader(http.StatusOK)
}
