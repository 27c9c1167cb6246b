package httpapi

import (
	"context"
	"errors"
	"net/http"
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
		GrantTypesSupported:           []string{"client_credentials"},
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
// seconds rounded down (it is 0 for a sub-second mandate, so that clients
// refresh at once); ExpiresInMS is the exact lifetime.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	ExpiresInMS int64  `json:"expires_in_ms"`
	Scope       string `json:"scope"`
}

func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	form, err := readForm(w, r, "resource")
	if err != nil {
		writeOAuthError(w, r, s.log, err)
		return
	}
	if dp := r.Header.Values("DPoP"); len(dp) > 1 {
		writeOAuthError(w, r, s.log, mandate.OAuthErrorf(mandate.EINVALID, "invalid_dpop_proof", "more than one DPoP header"))
		return
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		writeOAuthError(w, r, s.log, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "grant_type is required"))
		return
	default:
		writeOAuthError(w, r, s.log, mandate.OAuthErrorf(mandate.EINVALID, "unsupported_grant_type", "grant_type %q is not supported: use client_credentials", gt))
		return
	}
	var ttl time.Duration
	if v := form.Get("ttl_ms"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < issuer.MinTTL.Milliseconds() || n > issuer.MaxTTL.Milliseconds() {
			writeOAuthError(w, r, s.log, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request",
				"ttl_ms must be a whole number of milliseconds from %d to %d", issuer.MinTTL.Milliseconds(), issuer.MaxTTL.Milliseconds()))
			return
		}
		ttl = time.Duration(n) * time.Millisecond
	}
	tok, err := s.cfg.Issuer.MintRoot(r.Context(), issuer.RootRequest{
		ClientID:            form.Get("client_id"),
		ClientAssertionType: form.Get("client_assertion_type"),
		ClientAssertion:     form.Get("client_assertion"),
		Scope:               form.Get("scope"),
		Resources:           form["resource"],
		TTL:                 ttl,
		TaskPurpose:         form.Get("task_purpose"),
		DPoP:                r.Header.Get("DPoP"),
	})
	if err != nil {
		writeOAuthError(w, r, s.log, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	life := tok.Claims.TTL()
	writeJSON(w, http.StatusOK, TokenResponse{
		AccessToken: tok.AccessToken, TokenType: tok.TokenType,
		ExpiresIn: int64(life / time.Second), ExpiresInMS: life.Milliseconds(), Scope: tok.Claims.Scope,
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
		writeOAuthError(w, r, s.log, err)
		return
	}
	token := form.Get("token")
	if token == "" {
		writeOAuthError(w, r, s.log, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "token is required"))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	c, rec, err := s.check(r.Context(), token)
	if err != nil || rec == nil {
		if code := mandate.ErrorCode(err); code == mandate.EUNAVAILABLE {
			writeOAuthError(w, r, s.log, err)
			return
		}
		writeJSON(w, http.StatusOK, IntrospectionResponse{Active: false})
		return
	}
	if revoked, err := s.cfg.Revocations.IsRevoked(r.Context(), c.ID); err != nil || revoked {
		writeJSON(w, http.StatusOK, IntrospectionResponse{Active: false})
		return
	}
	if a, err := s.cfg.Agents.Agent(r.Context(), c.ClientID); err != nil || a.Status != mandate.AgentActive {
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

// revoke implements RFC 7009. The caller is the admin (Bearer) or the
// holder, authenticated with its client assertion as at the token endpoint.
func (s *Server) revoke(w http.ResponseWriter, r *http.Request) {
	form, err := readForm(w, r)
	if err != nil {
		writeOAuthError(w, r, s.log, err)
		return
	}
	by := "admin"
	if !s.isAdmin(r) {
		agent, err := s.cfg.Issuer.Authenticate(r.Context(), form.Get("client_id"), form.Get("client_assertion_type"), form.Get("client_assertion"))
		if err != nil {
			writeOAuthError(w, r, s.log, err)
			return
		}
		by = agent.ID
	}
	token := form.Get("token")
	if token == "" {
		writeOAuthError(w, r, s.log, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "token is required"))
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
		writeOAuthError(w, r, s.log, err)
		return
	}
	if by != "admin" && by != c.ClientID {
		writeOAuthError(w, r, s.log, mandate.OAuthErrorf(mandate.EFORBIDDEN, "unauthorized_client", "the token was not issued to this client"))
		return
	}
	now := s.cfg.Now()
	if err := s.cfg.Revocations.Revoke(r.Context(), &mandate.Revocation{
		MandateID: c.ID, ExpiresAt: rec.ExpiresAt, RevokedAt: now, RevokedBy: by, Reason: "revoked at the revocation endpoint",
	}, &mandate.Event{V: mandate.EventVersion, Time: now.UnixNano(), Type: mandate.EventMandateRevoked,
		Task: c.Task, Mandate: c.ID, Parent: c.Parent, Agent: c.ClientID, Chain: c.Actor.Chain(), Subject: c.Subject,
		Action: "revoke", Outcome: mandate.OutcomeOK, Reason: "revoked at the revocation endpoint (RFC 7009)", By: by,
	}); err != nil {
		writeOAuthError(w, r, s.log, err)
		return
	}
	s.log.Info("mandate revoked", "mandate", c.ID, "by", by)
	w.WriteHeader(http.StatusOK)
}
