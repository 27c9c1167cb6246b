// Package httpapi serves Mandate over HTTP: the OAuth 2.0 endpoints (token,
// introspection, revocation), the discovery documents (RFC 8414 metadata,
// JWKS), and the admin API under /v1/. It also holds the Go client of that
// API which the CLI uses.
//
// It maps *mandate.Error codes onto HTTP statuses and OAuth error codes in
// one place (writeError, writeOAuthError); internal details are logged, never
// returned. Every body is bounded (MaxBodyBytes) and every write path needs
// authentication: the admin credential, an approver's credential (approvals
// are decided by people, never by the admin), or, at the OAuth endpoints,
// the agent's own proof of its key.
package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditlog"
	"github.com/mandatehq/mandate/internal/bucket"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/verify"
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 64 << 10

// Config configures a Server. Every field but Now and Logger is required.
type Config struct {
	Issuer      *issuer.Issuer
	Keys        *issuer.Keyring
	Agents      mandate.AgentStore
	Issuances   mandate.IssuanceGetter
	Revocations mandate.RevocationStore
	Events      mandate.EventLog
	// Approvals and Approvers serve the approvals API: the requests that
	// wait for a person, and the people who may decide them.
	Approvals mandate.ApprovalStore
	Approvers mandate.ApproverStore
	// Audit and Publisher serve the audit log.
	Audit     AuditStore
	Publisher *auditlog.Publisher
	// PublicAudit serves the audit log's entry bundles without the admin
	// credential (the checkpoint, key and hash tiles are always public).
	PublicAudit bool
	// Tools and ToolApprover serve the gateway's pinned tool definitions
	// (/v1/tools); without them those routes answer 404.
	Tools        mandate.ToolPinStore
	ToolApprover ToolApprover
	// Settler, if set, is the enforcement point's registry of requests in
	// flight (*gateway.Gateway): every revocation and every disabled agent
	// waits, before it answers, until no request of what it stopped can
	// still reach an upstream.
	Settler mandate.Settler
	// AdminToken is the admin credential; requests to /v1/ and to
	// introspection must present it as a Bearer token.
	AdminToken  string
	TrustDomain string
	// Health, if set, reports the store's state to /healthz and /readyz;
	// without it both say the server is ready.
	Health func() Health
	Now    func() time.Time
	Logger *slog.Logger
}

// Server is the HTTP API.
type Server struct {
	cfg       Config
	adminHash [32]byte
	mux       *http.ServeMux
	log       *slog.Logger
	// inspector verifies tokens issued here for introspection and
	// revocation: any audience, binding not checked.
	inspector *verify.Verifier
	// stopWaits ends, when closed, the token requests that wait for an
	// approval's decision (StopWaiting).
	stopWaits     chan struct{}
	stopWaitsOnce sync.Once
	hub           hub            // the live event streams
	credRefusals  *bucket.Bucket // of audit events for refused credentials
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Issuer == nil || cfg.Keys == nil || cfg.Agents == nil || cfg.Issuances == nil || cfg.Revocations == nil || cfg.Events == nil ||
		cfg.Approvals == nil || cfg.Approvers == nil || cfg.Audit == nil || cfg.Publisher == nil {
		return nil, errors.New("httpapi: Issuer, Keys, Agents, Issuances, Revocations, Events, Approvals, Approvers, Audit and Publisher are required")
	}
	if len(cfg.AdminToken) < 16 {
		return nil, errors.New("httpapi: an admin token of at least 16 bytes is required")
	}
	if err := mandate.ValidateTrustDomain(cfg.TrustDomain); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, adminHash: sha256.Sum256([]byte(cfg.AdminToken)), mux: http.NewServeMux(), log: cfg.Logger,
		stopWaits: make(chan struct{}), credRefusals: bucket.New(credentialRate, credentialBurst)}
	var err error
	s.inspector, err = verify.New(verify.Config{
		Issuer:        cfg.Issuer.Issuer(),
		Keys:          keyringSource{cfg.Keys, cfg.Now},
		AnyAudience:   true,
		IgnoreBinding: true,
		Now:           cfg.Now,
	})
	if err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

// Auth says who may call a route.
type Auth int

const (
	// AuthNone: a public document, or an endpoint that authenticates its
	// callers itself (the token and revocation endpoints take the agent's
	// client assertion or actor token).
	AuthNone Auth = iota
	// AuthAdmin: the admin credential only.
	AuthAdmin
	// AuthApprover: an approver's credential only. The admin is refused:
	// a person decides approvals, and the audit log names them.
	AuthApprover
	// AuthAdminOrApprover: either; an approver sees only what they may
	// decide.
	AuthAdminOrApprover
)

func (a Auth) String() string {
	switch a {
	case AuthNone:
		return "none"
	case AuthAdmin:
		return "admin"
	case AuthApprover:
		return "approver"
	case AuthAdminOrApprover:
		return "admin-or-approver"
	}
	return "unknown"
}

// Route is one endpoint of the API.
type Route struct {
	Method, Path string
	// Auth is who may call it; every /v1/ route needs a credential.
	Auth Auth
}

// routeTable is every route: ServeMux registration and the test that
// every route enforces its Auth both read it.
func (s *Server) routeTable() []struct {
	Route
	h http.HandlerFunc
} {
	type r = struct {
		Route
		h http.HandlerFunc
	}
	const (
		none     = AuthNone
		admin    = AuthAdmin
		approver = AuthApprover
		either   = AuthAdminOrApprover
	)
	return []r{
		{Route{"GET", "/healthz", none}, s.healthz},
		{Route{"GET", "/readyz", none}, s.readyz},
		{Route{"GET", "/.well-known/jwks.json", none}, s.jwks},
		{Route{"GET", "/.well-known/oauth-authorization-server", none}, s.metadata},
		{Route{"POST", "/oauth2/token", none}, s.token},
		{Route{"POST", "/oauth2/revoke", none}, s.revoke},
		{Route{"POST", "/oauth2/introspect", admin}, s.introspect},
		{Route{"POST", "/v1/agents", admin}, s.createAgent},
		{Route{"GET", "/v1/agents", admin}, s.listAgents},
		{Route{"GET", "/v1/agents/ephemeral", admin}, s.listEphemeral},
		{Route{"GET", "/v1/agents/{name}", admin}, s.getAgent},
		{Route{"POST", "/v1/agents/{name}/disable", admin}, s.setAgentStatus(mandate.AgentDisabled)},
		{Route{"POST", "/v1/agents/{name}/enable", admin}, s.setAgentStatus(mandate.AgentActive)},
		{Route{"GET", "/v1/keys", admin}, s.listKeys},
		{Route{"POST", "/v1/keys/rotate", admin}, s.rotateKeys},
		{Route{"GET", "/v1/mandates/{id}", admin}, s.getMandate},
		{Route{"GET", "/v1/events", admin}, s.events},
		{Route{"GET", "/v1/tasks", admin}, s.listTasks},
		{Route{"GET", "/v1/tasks/{id}", admin}, s.getTask},
		{Route{"GET", "/v1/tasks/{id}/events", admin}, s.events},
		{Route{"POST", "/v1/approvers", admin}, s.createApprover},
		{Route{"GET", "/v1/approvers", admin}, s.listApprovers},
		{Route{"POST", "/v1/approvers/{email}/disable", admin}, s.disableApprover},
		{Route{"GET", "/v1/approvals", either}, s.listApprovals},
		{Route{"GET", "/v1/approvals/{id}", either}, s.getApproval},
		{Route{"POST", "/v1/approvals/{id}/approve", approver}, s.decide(true)},
		{Route{"POST", "/v1/approvals/{id}/deny", approver}, s.decide(false)},
		{Route{"POST", "/v1/audit/checkpoint", admin}, s.publishCheckpoint},
		{Route{"POST", "/v1/revocations", admin}, s.createRevocation},
		{Route{"GET", "/v1/alerts", admin}, s.alerts},
		{Route{"GET", "/v1/tools", admin}, s.listTools},
		{Route{"GET", "/v1/tools/{server}/{name}", admin}, s.getTool},
		{Route{"POST", "/v1/tools/{server}/{name}/approve", admin}, s.approveTool},
		// The audit log's read layout (C2SP tlog-tiles) and proofs. Entry
		// bundles check the credential themselves (see auditTile).
		{Route{"GET", "/audit/checkpoint", none}, s.auditCheckpoint},
		{Route{"GET", "/audit/vkey", none}, s.auditVKey},
		{Route{"GET", "/audit/tile/{path...}", none}, s.auditTile},
		{Route{"GET", "/audit/proof", none}, s.auditProof},
	}
}

// Routes lists the API's endpoints.
func (s *Server) Routes() []Route {
	var out []Route
	for _, r := range s.routeTable() {
		out = append(out, r.Route)
	}
	return out
}

func (s *Server) routes() {
	for _, r := range s.routeTable() {
		h := r.h
		switch r.Auth {
		case AuthAdmin:
			h = s.admin(h)
		case AuthApprover:
			h = s.approver(h)
		case AuthAdminOrApprover:
			h = s.adminOrApprover(h)
		case AuthNone:
			if strings.HasPrefix(r.Path, "/v1/") {
				panic("httpapi: every /v1/ route needs a credential: " + r.Path)
			}
		default:
			panic("httpapi: unknown auth kind for " + r.Path)
		}
		s.mux.HandleFunc(r.Method+" "+r.Path, h)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, s.log, mandate.Errorf(mandate.ENOTFOUND, "no route %s %s", r.Method, r.URL.Path))
	})
}

// StopWaiting ends the token requests that wait for an approval's decision
// (wait_ms), and makes later ones answer at once: call it when the server
// shuts down, so that graceful shutdown need not wait up to a minute.
func (s *Server) StopWaiting() {
	s.stopWaitsOnce.Do(func() { close(s.stopWaits) })
}

// ServeHTTP logs each request (never its credentials or body) and serves it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	s.mux.ServeHTTP(sw, r)
	s.log.LogAttrs(r.Context(), slog.LevelDebug, "http", slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.Int("status", sw.status), slog.Duration("dur", time.Since(start)))
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) { w.status = code; w.ResponseWriter.WriteHeader(code) }

// Unwrap lets http.ResponseController reach the connection (the event
// stream flushes and extends its write deadline).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// admin wraps h so that it runs only for a request bearing the admin token.
// The comparison is of SHA-256 digests in constant time.
func (s *Server) admin(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.isAdmin(r) {
			err := mandate.Errorf(mandate.EUNAUTHORIZED, "admin credential required: send Authorization: Bearer <token from <data>/admin.token>")
			s.refusedCredential(r, "admin", "", err)
			w.Header().Set("WWW-Authenticate", `Bearer realm="mandate-admin"`)
			writeError(w, r, s.log, err)
			return
		}
		h(w, r)
	}
}

func (s *Server) isAdmin(r *http.Request) bool {
	tok, ok := bearer(r)
	if !ok {
		return false
	}
	h := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(h[:], s.adminHash[:]) == 1
}

// bearer returns the request's Bearer credential.
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

// Health is the store's state as the probes report it: State is one of
// the store's (sqlite.StateOK, StateDegraded, StateFailed, StateClosed:
// "ok", "degraded", "failed", "closed"), Reason a few words for an
// operator, with no internal detail.
type Health struct {
	State  string
	Reason string
}

func (s *Server) health() Health {
	if s.cfg.Health == nil {
		return Health{State: "ok"}
	}
	return s.cfg.Health()
}

// healthz is the liveness probe: it fails (503) only when a restart is
// what helps, a store that failed for good. A degraded store recovers by
// itself, and restarting it would not free the disk: it stays live.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if h := s.health(); h.State == "failed" {
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "failed", "reason": h.Reason})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// ReadyBody is the JSON body of /readyz.
type ReadyBody struct {
	// Status is "ready" (200), or "degraded", "failed" or "shutting_down"
	// (503): writes are refused.
	Status string `json:"status"`
	Store  string `json:"store"` // the store's state
	Reason string `json:"reason,omitempty"`
}

// readyz is the readiness probe: 503 whenever writes are refused, so that
// a load balancer sends requests elsewhere until the store takes them.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	h := s.health()
	if h.State == "ok" {
		select {
		case <-s.stopWaits: // the server shuts down
			h = Health{State: "closed", Reason: "shutting down"}
		default:
		}
	}
	body := ReadyBody{Status: "ready", Store: h.State, Reason: h.Reason}
	status := http.StatusOK
	switch h.State {
	case "ok":
	case "degraded", "failed":
		body.Status, status = h.State, http.StatusServiceUnavailable
	default:
		body.Status, status = "shutting_down", http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	if status != http.StatusOK {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, status, body)
}

// retryAfter is the Retry-After (RFC 9110 §10.2.3) of a 503: the store's
// recovery retries within about that many seconds.
const retryAfter = "1"

// unavailableLogs bound the log lines of requests that failed because the
// store refused them (EUNAVAILABLE: a full disk refuses every request until
// the store recovers, thousands a second, onto the disk that filled): one a
// second per kind, each saying how many were suppressed before it. The
// store logs its own state once per change.
var unavailableLogs = struct{ api, oauth, refusal *bucket.Bucket }{bucket.New(1, 1), bucket.New(1, 1), bucket.New(1, 1)}

// logFailure logs a request that failed at ERROR, bounded as
// unavailableLogs says if the store refused it.
func logFailure(ctx context.Context, log *slog.Logger, b *bucket.Bucket, msg string, err error, args ...any) {
	if mandate.ErrorCode(err) == mandate.EUNAVAILABLE {
		ok, suppressed := b.AllowDropped(time.Now())
		if !ok {
			return
		}
		if suppressed > 0 {
			args = append(args, "suppressed", suppressed)
		}
	}
	log.ErrorContext(ctx, msg, append(args, "err", err)...)
}

// codeStatus maps error codes to HTTP statuses, one to one; codes not
// here are 500. The client reads it backwards.
var codeStatus = map[string]int{
	mandate.EINVALID:      http.StatusBadRequest,
	mandate.ENOTFOUND:     http.StatusNotFound,
	mandate.EUNAUTHORIZED: http.StatusUnauthorized,
	mandate.EFORBIDDEN:    http.StatusForbidden,
	mandate.ECONFLICT:     http.StatusConflict,
	mandate.ETOOLARGE:     http.StatusRequestEntityTooLarge,
	mandate.EUNAVAILABLE:  http.StatusServiceUnavailable,
}

// statusFor maps an error code to an HTTP status.
func statusFor(code string) int {
	if st, ok := codeStatus[code]; ok {
		return st
	}
	return http.StatusInternalServerError
}

// codeForStatus maps an HTTP status back to an error code.
func codeForStatus(status int) string {
	for code, st := range codeStatus {
		if st == status {
			return code
		}
	}
	return mandate.EINTERNAL
}

// ErrorBody is the JSON body of an admin API error.
type ErrorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// writeError writes an admin API error. Internal causes are logged only.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	code := mandate.ErrorCode(err)
	if code == mandate.EINTERNAL || code == mandate.EUNAVAILABLE {
		logFailure(r.Context(), log, unavailableLogs.api, "request failed", err, "method", r.Method, "path", r.URL.Path)
	}
	if code == mandate.EUNAVAILABLE {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, statusFor(code), ErrorBody{Error: code, Message: mandate.ErrorMessage(err)})
}

// oauthCode returns the RFC 6749 §5.2 error code for err.
func oauthCode(err error) string {
	var e *mandate.Error
	if errors.As(err, &e) && e.OAuth != "" {
		return e.OAuth
	}
	switch mandate.ErrorCode(err) {
	case mandate.EINVALID, mandate.ETOOLARGE:
		return "invalid_request"
	case mandate.EUNAUTHORIZED:
		return "invalid_client"
	case mandate.EFORBIDDEN:
		return "unauthorized_client"
	case mandate.EUNAVAILABLE:
		return "temporarily_unavailable"
	default:
		return "server_error"
	}
}

// writeOAuthError writes an RFC 6749 §5.2 error response. Every error code
// is HTTP 400 but these: invalid_client 401 (RFC 6749 §5.2),
// temporarily_unavailable 503, server_error 500, and a body over the
// limit 413. 400 covers invalid_request, invalid_grant,
// unauthorized_client, unsupported_grant_type and invalid_scope (RFC 6749
// §5.2), invalid_target (RFC 8707 §2), invalid_dpop_proof (RFC 9449 §5),
// and the answers of a delegation that waits for a person:
// authorization_pending, access_denied and expired_token, as the device
// flow (RFC 8628 §3.5) and CIBA (§11) use them. authorization_pending
// carries the approval to poll for (OAuthError.ApprovalID, Interval,
// ExpiresIn).
func writeOAuthError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error, now time.Time) {
	oc := oauthCode(err)
	status := http.StatusBadRequest
	switch oc {
	case "invalid_client":
		status = http.StatusUnauthorized
	case "temporarily_unavailable":
		status = http.StatusServiceUnavailable
	case "server_error":
		status = http.StatusInternalServerError
	}
	var pending *issuer.PendingError
	isPending := errors.As(err, &pending) && pending.Approval != nil
	switch code := mandate.ErrorCode(err); {
	case code == mandate.EINTERNAL || code == mandate.EUNAVAILABLE:
		logFailure(r.Context(), log, unavailableLogs.oauth, "oauth request failed", err, "path", r.URL.Path)
	case isPending:
		log.InfoContext(r.Context(), "oauth request waits for approval", "path", r.URL.Path, "approval", pending.Approval.ID)
	default:
		// Refusals are logged with what the client was told, which never
		// holds a secret: enough to diagnose a misconfigured agent.
		log.InfoContext(r.Context(), "oauth request refused", "path", r.URL.Path, "error", oc, "description", mandate.ErrorMessage(err))
	}
	if mandate.ErrorCode(err) == mandate.ETOOLARGE {
		status = http.StatusRequestEntityTooLarge
	}
	w.Header().Set("Cache-Control", "no-store")
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter)
	}
	msg := mandate.ErrorMessage(err)
	if oc == "server_error" {
		msg = "internal error"
	}
	body := OAuthError{Error: oc, Description: msg}
	if isPending {
		ap := pending.Approval
		left := max(ap.ExpiresAt.Sub(now), 0)
		// Whole seconds, rounded up: a pending approval never says 0.
		secs := int64((left + time.Second - 1) / time.Second)
		body.Error = "authorization_pending"
		body.ApprovalID, body.Interval, body.ExpiresIn = ap.ID, int64(issuer.PollInterval/time.Second), &secs
	}
	writeJSON(w, status, body)
}

// oauthError writes an OAuth error response (writeOAuthError).
func (s *Server) oauthError(w http.ResponseWriter, r *http.Request, err error) {
	writeOAuthError(w, r, s.log, err, s.cfg.Now())
}

// OAuthError is an RFC 6749 §5.2 error body. A delegation waiting for a
// person's approval (authorization_pending) also names the approval to
// poll for, the polling interval in seconds (RFC 8628 §3.5), and the
// seconds left before the approval times out, which is a denial.
type OAuthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
	ApprovalID  string `json:"approval_id,omitempty"`
	Interval    int64  `json:"interval,omitempty"`
	ExpiresIn   *int64 `json:"expires_in,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
}

// readBody reads a bounded body of the given media type.
func readBody(w http.ResponseWriter, r *http.Request, mediaType string) ([]byte, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != mediaType {
		return nil, mandate.Errorf(mandate.EINVALID, "Content-Type must be %s", mediaType)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, mandate.Errorf(mandate.ETOOLARGE, "request body is larger than %d bytes", MaxBodyBytes)
	}
	if err != nil {
		return nil, mandate.Errorf(mandate.EINVALID, "reading the request body failed")
	}
	return b, nil
}

// readForm reads an application/x-www-form-urlencoded body. Parameters
// must not repeat (RFC 6749 §3.2), except those named in multi.
func readForm(w http.ResponseWriter, r *http.Request, multi ...string) (url.Values, error) {
	b, err := readBody(w, r, "application/x-www-form-urlencoded")
	if err != nil {
		return nil, err
	}
	form, err := url.ParseQuery(string(b))
	if err != nil {
		return nil, mandate.Errorf(mandate.EINVALID, "the form body does not parse: %v", err)
	}
	for k, v := range form {
		if len(v) > 1 && !contains(multi, k) {
			return nil, mandate.Errorf(mandate.EINVALID, "parameter %q is repeated", k)
		}
	}
	return form, nil
}

// readJSON decodes a bounded application/json body into v, refusing
// unknown fields and trailing data.
func readJSON(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := readBody(w, r, "application/json")
	if err != nil {
		return err
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return mandate.Errorf(mandate.EINVALID, "the JSON body does not decode: %v", err)
	}
	if dec.More() {
		return mandate.Errorf(mandate.EINVALID, "the JSON body has data after the object")
	}
	return nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
