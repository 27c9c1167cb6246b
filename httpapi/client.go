package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
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
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
)

// Client talks to a Mandate server: the admin API (with AdminToken) and the
// token endpoint (with an agent's key). The CLI is built on it.
type Client struct {
	BaseURL    string // e.g. http://127.0.0.1:7676
	AdminToken string
	// ApproverToken is a person's approver credential (mapr_…): it is sent
	// instead of AdminToken when set. Deciding approvals needs it.
	ApproverToken string
	// HTTP sends the requests, a client with a 30 s timeout if nil.
	// Redirects are never followed, whatever the client: the credential,
	// and a token request's form, go only to BaseURL's server.
	HTTP *http.Client
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return noredirect.Client(c.HTTP)
	}
	return noredirect.Client(&http.Client{Timeout: 30 * time.Second})
}

// do sends a request and decodes a JSON answer into out. Errors from the
// server come back as *mandate.Error with the server's code and message.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.ApproverToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.ApproverToken)
	} else if c.AdminToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return mandate.Errorf(mandate.EUNAVAILABLE, "cannot reach the server at %s: %v", c.BaseURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return mandate.Errorf(mandate.EUNAVAILABLE, "reading the answer from %s: %v", c.BaseURL, err)
	}
	if resp.StatusCode >= 300 {
		var eb ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			return &mandate.Error{Code: eb.Error, Message: eb.Message}
		}
		var ob OAuthError
		if json.Unmarshal(b, &ob) == nil && ob.Error != "" {
			return &mandate.Error{Code: codeForStatus(resp.StatusCode), OAuth: ob.Error, Message: ob.Error + ": " + ob.Description}
		}
		return mandate.Errorf(codeForStatus(resp.StatusCode), "%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return mandate.Errorf(mandate.EINTERNAL, "%s %s: the answer does not decode: %v", method, path, err)
	}
	return nil
}

// Metadata fetches the authorization server metadata.
func (c *Client) Metadata(ctx context.Context) (*Metadata, error) {
	var m Metadata
	return &m, c.do(ctx, http.MethodGet, "/.well-known/oauth-authorization-server", nil, &m)
}

// CreateAgent registers an agent.
func (c *Client) CreateAgent(ctx context.Context, req AgentRequest) (*AgentResponse, error) {
	var a AgentResponse
	return &a, c.do(ctx, http.MethodPost, "/v1/agents", req, &a)
}

// Agents lists the agents.
func (c *Client) Agents(ctx context.Context) ([]AgentResponse, error) {
	var out struct {
		Agents []AgentResponse `json:"agents"`
	}
	return out.Agents, c.do(ctx, http.MethodGet, "/v1/agents", nil, &out)
}

// Agent shows one agent by name.
func (c *Client) Agent(ctx context.Context, name string) (*AgentResponse, error) {
	var a AgentResponse
	return &a, c.do(ctx, http.MethodGet, "/v1/agents/"+url.PathEscape(name), nil, &a)
}

// SetAgentStatus disables or enables an agent.
func (c *Client) SetAgentStatus(ctx context.Context, name string, status mandate.AgentStatus) (*AgentResponse, error) {
	verb := "disable"
	if status == mandate.AgentActive {
		verb = "enable"
	}
	var a AgentResponse
	return &a, c.do(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(name)+"/"+verb, nil, &a)
}

// Keys lists the published signing keys.
func (c *Client) Keys(ctx context.Context) ([]KeyResponse, error) {
	var out struct {
		Keys []KeyResponse `json:"keys"`
	}
	return out.Keys, c.do(ctx, http.MethodGet, "/v1/keys", nil, &out)
}

// RotateKeys makes a new active signing key.
func (c *Client) RotateKeys(ctx context.Context) (*KeyResponse, error) {
	var k KeyResponse
	return &k, c.do(ctx, http.MethodPost, "/v1/keys/rotate", nil, &k)
}

// TokenRequest asks for a root mandate with an agent's key.
type TokenRequest struct {
	AgentID   string // the agent's SPIFFE ID
	Key       ed25519.PrivateKey
	Scope     string
	Resources []string
	TTL       time.Duration // 0: the server's default
	Purpose   string
	DPoP      bool // bind the mandate to Key with a DPoP proof
	// ApprovalID names the approval a previous attempt was told to wait
	// for (a policy asked a person to approve the task); Wait is how long
	// the server may hold the request waiting for its decision (at most a
	// minute).
	ApprovalID string
	Wait       time.Duration
}

// Token gets a root mandate: it signs a client assertion (RFC 7523) with
// the agent's key, adds a DPoP proof if asked, and posts to the token
// endpoint named in the server's metadata. A mint that waits for a
// person's approval gives a *PendingError: call Token again with its
// ApprovalID.
func (c *Client) Token(ctx context.Context, tr TokenRequest) (*TokenResponse, error) {
	md, err := c.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {ClientAssertion(tr.Key, tr.AgentID, md.Issuer, now)},
		"scope":                 {tr.Scope},
	}
	for _, r := range tr.Resources {
		form.Add("resource", r)
	}
	if tr.TTL > 0 {
		form.Set("ttl_ms", strconv.FormatInt(tr.TTL.Milliseconds(), 10))
	}
	if tr.Purpose != "" {
		form.Set("task_purpose", tr.Purpose)
	}
	setApproval(form, tr.ApprovalID, tr.Wait)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, md.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if tr.DPoP {
		req.Header.Set("DPoP", dpop.NewProofMillis(tr.Key, http.MethodPost, md.TokenEndpoint, "", now))
	}
	return c.postToken(ctx, c.waitingHTTP(tr.Wait), req, md.TokenEndpoint)
}

// setApproval adds approval_id and wait_ms to a token request.
func setApproval(form url.Values, approvalID string, wait time.Duration) {
	if approvalID != "" {
		form.Set("approval_id", approvalID)
	}
	if wait > 0 {
		form.Set("wait_ms", strconv.FormatInt(wait.Milliseconds(), 10))
	}
}

// waitingHTTP is the HTTP client of a token request the server may hold
// for wait.
func (c *Client) waitingHTTP(wait time.Duration) *http.Client {
	if c.HTTP != nil {
		return noredirect.Client(c.HTTP)
	}
	return noredirect.Client(&http.Client{Timeout: 30*time.Second + wait})
}

// postToken sends a token request and reads the answer: a TokenResponse,
// a *PendingError for authorization_pending, or a *mandate.Error carrying
// the OAuth error code.
func (c *Client) postToken(ctx context.Context, hc *http.Client, req *http.Request, endpoint string) (*TokenResponse, error) {
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, mandate.Errorf(mandate.EUNAVAILABLE, "token request to %s stopped: %v", endpoint, ctx.Err())
		}
		return nil, mandate.Errorf(mandate.EUNAVAILABLE, "cannot reach the token endpoint %s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var ob OAuthError
		if json.Unmarshal(b, &ob) == nil && ob.Error != "" {
			if ob.Error == "authorization_pending" && ob.ApprovalID != "" {
				pe := &PendingError{ApprovalID: ob.ApprovalID, Interval: time.Duration(ob.Interval) * time.Second, Description: ob.Description}
				if ob.ExpiresIn != nil {
					pe.ExpiresIn = time.Duration(*ob.ExpiresIn) * time.Second
				}
				return nil, pe
			}
			return nil, &mandate.Error{Code: codeForStatus(resp.StatusCode), OAuth: ob.Error, Message: ob.Error + ": " + ob.Description}
		}
		return nil, mandate.Errorf(codeForStatus(resp.StatusCode), "token endpoint: HTTP %d", resp.StatusCode)
	}
	var tok TokenResponse
	if err := json.Unmarshal(b, &tok); err != nil {
		return nil, fmt.Errorf("token endpoint: the answer does not decode: %w", err)
	}
	return &tok, nil
}

// PendingError is the token endpoint's authorization_pending answer to a
// delegation that waits for a person's approval: repeat the request with
// ApprovalID (and a fresh actor token and DPoP proof), no more often than
// every Interval, until the approval is decided or ExpiresIn has passed.
type PendingError struct {
	ApprovalID  string
	Interval    time.Duration
	ExpiresIn   time.Duration // until the approval times out, which is a denial
	Description string
}

func (e *PendingError) Error() string { return "authorization_pending: " + e.Description }

// Unwrap lets errors.As find the *mandate.Error with the OAuth code.
func (e *PendingError) Unwrap() error {
	return &mandate.Error{Code: mandate.EFORBIDDEN, OAuth: "authorization_pending", Message: e.Error()}
}

// ClientAssertion returns a private_key_jwt client assertion (RFC 7523 §3)
// for the agent: typ client-authentication+jwt, iss = sub = agentID, aud =
// the server's issuer identifier (draft-ietf-oauth-rfc7523bis), a fresh
// jti, valid for one minute.
func ClientAssertion(key ed25519.PrivateKey, agentID, issuer string, now time.Time) string {
	claims := map[string]any{
		"iss": agentID, "sub": agentID, "aud": issuer,
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		"jti": mandate.NewID("a_", now),
	}
	b, _ := json.Marshal(claims)
	return jose.Sign(key, jose.Header{Typ: mandate.TypClientAssertion}, b)
}

// Events queries the audit log (GET /v1/events); q holds the query
// parameters (task, mandate, agent, type, since, until, after, limit, last).
func (c *Client) Events(ctx context.Context, q url.Values) ([]mandate.LoggedEvent, error) {
	var out EventsResponse
	return out.Events, c.do(ctx, http.MethodGet, "/v1/events?"+q.Encode(), nil, &out)
}

// PublishCheckpoint asks for a checkpoint of everything logged so far.
func (c *Client) PublishCheckpoint(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.BaseURL, "/")+"/v1/audit/checkpoint", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, mandate.Errorf(mandate.EUNAVAILABLE, "cannot reach the server at %s: %v", c.BaseURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		var eb ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			return nil, &mandate.Error{Code: eb.Error, Message: eb.Message}
		}
		return nil, mandate.Errorf(codeForStatus(resp.StatusCode), "checkpoint: HTTP %d", resp.StatusCode)
	}
	return b, nil
}

// AuthTransport adds the admin credential to every request: for reading
// the audit log's entry bundles with tlog tooling. A request an
// http.Client makes to follow a redirect to another origin (scheme and
// host) than the first request's fails: the credential is not sent there.
type AuthTransport struct {
	Token string
	Base  http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t AuthTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	first := r
	for first.Response != nil && first.Response.Request != nil {
		first = first.Response.Request
	}
	if first.URL.Scheme != r.URL.Scheme || !strings.EqualFold(first.URL.Host, r.URL.Host) {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("%s redirected to another origin, %s://%s: the admin credential is not sent there", first.URL.Host, r.URL.Scheme, r.URL.Host)
	}
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.Token)
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}

// DelegateRequest asks for a child mandate by token exchange (RFC 8693):
// the holder of SubjectToken delegates part of it to the agent whose key
// is ActorKey.
type DelegateRequest struct {
	SubjectToken string // the parent mandate
	// ParentKey is the parent holder's key. If set, the request carries a
	// DPoP proof signed by it, which a DPoP-bound parent needs; the child
	// is then bound to ActorKey.
	ParentKey ed25519.PrivateKey
	// ActorKey is the sub-agent's key, which signs the actor token.
	ActorKey ed25519.PrivateKey
	// ActorToken, if set, is an actor token the sub-agent made itself
	// (ActorToken), for this parent; ActorKey and ActorID are then unused.
	ActorToken string
	// ActorID is a registered sub-agent's SPIFFE ID; empty for a new
	// ephemeral agent, known by ActorKey alone.
	ActorID   string
	Scope     string // empty: the parent's scopes
	Resources []string
	TTL       time.Duration // 0: the server's default, cut to the parent's expiry
	// ApprovalID names the approval a previous attempt was told to wait
	// for; Wait is how long the server may hold the request waiting for
	// its decision (at most a minute).
	ApprovalID string
	Wait       time.Duration
}

// Delegate gets a child mandate: it signs an actor token with ActorKey,
// adds a DPoP proof by ParentKey if given, and posts a token exchange to
// the token endpoint. A delegation that waits for a person's approval
// gives a *PendingError: call Delegate again with its ApprovalID.
func (c *Client) Delegate(ctx context.Context, dr DelegateRequest) (*TokenResponse, error) {
	if dr.ActorKey == nil && dr.ActorToken == "" {
		return nil, mandate.Errorf(mandate.EINVALID, "delegate: the actor's key or its actor token is required")
	}
	parentID, err := MandateID(dr.SubjectToken)
	if err != nil {
		return nil, err
	}
	md, err := c.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	actorToken := dr.ActorToken
	if actorToken == "" {
		actorToken = ActorToken(dr.ActorKey, dr.ActorID, parentID, md.Issuer, now)
	}
	form := url.Values{
		"grant_type":         {issuer.GrantTypeTokenExchange},
		"subject_token":      {dr.SubjectToken},
		"subject_token_type": {issuer.TokenTypeJWT},
		"actor_token":        {actorToken},
		"actor_token_type":   {issuer.TokenTypeJWT},
	}
	if dr.Scope != "" {
		form.Set("scope", dr.Scope)
	}
	for _, r := range dr.Resources {
		form.Add("resource", r)
	}
	if dr.TTL > 0 {
		form.Set("ttl_ms", strconv.FormatInt(dr.TTL.Milliseconds(), 10))
	}
	setApproval(form, dr.ApprovalID, dr.Wait)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, md.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if dr.ParentKey != nil {
		req.Header.Set("DPoP", dpop.NewProofMillis(dr.ParentKey, http.MethodPost, md.TokenEndpoint, "", now))
	}
	return c.postToken(ctx, c.waitingHTTP(dr.Wait), req, md.TokenEndpoint)
}

// ActorToken returns an actor token (RFC 8693 §2.1) for one delegation
// from the mandate parentID (the subject token's jti): a JWT signed by the
// sub-agent's key, typ vnd.mandatehq.actor+jwt, par = parentID, aud = the
// server's issuer identifier, a fresh jti, valid for one minute. For a registered
// agent, iss = sub = agentID; for an ephemeral one (agentID empty), no iss
// and the public key in the jwk header. It authenticates nothing else:
// not the agent at the token or revocation endpoint, not another exchange.
func ActorToken(key ed25519.PrivateKey, agentID, parentID, issuer string, now time.Time) string {
	claims := map[string]any{
		"aud": issuer, "iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		"jti": mandate.NewID("a_", now), "par": parentID,
	}
	h := jose.Header{Typ: mandate.TypActorToken}
	if agentID != "" {
		claims["iss"], claims["sub"] = agentID, agentID
	} else {
		jwk := jose.NewPublicJWK(key.Public().(ed25519.PublicKey))
		h.JWK = &jwk
	}
	b, _ := json.Marshal(claims)
	return jose.Sign(key, h, b)
}

// MandateID returns the jti of a mandate, read without verifying it: the
// parent an actor token is made for. EINVALID if token is not a mandate.
func MandateID(token string) (string, error) {
	jws, err := jose.Parse(token)
	if err != nil || !mandate.TypIs(jws.Header.Typ, mandate.TypMandate) {
		return "", mandate.Errorf(mandate.EINVALID, "the parent is not a mandate (a JWT of typ %s)", mandate.TypMandate)
	}
	var c struct {
		ID string `json:"jti"`
	}
	if err := json.Unmarshal(jws.Payload, &c); err != nil || c.ID == "" {
		return "", mandate.Errorf(mandate.EINVALID, "the parent mandate has no jti")
	}
	return c.ID, nil
}

// CreateApprover registers a person who may decide approvals. The answer
// holds their credential, once: the server keeps only its hash.
func (c *Client) CreateApprover(ctx context.Context, email string) (*ApproverResponse, error) {
	var a ApproverResponse
	return &a, c.do(ctx, http.MethodPost, "/v1/approvers", ApproverRequest{Email: email}, &a)
}

// Approvers lists the approvers.
func (c *Client) Approvers(ctx context.Context) ([]ApproverResponse, error) {
	var out struct {
		Approvers []ApproverResponse `json:"approvers"`
	}
	return out.Approvers, c.do(ctx, http.MethodGet, "/v1/approvers", nil, &out)
}

// DisableApprover disables an approver: their credential is refused and
// their decisions too, from now on.
func (c *Client) DisableApprover(ctx context.Context, email string) (*ApproverResponse, error) {
	var a ApproverResponse
	return &a, c.do(ctx, http.MethodPost, "/v1/approvers/"+url.PathEscape(email)+"/disable", nil, &a)
}

// Approvals lists approvals, newest first; status and task filter if not
// empty. An approver sees only those they may decide.
func (c *Client) Approvals(ctx context.Context, status, task string) ([]*mandate.Approval, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	if task != "" {
		q.Set("task", task)
	}
	path := "/v1/approvals"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out ApprovalsResponse
	return out.Approvals, c.do(ctx, http.MethodGet, path, nil, &out)
}

// Approval shows one approval.
func (c *Client) Approval(ctx context.Context, id string) (*mandate.Approval, error) {
	var a mandate.Approval
	return &a, c.do(ctx, http.MethodGet, "/v1/approvals/"+url.PathEscape(id), nil, &a)
}

// Decide approves or denies an approval, with an optional note. It needs
// ApproverToken: the admin credential cannot decide.
func (c *Client) Decide(ctx context.Context, id string, approve bool, note string) (*mandate.Approval, error) {
	verb := "deny"
	if approve {
		verb = "approve"
	}
	var a mandate.Approval
	return &a, c.do(ctx, http.MethodPost, "/v1/approvals/"+url.PathEscape(id)+"/"+verb, DecisionRequest{Note: note}, &a)
}

// Tasks lists the most recent tasks, newest first (limit 0: the server's
// default).
func (c *Client) Tasks(ctx context.Context, limit int) ([]TaskSummary, error) {
	path := "/v1/tasks"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	var out TasksResponse
	return out.Tasks, c.do(ctx, http.MethodGet, path, nil, &out)
}

// Task returns a task's delegation tree.
func (c *Client) Task(ctx context.Context, id string) (*TaskResponse, error) {
	var t TaskResponse
	return &t, c.do(ctx, http.MethodGet, "/v1/tasks/"+url.PathEscape(id), nil, &t)
}

// Ephemeral lists the live ephemeral agents.
func (c *Client) Ephemeral(ctx context.Context) ([]issuer.EphemeralAgent, error) {
	var out EphemeralResponse
	return out.Agents, c.do(ctx, http.MethodGet, "/v1/agents/ephemeral", nil, &out)
}

// Tools lists the gateway's pinned tool definitions, of one server or all
// (server "").
func (c *Client) Tools(ctx context.Context, server string) ([]*mandate.ToolPin, error) {
	var out ToolsResponse
	return out.Tools, c.do(ctx, http.MethodGet, "/v1/tools?server="+url.QueryEscape(server), nil, &out)
}

// Tool returns one pinned tool definition.
func (c *Client) Tool(ctx context.Context, server, name string) (*mandate.ToolPin, error) {
	var out mandate.ToolPin
	return &out, c.do(ctx, http.MethodGet, "/v1/tools/"+url.PathEscape(server)+"/"+url.PathEscape(name), nil, &out)
}

// ApproveTool approves the definition with hash of a changed or flagged
// tool.
func (c *Client) ApproveTool(ctx context.Context, server, name, hash string) (*mandate.ToolPin, error) {
	var out mandate.ToolPin
	return &out, c.do(ctx, http.MethodPost, "/v1/tools/"+url.PathEscape(server)+"/"+url.PathEscape(name)+"/approve",
		ApproveToolRequest{Hash: hash}, &out)
}

// Revoke revokes a mandate, every live mandate of an agent, or a task
// (RevocationRequest), with their descendants.
func (c *Client) Revoke(ctx context.Context, req RevocationRequest) (*RevocationResponse, error) {
	var out RevocationResponse
	return &out, c.do(ctx, http.MethodPost, "/v1/revocations", req, &out)
}

// Follow follows the live event stream (GET /v1/events with Accept:
// text/event-stream) from log position after on, with the filters of q,
// calling fn for each event in log order until ctx ends (nil) or fn or the
// server fails. When the server says the client fell behind ("overflow")
// or the connection drops after events came, it reconnects with
// Last-Event-ID, so nothing is missed or repeated.
func (c *Client) Follow(ctx context.Context, q url.Values, after int64, fn func(mandate.LoggedEvent) error) error {
	hc := noredirect.Client(&http.Client{Transport: c.http().Transport}) // no overall timeout: a stream lasts
	next := after
	for {
		connected, err := c.follow(ctx, hc, q, next, func(e mandate.LoggedEvent) error {
			next = e.Index + 1
			return fn(e)
		})
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && !connected:
			return err
		}
		// Reconnect: the server ended the stream (overflow, shutdown) or
		// the connection dropped.
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// follow reads one stream; connected says whether the server took it (a
// reconnection is then worth trying when it ends).
func (c *Client) follow(ctx context.Context, hc *http.Client, q url.Values, next int64, fn func(mandate.LoggedEvent) error) (bool, error) {
	q2 := url.Values{}
	for k, v := range q {
		q2[k] = v
	}
	q2.Del("limit")
	q2.Del("last")
	q2.Set("after", strconv.FormatInt(next, 10))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(c.BaseURL, "/")+"/v1/events?"+q2.Encode(), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if c.AdminToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.AdminToken)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return false, mandate.Errorf(mandate.EUNAVAILABLE, "cannot reach the server at %s: %v", c.BaseURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var eb ErrorBody
		if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
			return false, &mandate.Error{Code: eb.Error, Message: eb.Message}
		}
		return false, mandate.Errorf(codeForStatus(resp.StatusCode), "GET /v1/events (stream): HTTP %d", resp.StatusCode)
	}
	if mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";"); strings.TrimSpace(mt) != "text/event-stream" {
		return false, mandate.Errorf(mandate.EUNAVAILABLE, "%s does not serve the event stream (Content-Type %q): is it a Mandate server of this version?", c.BaseURL, mt)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20) // an event is at most a few hundred KiB
	var event, data string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if event != "" && event != "overflow" && data != "" {
				var e mandate.LoggedEvent
				if err := json.Unmarshal([]byte(data), &e); err != nil || e.Event == nil {
					return false, mandate.Errorf(mandate.EINTERNAL, "the event stream sent an event that does not decode: %v", err)
				}
				if err := fn(e); err != nil {
					return false, err
				}
			}
			event, data = "", ""
		case strings.HasPrefix(line, "event: "):
			event = line[len("event: "):]
		case strings.HasPrefix(line, "data: "):
			data = line[len("data: "):]
		}
	}
	return true, sc.Err()
}
