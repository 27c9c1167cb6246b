// Package issuer mints mandates: it authenticates agents by their client
// assertions (RFC 7523), applies the issuance rules (ceiling, lifetime,
// audience), binds mandates to DPoP keys (RFC 9449), signs them with the
// keyring's active key and records each issuance before releasing it.
//
// It speaks no HTTP: package httpapi maps requests and errors onto OAuth.
// Every error it returns is a *mandate.Error whose OAuth field names the
// RFC 6749 §5.2 error code.
package issuer

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/internal/bucket"
	"github.com/mandatehq/mandate/internal/clock"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/replay"
)

// Defaults and limits of Config.
const (
	DefaultTTL                  = 5 * time.Minute
	MinTTL                      = 10 * time.Millisecond
	MaxTTL                      = time.Hour
	DefaultMaxAssertionLifetime = 5 * time.Minute
	DefaultDPoPMaxAge           = 60 * time.Second
	MaxPurposeLength            = 1024
	MaxResources                = 8
)

// ClientAssertionType is the only client_assertion_type accepted (RFC 7523 §2.2).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// Config configures an Issuer. Zero values mean defaults.
type Config struct {
	// Issuer is the iss of every mandate, e.g. https://mandate.example.
	Issuer string
	// TokenEndpoint is the URL client assertions and DPoP proofs must name;
	// Issuer + "/oauth2/token" if empty.
	TokenEndpoint string
	Keys          *Keyring
	Agents        mandate.AgentGetter
	// Log records each issuance before it is released (write-ahead).
	Log mandate.IssuanceLog
	// Assertions records client assertions and actor tokens used without
	// an issuance (by Authenticate, or to file an approval request), so
	// that they stay used across a restart. Required for Authenticate and
	// with Approvals.
	Assertions mandate.AssertionRecorder
	// Replay remembers used assertion and DPoP proof IDs; a new cache of
	// replay.DefaultCapacity if nil.
	Replay *replay.Cache
	// ReplaySince is when Replay began remembering: a DPoP proof issued
	// before it (plus ClockSkew) is refused, as a previous process, whose
	// replay set is gone, may have accepted it (RestoreReplay refills the
	// set with the assertions and actor tokens, which the store records,
	// but proofs are not recorded). Zero means the millisecond New is
	// called in (no process restarts within one millisecond, and
	// dpop.NewProofMillis writes no finer iat); set it earlier only for a
	// replay set that is older.
	ReplaySince time.Time
	// Issuances and Revocations authenticate a parent mandate presented
	// for delegation: it must be recorded and not revoked. Required for
	// Delegate.
	Issuances   mandate.IssuanceGetter
	Revocations mandate.RevocationStore
	// Events records refused delegations and approval decisions.
	Events mandate.EventLog
	// Policy decides every root mint and delegation (default deny; a
	// permit annotated @approval("required") waits for a person). Nil
	// means no policy decision: only the ceilings, the attenuation rules
	// and the agents' approval lists apply (for tests and embedding;
	// `mandate serve` always sets one).
	Policy Decider
	// Risk, if set, is the risk score (0-100, from the monitor) of a task
	// and of the delegating agent, which policy sees as context.risk when
	// the task delegates.
	Risk func(task, agent string) int
	// Approvals keeps approval requests; without it, a delegation that
	// needs approval is refused. It needs Assertions: the assertion or
	// actor token that files a request is recorded there.
	Approvals mandate.ApprovalStore
	// ApprovalTimeout is how long a person has to decide
	// (DefaultApprovalTimeout).
	ApprovalTimeout time.Duration
	// ApprovalLimits bound the approvals waiting for a person per agent
	// and per task (zero fields: mandate.DefaultMaxPendingPerAgent and
	// DefaultMaxPendingPerTask); a request past them is refused
	// (access_denied) and audited.
	ApprovalLimits mandate.ApprovalLimits
	// MaxDepth is the longest delegation chain when no agent of the chain
	// sets a smaller one (DefaultMaxDepth).
	MaxDepth int
	// MaxEphemeral bounds the live ephemeral agents (DefaultMaxEphemeral).
	MaxEphemeral int
	// DefaultTTL is the lifetime of a mandate when the request names none.
	DefaultTTL time.Duration
	// MaxAssertionLifetime bounds how far ahead a client assertion's exp may be.
	MaxAssertionLifetime time.Duration
	// DPoPMaxAge bounds the age of a DPoP proof's iat.
	DPoPMaxAge time.Duration
	// AllowUntypedClientAssertions accepts client assertions with no typ,
	// or typ JWT, as well as client-authentication+jwt: some off-the-shelf
	// OAuth clients sign them so (the MCP TypeScript SDK's
	// PrivateKeyJwtProvider sends typ JWT). Off by default. It is safe only
	// because every other JWT Mandate accepts is typed and refused here by
	// its typ, and only once no agent signs untyped actor tokens (as
	// Mandate's clients did before actor tokens were typed): such a token
	// would pass for its agent's client assertion (docs/tokens.md).
	AllowUntypedClientAssertions bool
	// ClockSkew is tolerated on client-supplied times (assertion exp, nbf,
	// iat; DPoP iat). Zero by default: agents run on synchronised clocks.
	ClockSkew time.Duration
	Now       func() time.Time
	Logger    *slog.Logger
}

// Decider is the policy decision point: *policy.Engine.
type Decider interface {
	Decide(ctx context.Context, r policy.Request) policy.Decision
}

// DefaultMaxEphemeral is the default bound on live ephemeral agents.
const DefaultMaxEphemeral = 1_000_000

// issuedCacheSize bounds the cache of mandates signed here (~200 bytes each).
const issuedCacheSize = 100_000

// Issuer mints mandates. It is safe for concurrent use.
type Issuer struct {
	cfg       Config
	issued    *issuedCache
	ephemeral *ephemeralAgents
	waiters   waiters
	refusals  *bucket.Bucket // of audit events for unauthenticated refusals
	// unavailable bounds the log lines of requests the store refused
	// (logError): a bucket per message, of which there are a few.
	unavailable sync.Map
	// refusedOnce: which genuine mandates' refusals (by mandate and check)
	// were recorded within refusedFor.
	refusedOnce *replay.Cache
	// replayNow is the clock of Config.Replay: Now, never ahead of the
	// time elapsed since New (internal/clock). The set forgets an entry
	// once its clock passes the entry's expiry and never goes back: a wall
	// clock jumping forward would make it forget assertions that are good
	// again once the clock is set right, and refuse every new one as
	// expired until the wall clock caught up.
	replayNow func() time.Time
}

// A refusal of a genuine mandate that anyone holding it can cause is
// recorded once per refusedFor per mandate and check, of at most
// refusedMax mandates at once (past it, none until some expire: a flood,
// which the rate would cut anyway).
const (
	refusedFor = time.Minute
	refusedMax = 10_000
)

// New returns an Issuer for cfg.
func New(cfg Config) (*Issuer, error) {
	if cfg.Issuer == "" || cfg.Keys == nil || cfg.Agents == nil || cfg.Log == nil {
		return nil, mandate.Errorf(mandate.EINVALID, "issuer: Issuer, Keys, Agents and Log are required")
	}
	if cfg.Keys.Active() == nil {
		return nil, mandate.Errorf(mandate.EINVALID, "issuer: the keyring has no active key yet: Keyring.Finish announces and activates its first")
	}
	if cfg.Approvals != nil && cfg.Assertions == nil {
		return nil, mandate.Errorf(mandate.EINVALID, "issuer: Approvals needs Assertions, so that the token filing an approval request stays used across a restart")
	}
	if cfg.TokenEndpoint == "" {
		cfg.TokenEndpoint = strings.TrimSuffix(cfg.Issuer, "/") + "/oauth2/token"
	}
	if cfg.Replay == nil {
		cfg.Replay = replay.New(0)
	}
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = DefaultTTL
	}
	if cfg.DefaultTTL < MinTTL || cfg.DefaultTTL > MaxTTL {
		return nil, mandate.Errorf(mandate.EINVALID, "issuer: DefaultTTL %v outside [%v, %v]", cfg.DefaultTTL, MinTTL, MaxTTL)
	}
	if cfg.MaxAssertionLifetime == 0 {
		cfg.MaxAssertionLifetime = DefaultMaxAssertionLifetime
	}
	if cfg.DPoPMaxAge == 0 {
		cfg.DPoPMaxAge = DefaultDPoPMaxAge
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReplaySince.IsZero() {
		cfg.ReplaySince = cfg.Now().Truncate(time.Millisecond)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ApprovalTimeout == 0 {
		cfg.ApprovalTimeout = DefaultApprovalTimeout
	}
	var err error
	if cfg.ApprovalLimits, err = cfg.ApprovalLimits.WithDefaults(); err != nil {
		return nil, mandate.Errorf(mandate.EINVALID, "issuer: %s", mandate.ErrorMessage(err))
	}
	if cfg.MaxDepth == 0 {
		cfg.MaxDepth = DefaultMaxDepth
	}
	if cfg.MaxDepth < 1 || cfg.MaxDepth > mandate.MaxAgentDepth {
		return nil, mandate.Errorf(mandate.EINVALID, "issuer: MaxDepth %d outside [1, %d]", cfg.MaxDepth, mandate.MaxAgentDepth)
	}
	if cfg.MaxEphemeral == 0 {
		cfg.MaxEphemeral = DefaultMaxEphemeral
	}
	return &Issuer{
		cfg:         cfg,
		issued:      newIssuedCache(issuedCacheSize),
		ephemeral:   newEphemeralAgents(cfg.MaxEphemeral),
		refusals:    bucket.New(100, 100),
		refusedOnce: replay.New(refusedMax),
		replayNow:   clock.NotAhead(cfg.Now, nil),
	}, nil
}

// TokenEndpoint returns the URL assertions and proofs must name.
func (is *Issuer) TokenEndpoint() string { return is.cfg.TokenEndpoint }

// Issuer returns the iss of the mandates.
func (is *Issuer) Issuer() string { return is.cfg.Issuer }

// RootRequest is a client_credentials token request (RFC 6749 §4.4) with a
// private_key_jwt client assertion (RFC 7523 §2.2).
type RootRequest struct {
	ClientID            string // optional; must match the assertion's sub if given
	ClientAssertionType string
	ClientAssertion     string
	Scope               string
	Resources           []string      // RFC 8707 resource indicators; become aud
	TTL                 time.Duration // 0 means Config.DefaultTTL
	TaskPurpose         string
	DPoP                string // the DPoP header, if any
	// ApprovalID names the approval this request waited for (a policy
	// asked for one); Wait is how long to wait for a pending approval's
	// decision (at most MaxWait).
	ApprovalID string
	Wait       time.Duration
}

// Token is an issued mandate.
type Token struct {
	AccessToken string
	TokenType   string // "DPoP" or "Bearer"
	Claims      *mandate.Claims
	// Lifetime is exact, from the issuance to exp; the claims' iat is
	// rounded down to the second, so exp - iat may be up to 1 s more.
	Lifetime time.Duration
}

// MintRoot authenticates the agent, checks the request against the agent's
// ceiling, asks policy (Action MintRoot), and returns a root mandate of a
// new task. The issuance is durable before MintRoot returns.
//
// A policy deny is a *DeniedError (access_denied); a permit annotated
// @approval("required") makes the request wait for a person (a
// *PendingError until then, as for delegation); @max_ttl_ms cuts the
// lifetime. A refusal after the agent was authenticated is a decision
// event in the audit log; one before, rate-limited, names nobody.
func (is *Issuer) MintRoot(ctx context.Context, req RootRequest) (*Token, error) {
	now := is.cfg.Now()
	agent, assertion, err := is.authenticate(ctx, req.ClientID, req.ClientAssertionType, req.ClientAssertion, now)
	if err != nil {
		// A request that proves no agent: on record all the same (someone
		// is trying), rate-limited with the other unauthenticated refusals,
		// naming nobody (the assertion's sub is a claim, not a fact).
		if mandate.ErrorCode(err) == mandate.EUNAUTHORIZED && is.cfg.Events != nil && is.refusals.Allow(now) {
			if aerr := is.cfg.Events.Append(ctx, refusalEvent("mint", err, now)); aerr != nil {
				is.logError("refused mint not audited", aerr)
			}
		}
		return nil, err
	}
	tok, err := is.mintRoot(ctx, req, agent, assertion, now)
	if err != nil {
		_, pending := err.(*PendingError)
		// A replayed assertion proves nothing about who sends it: its
		// refusals are rate-limited, as those of unauthenticated requests.
		replayed := oauthCodeOf(err) == "invalid_client" && !is.refusals.Allow(now)
		if !pending && !replayed && is.cfg.Events != nil {
			ev := refusalEvent("mint", err, now)
			ev.Agent, ev.Chain, ev.Subject = agent.ID, []string{agent.ID}, agent.Subject()
			if aerr := is.cfg.Events.Append(ctx, ev); aerr != nil {
				is.logError("refused mint not audited", aerr, "agent", agent.ID)
			}
		}
		return nil, err
	}
	return tok, nil
}

func (is *Issuer) mintRoot(ctx context.Context, req RootRequest, agent *mandate.Agent, assertion *assertion, now time.Time) (*Token, error) {
	if err := refuseSecrets(req.Scope, req.Resources, req.TaskPurpose); err != nil {
		return nil, err
	}
	scopes, err := mandate.ParseScopeSet(req.Scope)
	if err != nil {
		return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_scope", "%s", mandate.ErrorMessage(err))
	}
	if len(scopes) == 0 {
		return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_scope", "scope is required: name the scopes the task needs, within the agent's ceiling")
	}
	if out := agent.Ceiling.Uncovered(scopes); len(out) > 0 {
		return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_scope", "scope %s is outside the ceiling of agent %s", out, agent.Name)
	}
	aud, err := audience(req.Resources, scopes)
	if err != nil {
		return nil, err
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = is.cfg.DefaultTTL
	}
	if ttl < MinTTL || ttl > MaxTTL || ttl%time.Millisecond != 0 {
		return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "ttl_ms must be a whole number of milliseconds from %d to %d", MinTTL.Milliseconds(), MaxTTL.Milliseconds())
	}
	if err := checkPurpose(req.TaskPurpose); err != nil {
		return nil, err
	}
	var proof *dpop.Proof
	if req.DPoP != "" {
		if proof, err = is.checkDPoP(req.DPoP, now); err != nil {
			return nil, err
		}
	}
	task := mandate.NewID(mandate.TaskIDPrefix, now)
	d, asked := is.decision(ctx, policy.Request{
		Action: policy.ActionMintRoot, Subject: agent.Subject(), Agent: agentInfo(agent.ID, agent),
		Chain: []string{agent.ID}, Task: task, Purpose: req.TaskPurpose,
		DPoP: proof != nil, Scopes: scopes.Strings(), TTL: ttl, Time: now,
	})
	if !d.Allow {
		return nil, &DeniedError{Action: policy.ActionMintRoot, Decision: d}
	}
	ttl = capTTL(ttl, d)
	var jkt string
	if proof != nil {
		jkt = proof.JKT
	}

	// The replay checks come last so that a request refused for another
	// reason does not burn the assertion; the assertion's first, so that
	// replaying a used assertion with fresh proofs adds nothing to the
	// replay set. RestoreReplay refills the set after a restart.
	assertionUsed := false
	if d.NeedsApproval || req.ApprovalID != "" {
		if !d.NeedsApproval {
			return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "approval_id given, but this request needs no approval")
		}
		if req.ApprovalID == "" {
			// A new approval request uses up its assertion, so that one
			// assertion cannot file many requests (not even after a
			// restart); polls need fresh ones.
			assertionUsed = true
			if err := is.useDurably(ctx, agent.ID, assertion, now, "invalid_client", "client assertion"); err != nil {
				return nil, err
			}
		}
		risk := 0
		if is.cfg.Risk != nil {
			risk = is.cfg.Risk(task, agent.ID)
		}
		ap, err := is.approval(ctx, req.ApprovalID, req.TTL, req.Wait, approvalFields{
			action: mandate.ApprovalMint, task: task, agent: agent.ID, actorKey: agent.ID, actorID: agent.ID,
			subject: agent.Subject(), chain: []string{agent.ID}, scopes: scopes, aud: aud,
			hash: hashFields("mint", agent.ID, scopes.String(), strings.Join(aud, " "),
				strconv.FormatInt(req.TTL.Milliseconds(), 10), jkt, req.TaskPurpose),
			rule:    policyApproval(d),
			parties: mandate.ApprovalParties{Subject: agent.Subject(), Chain: []*mandate.Agent{agent}},
			purpose: req.TaskPurpose, risk: risk}, now)
		if err != nil {
			return nil, err
		}
		// The task was named when the approval was asked for; the
		// approval's events and the mandate share it.
		req.ApprovalID, task = ap.ID, ap.Task
	}
	if !assertionUsed {
		// Recorded with the issuance, which RestoreReplay reads.
		if err := is.useOnce(usedKey(agent.ID, assertion.ID), assertion.Expiry.Time, now, "invalid_client", "client assertion"); err != nil {
			return nil, err
		}
	}
	if proof != nil {
		if err := is.useOnce("d\x00"+proof.JKT+"\x00"+proof.ID, proof.IssuedAt.Add(is.cfg.DPoPMaxAge), now, "invalid_dpop_proof", "DPoP proof"); err != nil {
			return nil, err
		}
	}

	iat := mandate.NewNumericDate(now)
	// iat and nbf are the issuance rounded down to the second: verifiers
	// that compare in whole seconds (npm jose and PyJWT floor the current
	// time) would otherwise refuse a fresh mandate until the next second.
	// The earlier nbf grants nothing: the mandate did not exist before.
	// exp keeps its milliseconds; the store keeps the exact issuance.
	nbf := mandate.NumericDate{Time: iat.Truncate(time.Second)}
	c := &mandate.Claims{
		Issuer:    is.cfg.Issuer,
		Subject:   agent.Subject(),
		ClientID:  agent.ID,
		Actor:     &mandate.Actor{Subject: agent.ID},
		Audience:  aud,
		IssuedAt:  nbf,
		NotBefore: nbf,
		Expiry:    mandate.NumericDate{Time: iat.Add(ttl)},
		ID:        mandate.NewID(mandate.MandateIDPrefix, now),
		Scope:     scopes.String(),
		Task:      task,
	}
	if jkt != "" {
		c.Confirm = &mandate.Confirmation{JKT: jkt}
	}
	tok, key, err := is.sign(c)
	if err != nil {
		return nil, err
	}
	rec := &mandate.Issuance{
		MandateID: c.ID, TaskID: c.Task, AgentID: agent.ID, Subject: c.Subject, Scope: c.Scope,
		Audience: aud, KeyID: key, JKT: jkt, IssuedAt: iat.Time, ExpiresAt: c.Expiry.Time,
		TaskPurpose: req.TaskPurpose, AssertionID: assertion.ID, AssertionExpiry: assertion.Expiry.Time,
		ApprovalID: req.ApprovalID,
	}
	details := map[string]any{}
	rec.PutDetails(details)
	if asked {
		policyDetails(details, d)
	}
	ev := &mandate.Event{
		V: mandate.EventVersion, Time: now.UnixNano(), Type: mandate.EventMandateIssued,
		Task: c.Task, Mandate: c.ID, Agent: agent.ID, Chain: c.Actor.Chain(), Subject: c.Subject,
		Action: "mint", Resource: strings.Join(aud, " "), Outcome: mandate.OutcomeOK,
		Details: details,
	}
	if err := is.cfg.Log.RecordIssuance(ctx, rec, ev); err != nil {
		if mandate.ErrorCode(err) == mandate.ECONFLICT && req.ApprovalID != "" {
			return nil, mandate.OAuthErrorf(mandate.ECONFLICT, "invalid_grant", "approval %s was used already: an approval allows one mandate", req.ApprovalID)
		}
		is.logError("issuance not recorded: mandate withheld", err, "agent", agent.ID)
		return nil, &mandate.Error{Code: mandate.EUNAVAILABLE, OAuth: "temporarily_unavailable",
			Message: "the issuance could not be recorded, so no mandate was issued: try again later with a new client assertion", Err: err}
	}
	// The agent may have been disabled while the mandate was being
	// recorded: then it is revoked before anyone sees it.
	if id, err := is.inactiveAmong(ctx, []string{agent.ID}); err != nil || id != "" {
		is.revokeIssued(ctx, c, now, "the agent was disabled during the issuance")
		if err != nil {
			return nil, err
		}
		return nil, mandate.OAuthErrorf(mandate.EUNAUTHORIZED, "invalid_client", "agent %s was disabled during the issuance", agent.Name)
	}
	is.issued.add(tok, c, nil, req.TaskPurpose, now)
	typ := "Bearer"
	if jkt != "" {
		typ = "DPoP"
	}
	return &Token{AccessToken: tok, TokenType: typ, Claims: c, Lifetime: ttl}, nil
}

// RestoreReplay marks as used the client assertions and actor tokens that
// obtained mandates, or were used up otherwise (Config.Assertions), and
// have not expired yet, as recorded in the store: call it once at start,
// before serving, so that a restart does not reopen a replay window. (DPoP
// proofs are not recorded: Config.ReplaySince refuses those made before
// the start.) It returns how many it restored.
func (is *Issuer) RestoreReplay(ctx context.Context, used mandate.UsedAssertions) (int, error) {
	now, replayNow := is.cfg.Now(), is.replayNow()
	since := now.Add(-is.cfg.MaxAssertionLifetime - 2*is.cfg.ClockSkew - time.Minute)
	n := 0
	err := used.UsedAssertions(ctx, since, now, func(agentID, jti string, exp time.Time) error {
		err := is.cfg.Replay.Use(usedKey(agentID, jti), exp.Add(is.cfg.ClockSkew), replayNow)
		if err == nil {
			n++
		}
		if errors.Is(err, replay.ErrFull) {
			return err
		}
		return nil
	})
	return n, err
}

// sign encodes and signs c with the active key; it returns the JWS and the kid.
func (is *Issuer) sign(c *mandate.Claims) (string, string, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return "", "", mandate.Wrapf(err, mandate.EINTERNAL, "encode claims")
	}
	k := is.cfg.Keys.Active()
	// typ at+jwt: an RFC 9068 access token.
	return jose.Sign(k.Private, jose.Header{Typ: mandate.TypMandate, Kid: k.ID}, payload), k.ID, nil
}

// useOnce marks key as used until exp, by the replay set's clock
// (replayNow), which is now unless the wall clock jumped ahead.
func (is *Issuer) useOnce(key string, exp, now time.Time, oauth, what string) error {
	if r := is.replayNow(); r.Before(now) {
		now = r
	}
	switch err := is.cfg.Replay.Use(key, exp.Add(is.cfg.ClockSkew), now); err {
	case nil:
		return nil
	case replay.ErrReplayed:
		return mandate.OAuthErrorf(mandate.EUNAUTHORIZED, oauth, "%s was used before (replay): make a new one with a fresh jti", what)
	case replay.ErrExpired:
		return mandate.OAuthErrorf(mandate.EUNAUTHORIZED, oauth, "%s has expired", what)
	default:
		is.cfg.Logger.Error("replay cache refused an entry", "err", err)
		return &mandate.Error{Code: mandate.EUNAVAILABLE, OAuth: "temporarily_unavailable",
			Message: "too many requests in flight to check replays: try again shortly", Err: err}
	}
}

// checkDPoP checks a DPoP proof at the token endpoint (RFC 9449 §5),
// statelessly: the caller records its jti. A proof made before the replay
// set began is refused (Config.ReplaySince).
func (is *Issuer) checkDPoP(proof string, now time.Time) (*dpop.Proof, error) {
	p, err := dpop.Check(proof, dpop.Requirements{
		Method: "POST", URL: is.cfg.TokenEndpoint, Now: now, MaxAge: is.cfg.DPoPMaxAge, Skew: is.cfg.ClockSkew,
		NotBefore: is.cfg.ReplaySince,
	})
	if err != nil {
		return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_dpop_proof", "%v", err)
	}
	return p, nil
}

// audience returns the aud of a mandate. A resource indicator (RFC 8707)
// must name a server or upstream the granted scopes reach — mcp:<server>
// or http:<upstream> — so that an agent cannot point its mandate at a
// resource server its scopes do not concern. Without resource indicators,
// aud lists the servers and upstreams the scopes name literally.
func audience(resources []string, scopes mandate.ScopeSet) (mandate.Audience, error) {
	if len(resources) > MaxResources {
		return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_target", "at most %d resource parameters", MaxResources)
	}
	var aud mandate.Audience
	for _, r := range resources {
		kind, target, _ := strings.Cut(r, ":")
		probe := kind + ":" + target + ":x"
		if kind == "http" {
			probe = kind + ":" + target + ":GET:/"
		}
		if sc, err := mandate.ParseScope(probe); err != nil || !sc.IsConcrete() {
			return nil, mandate.OAuthErrorf(mandate.EINVALID, "invalid_target",
				"resource %q must be mcp:<server> or http:<upstream>, naming a server the requested scopes reach", r)
		}
		if !reaches(scopes, kind, target) {
			return nil, mandate.OAuthErrorf(mandate.EFORBIDDEN, "invalid_target",
				"resource %q is not reached by the requested scopes %s", r, scopes)
		}
		if !aud.Contains(r) {
			aud = append(aud, r)
		}
	}
	if len(resources) > 0 {
		return aud, nil
	}
	for _, s := range scopes {
		kind, target, _ := strings.Cut(s.String(), ":")
		target, _, _ = strings.Cut(target, ":")
		if strings.Contains(target, "*") {
			continue
		}
		if a := kind + ":" + target; !aud.Contains(a) {
			aud = append(aud, a)
		}
	}
	return aud, nil
}

// reaches reports whether some scope's server (or upstream) pattern, the
// segment after the kind, matches target.
func reaches(scopes mandate.ScopeSet, kind, target string) bool {
	for _, s := range scopes {
		k, rest, _ := strings.Cut(s.String(), ":")
		pattern, _, _ := strings.Cut(rest, ":")
		if k != kind {
			continue
		}
		if p, ok := strings.CutSuffix(pattern, "*"); ok && strings.HasPrefix(target, p) || pattern == target {
			return true
		}
	}
	return false
}

// refuseSecrets refuses a token request whose scope, resource indicators
// or task purpose hold what a secret detector finds (internal/secret).
// What a mandate is issued for is written to the audit log (which
// --public-audit makes public), shown to the people asked to approve it
// and given to policy: a credential is never part of it. Masked instead,
// the mandate would be issued for something other than what was asked,
// and the request's hash would bind what nobody sent.
func refuseSecrets(scope string, resources []string, purpose string) error {
	if err := noSecret("scope", "invalid_scope", scope, "a scope names servers and tools"); err != nil {
		return err
	}
	for _, r := range resources {
		if err := noSecret("resource", "invalid_target", r, "a resource names a server"); err != nil {
			return err
		}
	}
	return noSecret("task_purpose", "invalid_request", purpose, "a purpose is prose for the people who approve and audit the task")
}

// noSecret is mandate.RefuseSecret with the OAuth error code oauth.
func noSecret(field, oauth, value, what string) error {
	if err := mandate.RefuseSecret(field, value, what); err != nil {
		return mandate.OAuthErrorf(mandate.EINVALID, oauth, "%s", mandate.ErrorMessage(err))
	}
	return nil
}

func checkPurpose(p string) error {
	if len(p) > MaxPurposeLength || !utf8.ValidString(p) || strings.IndexFunc(p, unicode.IsControl) >= 0 {
		return mandate.OAuthErrorf(mandate.EINVALID, "invalid_request", "task_purpose must be at most %d bytes of printable UTF-8", MaxPurposeLength)
	}
	return nil
}

// logError logs a failure at ERROR, with err. A store that refuses writes
// (EUNAVAILABLE: the disk is full, say) refuses every request until it
// recovers, thousands a second onto the disk that filled: those lines are
// bounded to one a second, each saying how many were suppressed before
// it. The store logs its own state once per change.
func (is *Issuer) logError(msg string, err error, args ...any) {
	if mandate.ErrorCode(err) == mandate.EUNAVAILABLE {
		b, _ := is.unavailable.LoadOrStore(msg, bucket.New(1, 1))
		ok, suppressed := b.(*bucket.Bucket).AllowDropped(time.Now())
		if !ok {
			return
		}
		if suppressed > 0 {
			args = append(args, "suppressed", suppressed)
		}
	}
	is.cfg.Logger.Error(msg, append(args, "err", err)...)
}
