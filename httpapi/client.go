package httpapi

import (
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
	"github.com/mandatehq/mandate/jose"
)

// Client talks to a Mandate server: the admin API (with AdminToken) and the
// token endpoint (with an agent's key). The CLI is built on it.
type Client struct {
	BaseURL    string // e.g. http://127.0.0.1:7676
	AdminToken string
	HTTP       *http.Client // a client with a 30 s timeout if nil
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return &http.Client{Timeout: 30 * time.Second}
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
	if c.AdminToken != "" {
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
}

// Token gets a root mandate: it signs a client assertion (RFC 7523) with
// the agent's key, adds a DPoP proof if asked, and posts to the token
// endpoint named in the server's metadata.
func (c *Client) Token(ctx context.Context, tr TokenRequest) (*TokenResponse, error) {
	md, err := c.Metadata(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {ClientAssertion(tr.Key, tr.AgentID, md.TokenEndpoint, now)},
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, md.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if tr.DPoP {
		req.Header.Set("DPoP", dpop.NewProof(tr.Key, http.MethodPost, md.TokenEndpoint, "", now))
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return nil, mandate.Errorf(mandate.EUNAVAILABLE, "cannot reach the token endpoint %s: %v", md.TokenEndpoint, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		var ob OAuthError
		if json.Unmarshal(b, &ob) == nil && ob.Error != "" {
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

// ClientAssertion returns a private_key_jwt client assertion (RFC 7523 §3)
// for the agent: iss = sub = agentID, aud = the token endpoint, a fresh jti,
// valid for one minute.
func ClientAssertion(key ed25519.PrivateKey, agentID, tokenEndpoint string, now time.Time) string {
	claims := map[string]any{
		"iss": agentID, "sub": agentID, "aud": tokenEndpoint,
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		"jti": mandate.NewID("a_", now),
	}
	b, _ := json.Marshal(claims)
	return jose.Sign(key, jose.Header{Typ: "JWT"}, b)
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
// the audit log's entry bundles with tlog tooling.
type AuthTransport struct {
	Token string
	Base  http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t AuthTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.Token)
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	return base.RoundTrip(r)
}
