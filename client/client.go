// Package client is the Go client for agents: it obtains mandates from a
// Mandate server and hands them on to sub-agents.
//
// An agent creates a [Client] from its registered ID and private key, asks
// for a root mandate for a task ([Client.Root]), and delegates parts of it
// to sub-agents ([Client.Delegate]): registered ones, or ephemeral ones
// made on the spot ([NewEphemeral]), each receiving a narrower mandate. The
// client signs the client assertions and actor tokens, attaches DPoP
// proofs when mandates are key-bound, waits for approvals when a
// delegation needs one, and a [Source] refreshes a mandate before it
// expires. It speaks only OAuth 2.0 (RFC 6749, 7523, 8693, 8707, 9449).
package client

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/internal/noredirect"
	"github.com/mandatehq/mandate/jose"
)

// OAuth values this client sends.
const (
	clientAssertionType    = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	grantTypeTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"
	tokenTypeJWT           = "urn:ietf:params:oauth:token-type:jwt"
)

// maxResponse bounds a token endpoint response body.
const maxResponse = 1 << 20

// DefaultTimeout bounds each request of a Client whose Config.HTTPClient
// is nil.
const DefaultTimeout = 30 * time.Second

// Config configures a Client.
type Config struct {
	// Issuer is the Mandate server's issuer identifier (its metadata's
	// issuer), e.g. https://mandate.example: the aud of the client
	// assertions and actor tokens.
	Issuer string
	// TokenEndpoint is Issuer + "/oauth2/token" if empty.
	TokenEndpoint string
	// AgentID is the registered agent's SPIFFE ID, and Key its private
	// key. An ephemeral agent, which has no registration, needs no Client
	// of its own: its parent delegates to it.
	AgentID string
	Key     ed25519.PrivateKey
	// DPoP binds root mandates to Key (RFC 9449): a stolen mandate is
	// useless without the key. Children of a bound mandate are bound to
	// their own agent's key.
	DPoP bool
	// HTTPClient sends the requests, with DefaultTimeout per request if
	// nil. Redirects are never followed, whatever the client: a 307 would
	// send the form, client assertion and parent mandate included, to
	// wherever it points.
	HTTPClient *http.Client
	// Now is time.Now if nil.
	Now func() time.Time
}

// Client obtains mandates for one registered agent. It is safe for
// concurrent use.
type Client struct {
	cfg Config
}

// New returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.Issuer == "" || cfg.AgentID == "" {
		return nil, errors.New("client: Issuer and AgentID are required")
	}
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("client: Key must be an Ed25519 private key")
	}
	if cfg.TokenEndpoint == "" {
		cfg.TokenEndpoint = strings.TrimSuffix(cfg.Issuer, "/") + "/oauth2/token"
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: DefaultTimeout}
	}
	cfg.HTTPClient = noredirect.Client(cfg.HTTPClient)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Client{cfg: cfg}, nil
}

// Request says what a mandate should grant.
type Request struct {
	Scope     string        // space-separated scopes; for a delegation, empty means the parent's
	Resources []string      // RFC 8707 resource indicators (mcp:<server>, http:<upstream>), the audience
	TTL       time.Duration // whole milliseconds; zero means the server's default (cut to the parent's expiry)
	Purpose   string        // the task's purpose, for a root mandate
}

// Mandate is a mandate held by an agent: the token, its claims, and the key
// it is bound to (for DPoP proofs).
type Mandate struct {
	Token  string
	Type   string // "DPoP" or "Bearer"
	Claims *mandate.Claims
	// Lifetime is the exact lifetime the issuer gave (expires_in_ms): the
	// claims' iat is rounded down to the second.
	Lifetime time.Duration
	// Key is the holder's private key: the registered agent's, or the
	// ephemeral agent's. Proofs for a DPoP-bound mandate are signed with it.
	Key ed25519.PrivateKey
}

// ExpiresIn is the time left before m expires.
func (m *Mandate) ExpiresIn(now time.Time) time.Duration { return m.Claims.Expiry.Sub(now) }

// Authorize sets the Authorization header of r for m, and for a DPoP-bound
// mandate a fresh DPoP proof of r's method and URL (RFC 9449 §7.1).
func (m *Mandate) Authorize(r *http.Request) error {
	if m.Type == "DPoP" {
		r.Header.Set("Authorization", "DPoP "+m.Token)
		r.Header.Set("DPoP", dpop.NewProofMillis(m.Key, r.Method, r.URL.String(), m.Token, time.Now()))
		return nil
	}
	r.Header.Set("Authorization", "Bearer "+m.Token)
	return nil
}

// Actor is the sub-agent a delegation is for: a registered agent (ID and
// its key) or an ephemeral one (no ID, a fresh key).
type Actor struct {
	ID  string // a registered agent's SPIFFE ID; empty for an ephemeral agent
	Key ed25519.PrivateKey
}

// NewEphemeral returns a new ephemeral actor with a fresh key. The server
// names it <parent's agent>/sub/<id>; it lives as long as its mandate.
func NewEphemeral() Actor {
	_, k, _ := ed25519.GenerateKey(rand.Reader) // never fails (crypto/rand, Go 1.24+)
	return Actor{Key: k}
}

// Error is an OAuth error response from the server (RFC 6749 §5.2).
type Error struct {
	Status      int
	Code        string // error, e.g. invalid_scope
	Description string // error_description
	// ApprovalID and Interval are set with authorization_pending: the
	// request waits for a person's approval.
	ApprovalID string
	Interval   time.Duration
}

func (e *Error) Error() string {
	s := "mandate: " + e.Code
	if e.Description != "" {
		s += ": " + e.Description
	}
	return s
}

// IsPending reports whether err says that a request waits for approval.
func IsPending(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == "authorization_pending"
}

// Root obtains a root mandate of a new task (client_credentials with a
// private_key_jwt client assertion, RFC 7523). If policy asks a person to
// approve the task, it returns the authorization_pending *Error at once:
// use RootWait to wait.
func (c *Client) Root(ctx context.Context, req Request) (*Mandate, error) {
	return c.RootWait(ctx, req, ApprovalOptions{})
}

// RootWait is Root that, if the task needs a person's approval, waits up
// to opts.Wait for the decision, polling with fresh client assertions.
func (c *Client) RootWait(ctx context.Context, req Request, opts ApprovalOptions) (*Mandate, error) {
	return c.untilApproved(ctx, opts, func(form url.Values) (*Mandate, error) {
		form.Set("grant_type", "client_credentials")
		form.Set("client_id", c.cfg.AgentID)
		form.Set("client_assertion_type", clientAssertionType)
		form.Set("client_assertion", c.clientAssertion())
		req.add(form)
		if req.Purpose != "" {
			form.Set("task_purpose", req.Purpose)
		}
		var proofKey ed25519.PrivateKey
		if c.cfg.DPoP {
			proofKey = c.cfg.Key
		}
		return c.token(ctx, form, proofKey, c.cfg.Key)
	})
}

// ApprovalOptions say how a request that needs a person's approval waits.
type ApprovalOptions struct {
	// Wait is how long to wait for a person's approval, if the request
	// needs one; zero returns the authorization_pending *Error at once
	// (poll again with ApprovalID).
	Wait time.Duration
	// ApprovalID resumes a request that was pending.
	ApprovalID string
}

// DelegateOptions are the options of a delegation beyond its Request.
type DelegateOptions = ApprovalOptions

// Delegate hands part of parent to actor (RFC 8693 token exchange) and
// returns the child mandate: its scopes within the parent's, its audience
// within the parent's, its expiry no later than the parent's. The parent's
// holder proves possession with a DPoP proof if parent is bound; the actor
// proves its own key with an actor token made for this exchange only (it
// names parent, docs/delegation.md). If the delegation needs
// approval, Delegate waits up to opts.Wait, polling with fresh tokens.
func (c *Client) Delegate(ctx context.Context, parent *Mandate, actor Actor, req Request, opts DelegateOptions) (*Mandate, error) {
	if len(actor.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("client: the actor needs an Ed25519 key")
	}
	if parent == nil || parent.Claims == nil || parent.Claims.ID == "" {
		return nil, errors.New("client: the parent mandate needs its claims: its jti is what the actor token is for")
	}
	return c.untilApproved(ctx, opts, func(form url.Values) (*Mandate, error) {
		form.Set("grant_type", grantTypeTokenExchange)
		form.Set("subject_token", parent.Token)
		form.Set("subject_token_type", tokenTypeJWT)
		form.Set("actor_token", c.actorToken(actor, parent.Claims.ID))
		form.Set("actor_token_type", tokenTypeJWT)
		req.add(form)
		var proofKey ed25519.PrivateKey
		if parent.Type == "DPoP" {
			proofKey = parent.Key
		}
		return c.token(ctx, form, proofKey, actor.Key)
	})
}

// untilApproved sends the token request that try fills in (with fresh
// tokens each time), and while it is authorization_pending, polls until
// opts.Wait has passed, keeping the server's interval (RFC 8628 §3.5).
func (c *Client) untilApproved(ctx context.Context, opts ApprovalOptions, try func(url.Values) (*Mandate, error)) (*Mandate, error) {
	deadline := c.cfg.Now().Add(opts.Wait)
	approval := opts.ApprovalID
	for {
		form := url.Values{}
		if approval != "" {
			form.Set("approval_id", approval)
		}
		if left := deadline.Sub(c.cfg.Now()); left > 0 {
			// The server holds the request until the decision or wait_ms.
			form.Set("wait_ms", strconv.FormatInt(min(left, time.Minute).Milliseconds(), 10))
		}
		m, err := try(form)
		var e *Error
		if !errors.As(err, &e) || e.Code != "authorization_pending" || !c.cfg.Now().Before(deadline) {
			return m, err
		}
		approval = e.ApprovalID
		if e.Interval > 0 {
			select {
			case <-time.After(e.Interval):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
}

func (r Request) add(form url.Values) {
	if r.Scope != "" {
		form.Set("scope", r.Scope)
	}
	for _, res := range r.Resources {
		form.Add("resource", res)
	}
	if r.TTL > 0 {
		form.Set("ttl_ms", strconv.FormatInt(r.TTL.Milliseconds(), 10))
	}
}

// clientAssertion signs a client assertion (private_key_jwt, RFC 7523
// §3) with the agent's key: typ client-authentication+jwt, iss = sub = the
// agent's ID.
func (c *Client) clientAssertion() string {
	claims := c.jwtClaims()
	claims["iss"], claims["sub"] = c.cfg.AgentID, c.cfg.AgentID
	return signClaims(c.cfg.Key, jose.Header{Typ: mandate.TypClientAssertion}, claims)
}

// actorToken signs actor's token (RFC 8693 §2.1) for one delegation, from
// the mandate parentID: typ vnd.mandatehq.actor+jwt and par = parentID, so
// that it is good for that exchange only. A registered actor names itself
// in iss = sub; an ephemeral one puts its public key in the jwk header.
func (c *Client) actorToken(actor Actor, parentID string) string {
	claims := c.jwtClaims()
	claims["par"] = parentID
	h := jose.Header{Typ: mandate.TypActorToken}
	if actor.ID == "" {
		jwk := jose.NewPublicJWK(actor.Key.Public().(ed25519.PublicKey))
		h.JWK = &jwk
	} else {
		claims["iss"], claims["sub"] = actor.ID, actor.ID
	}
	return signClaims(actor.Key, h, claims)
}

// jwtClaims returns the claims every JWT for the token endpoint has: aud,
// the issuer identifier alone (draft-ietf-oauth-rfc7523bis), iat, a
// minute's exp and a fresh jti.
func (c *Client) jwtClaims() map[string]any {
	now := c.cfg.Now()
	var jti [16]byte
	rand.Read(jti[:])
	return map[string]any{
		"aud": c.cfg.Issuer,
		"iat": now.Unix(),
		"exp": now.Add(time.Minute).Unix(),
		"jti": base64.RawURLEncoding.EncodeToString(jti[:]),
	}
}

func signClaims(key ed25519.PrivateKey, h jose.Header, claims map[string]any) string {
	b, _ := json.Marshal(claims) // cannot fail: strings and integers
	return jose.Sign(key, h, b)
}

// tokenResponse is the token endpoint's answer, success or error.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
	ApprovalID  string `json:"approval_id"`
	Interval    int64  `json:"interval"`
	ExpiresInMS int64  `json:"expires_in_ms"`
}

// token posts form to the token endpoint, with a DPoP proof signed by
// proofKey if set, and returns the mandate, held with holderKey.
func (c *Client) token(ctx context.Context, form url.Values, proofKey, holderKey ed25519.PrivateKey) (*Mandate, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if proofKey != nil {
		r.Header.Set("DPoP", dpop.NewProofMillis(proofKey, http.MethodPost, c.cfg.TokenEndpoint, "", c.cfg.Now()))
	}
	resp, err := c.cfg.HTTPClient.Do(r)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, err
	}
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return nil, fmt.Errorf("mandate: token endpoint answered %s with no JSON", resp.Status)
	}
	if resp.StatusCode != http.StatusOK || tr.Error != "" {
		return nil, &Error{Status: resp.StatusCode, Code: tr.Error, Description: tr.Description,
			ApprovalID: tr.ApprovalID, Interval: time.Duration(tr.Interval) * time.Second}
	}
	jws, err := jose.Parse(tr.AccessToken)
	if err != nil {
		return nil, fmt.Errorf("mandate: the token endpoint returned no mandate: %w", err)
	}
	if !mandate.TypIs(jws.Header.Typ, mandate.TypMandate) {
		return nil, fmt.Errorf("mandate: the token endpoint returned no mandate: typ is %q, want %s", jws.Header.Typ, mandate.TypMandate)
	}
	var claims mandate.Claims
	if err := json.Unmarshal(jws.Payload, &claims); err != nil {
		return nil, fmt.Errorf("mandate: the mandate's claims do not parse: %w", err)
	}
	// The client does not verify the signature: it trusts its own TLS
	// connection to the issuer, and resource servers verify.
	return &Mandate{Token: tr.AccessToken, Type: tr.TokenType, Claims: &claims, Lifetime: time.Duration(tr.ExpiresInMS) * time.Millisecond, Key: holderKey}, nil
}
