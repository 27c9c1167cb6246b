// Package verify checks mandates for resource servers: any Go service that
// receives a mandate can import it to verify the signature against the
// issuer's published keys (JWKS), the millisecond lifetime, the issuer and
// audience, the shape of the delegation chain, the DPoP key binding
// (RFC 9449), and optionally revocation.
//
// It verifies offline: after the first fetch of the JWKS, no request to the
// issuer is needed unless a mandate names a key it has not seen.
//
// # Delegation chains
//
// A delegated mandate carries its actor chain (act, RFC 8693 §4.1) and its
// parent's jti (par). Offline, the verifier checks the chain's shape: the
// current actor is the holder, no agent appears twice, a root mandate has
// one actor and a delegated one at least two, the depth is at most
// Config.MaxDepth, every actor is a SPIFFE ID, and an ephemeral agent is a
// direct child of the agent that delegated to it. Whether the ancestors are
// still valid (not revoked, not expired, their agents not disabled) only
// the issuer knows: [Verifier.VerifyOnline] asks it by introspection.
//
// # Errors
//
// Every failure is a *[Error] naming the check that failed; test for a
// class of failure with errors.Is and the Err* sentinels. Its text may be
// shown to the presenter (a WWW-Authenticate error_description): an
// internal cause behind it (the revocation store's error, a JWKS fetch's)
// is in [Error.Cause], which log lines read and the text leaves out. A
// refusal of a genuine mandate names its claims ([Error.Claims]), so that
// a resource server can record who was refused.
//
// # Not here
//
// Policy (what a mandate may do) is not decided here; this package answers
// only "is this mandate genuine, current, meant for me and presented by its
// holder".
package verify

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/internal/clock"
	"github.com/mandatehq/mandate/internal/noredirect"
	"github.com/mandatehq/mandate/internal/secret"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/replay"
)

// Sentinel errors, one per class of check. An *Error wraps exactly one.
var (
	// ErrMalformed: the token is not a well-formed JWS with mandate claims.
	ErrMalformed = errors.New("malformed mandate")
	// ErrAlgorithm: the JWS alg is not in the allow-list (EdDSA).
	ErrAlgorithm = errors.New("algorithm not allowed")
	// ErrUnknownKey: no published key has the token's kid.
	ErrUnknownKey = errors.New("unknown signing key")
	// ErrSignature: the signature does not verify.
	ErrSignature = errors.New("bad signature")
	// ErrIssuer: iss is not the expected issuer.
	ErrIssuer = errors.New("wrong issuer")
	// ErrAudience: aud does not name this resource server.
	ErrAudience = errors.New("wrong audience")
	// ErrExpired: the current time is at or after exp.
	ErrExpired = errors.New("mandate expired")
	// ErrNotYetValid: the current time is before nbf, or iat is in the future.
	ErrNotYetValid = errors.New("mandate not yet valid")
	// ErrRevoked: the revocation check says the mandate is revoked.
	ErrRevoked = errors.New("mandate revoked")
	// ErrDPoP: the mandate is DPoP-bound and the proof is missing, invalid,
	// replayed, or made with another key.
	ErrDPoP = errors.New("DPoP check failed")
	// ErrChain: the delegation chain (act, par) is inconsistent.
	ErrChain = errors.New("inconsistent delegation chain")
	// ErrInactive: the issuer's introspection says the mandate is not
	// active: it or an ancestor is revoked, expired or unknown, or an agent
	// of its chain is disabled.
	ErrInactive = errors.New("mandate not active at the issuer")
	// ErrIntrospection: the issuer could not be asked, or its answer was
	// unusable; the mandate is refused all the same (fail closed).
	ErrIntrospection = errors.New("introspection failed")
)

// Error is a failed verification. Check names the check ("signature",
// "exp", "aud", "act", "depth", "dpop", "online", ...), Err is one of the
// sentinels.
//
// The DPoP checks of a genuine key-bound mandate say whether the presenter
// proved the key, for that is what a thief without it cannot do:
// "dpop-bearer" (no proof: the Bearer scheme, or the DPoP scheme without a
// DPoP header), "dpop-key" (no proof by the bound key: one by another key,
// one whose signature does not verify, alg none, one that does not parse),
// "dpop-proof" (a proof by the bound key that does not fit the request:
// method, URL, access token, age), "dpop-replay" (a proof used before).
// "dpop" is any DPoP failure of a mandate that is not bound, and
// "revocation-unknown" a revocation check that could not answer.
type Error struct {
	Check string
	Err   error
	// Detail says what was wrong with what was presented: it may be shown
	// to the presenter (Error gives the sentinel and Detail).
	Detail string
	// Cause, if set, is the internal failure behind the refusal (the
	// revocation check's, the key source's, the introspection request's):
	// for the log, never for the presenter. errors.Is and errors.As see
	// it, LogValue writes it, Error does not.
	Cause error
	// Claims, if not nil, are the refused mandate's: its signature, issuer
	// and audience verified, so it is genuine and meant for here, and a
	// later check refused it (its times, its chain, its key binding, its
	// revocation). A caller may attribute the refusal to its task and
	// agent (the monitor counts uses of revoked and stolen mandates); it
	// must not accept the mandate.
	Claims *mandate.Claims
}

// Error is what the presenter may be told: the sentinel and Detail, never
// Cause.
func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + ": " + e.Detail
}

// Unwrap returns the sentinel and, if set, the cause.
func (e *Error) Unwrap() []error {
	if e.Cause == nil {
		return []error{e.Err}
	}
	return []error{e.Err, e.Cause}
}

// LogValue is the refusal as a log line reads it: with its cause.
func (e *Error) LogValue() slog.Value {
	if e.Cause == nil {
		return slog.StringValue(e.Error())
	}
	return slog.StringValue(secret.Mask(e.Error() + ": " + e.Cause.Error()))
}

// fail is the refusal of check. Its detail quotes what was presented (a
// kid, a typ, an issuer), which is shown to the presenter and logged: its
// secrets are masked (internal/secret).
func fail(check string, sentinel error, format string, args ...any) *Error {
	return &Error{Check: check, Err: sentinel, Detail: secret.Mask(fmt.Sprintf(format, args...))}
}

// failCause is fail with an internal cause, which the presenter is not told.
func failCause(check string, sentinel, cause error, format string, args ...any) *Error {
	e := fail(check, sentinel, format, args...)
	e.Cause = cause
	return e
}

// failOf is fail for a genuine mandate c.
func failOf(c *mandate.Claims, check string, sentinel error, format string, args ...any) *Error {
	e := fail(check, sentinel, format, args...)
	e.Claims = c
	return e
}

// of names c as the refused mandate's claims, when err is an *Error that
// does not name them yet.
func of(c *mandate.Claims, err error) error {
	var ve *Error
	if errors.As(err, &ve) && ve.Claims == nil {
		ve.Claims = c
	}
	return err
}

// KeySource finds a public key by kid. [JWKS] fetches them from a URL;
// [StaticKeys] holds a fixed set.
type KeySource interface {
	Key(ctx context.Context, kid string) (ed25519.PublicKey, error)
}

// StaticKeys is a fixed KeySource.
type StaticKeys map[string]ed25519.PublicKey

// Key implements KeySource.
func (s StaticKeys) Key(_ context.Context, kid string) (ed25519.PublicKey, error) {
	if k, ok := s[kid]; ok {
		return k, nil
	}
	return nil, fail("kid", ErrUnknownKey, "no key %q", kid)
}

// Defaults for Config.
const (
	DefaultDPoPMaxAge = 60 * time.Second
	// DefaultMaxDepth bounds the actor chain. It is a sanity bound, the
	// largest depth the issuer can be configured to allow; the issuer
	// enforces each chain's real limit when it delegates.
	DefaultMaxDepth = mandate.MaxAgentDepth
	// maxIntrospectionBytes bounds an introspection response.
	maxIntrospectionBytes = 64 << 10
)

// Config configures a Verifier. Issuer, Keys and Audience are required; the
// rest have secure defaults, and every relaxation is a named option.
type Config struct {
	// Issuer is the expected iss.
	Issuer string
	// Keys finds the issuer's public keys, typically NewJWKS(issuer's jwks_uri).
	Keys KeySource
	// Audience is this resource server's identifier; the mandate's aud must
	// contain it (e.g. "mcp:github").
	Audience string
	// AnyAudience skips the audience check. Only for tools that inspect
	// mandates, never for a resource server.
	AnyAudience bool
	// Skew is the clock skew tolerated on exp, nbf and iat, and on the iat
	// of DPoP proofs. Zero by default: mandates are checked to the millisecond.
	Skew time.Duration
	// RequireDPoP refuses mandates that are not DPoP-bound.
	RequireDPoP bool
	// IgnoreBinding accepts a DPoP-bound mandate without a proof from
	// Verify. Only for inspection tools: a resource server MUST check the
	// proof (RFC 9449 §7).
	IgnoreBinding bool
	// DPoPMaxAge bounds the age of a DPoP proof (default DefaultDPoPMaxAge).
	DPoPMaxAge time.Duration
	// DPoPReplay remembers proof IDs; a new replay.Cache if nil.
	DPoPReplay *replay.Cache
	// ReplaySince is when DPoPReplay began remembering: a proof issued
	// before it (plus Skew) is refused, as another replay set (a previous
	// process's, gone with it) may have accepted it, and a restart must
	// not reopen a proof's DPoPMaxAge window. Zero means the millisecond
	// New is called in (no process restarts within one millisecond, and
	// dpop.NewProofMillis writes no finer iat); set it earlier only for a
	// DPoPReplay that is older.
	ReplaySince time.Time
	// MaxDepth bounds the number of actors in a mandate's chain (a root
	// mandate has one); DefaultMaxDepth if zero.
	MaxDepth int
	// Introspection, if set, is the issuer's introspection endpoint, which
	// VerifyOnline asks. Verify and VerifyDPoP never use it.
	Introspection *Introspection
	// Revoked, if set, is asked for every mandate that passed the other
	// checks; a non-nil error refuses the mandate. Return an error wrapping
	// ErrRevoked for a revoked mandate (or one no longer valid for what the
	// issuer knows: a revoked ancestor, a disabled agent of its chain),
	// whose text before ": mandate revoked" says what is revoked;
	// anything else is treated as a failed check too (fail closed).
	Revoked func(ctx context.Context, c *mandate.Claims) error
	// CacheSize, if not zero, remembers up to that many verified mandates
	// (by the hash of the token) until they expire, so that a mandate
	// presented again is not parsed and its signature not checked again;
	// its times, binding, proof and revocation are checked every time.
	// The claims returned for a remembered mandate are shared: callers
	// must not change them.
	CacheSize int
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Introspection is the issuer's RFC 7662 introspection endpoint, asked by
// VerifyOnline.
type Introspection struct {
	// URL is the endpoint, e.g. https://mandate.example/oauth2/introspect.
	URL string
	// Client sends the request; http.DefaultClient if nil. Redirects are
	// never followed, so that the mandate is sent nowhere else. The request
	// is bounded by the context given to VerifyOnline and by Client.Timeout.
	Client *http.Client
	// Authorize, if set, adds the credential to each request. Mandate's
	// issuer takes its admin token: req.Header.Set("Authorization",
	// "Bearer "+token). An error refuses the mandate.
	Authorize func(*http.Request) error
}

// Verifier verifies mandates. It is safe for concurrent use.
type Verifier struct {
	cfg   Config
	cache *verified // nil unless Config.CacheSize
	// replayNow is the clock of Config.DPoPReplay: Now, never ahead of
	// the time elapsed since New (internal/clock). The set forgets a
	// proof once its clock passes the proof's expiry and never goes back:
	// a wall clock jumping forward would make it forget proofs that are
	// fresh again, so replayable, once the clock is set right.
	replayNow func() time.Time
}

// New returns a Verifier for cfg.
func New(cfg Config) (*Verifier, error) {
	switch {
	case cfg.Issuer == "":
		return nil, errors.New("verify: Config.Issuer is required")
	case cfg.Keys == nil:
		return nil, errors.New("verify: Config.Keys is required")
	case cfg.Audience == "" && !cfg.AnyAudience:
		return nil, errors.New("verify: Config.Audience is required (or set AnyAudience for an inspection tool)")
	case cfg.RequireDPoP && cfg.IgnoreBinding:
		return nil, errors.New("verify: RequireDPoP and IgnoreBinding contradict each other")
	case cfg.MaxDepth < 0:
		return nil, errors.New("verify: Config.MaxDepth must not be negative (0 means DefaultMaxDepth)")
	}
	if cfg.MaxDepth == 0 {
		cfg.MaxDepth = DefaultMaxDepth
	}
	if in := cfg.Introspection; in != nil {
		u, err := url.Parse(in.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, fmt.Errorf("verify: Introspection.URL %q is not an absolute http(s) URL", in.URL)
		}
		// A copy, so that neither the caller's Introspection nor its
		// client is changed.
		cfg.Introspection = &Introspection{URL: in.URL, Client: noredirect.Client(in.Client), Authorize: in.Authorize}
	}
	if cfg.DPoPMaxAge == 0 {
		cfg.DPoPMaxAge = DefaultDPoPMaxAge
	}
	if cfg.DPoPReplay == nil {
		cfg.DPoPReplay = replay.New(0)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReplaySince.IsZero() {
		cfg.ReplaySince = cfg.Now().Truncate(time.Millisecond)
	}
	v := &Verifier{cfg: cfg, replayNow: clock.NotAhead(cfg.Now, nil)}
	if cfg.CacheSize > 0 {
		v.cache = newVerified(cfg.CacheSize)
	}
	return v, nil
}

// Verify checks a mandate presented as a bearer token. A DPoP-bound mandate
// is refused (its holder must present it with a proof, see VerifyDPoP)
// unless Config.IgnoreBinding is set.
func (v *Verifier) Verify(ctx context.Context, token string) (*mandate.Claims, error) {
	c, err := v.verifyToken(ctx, token, v.cfg.Now())
	if err != nil {
		return nil, err
	}
	if err := v.bearer(c); err != nil {
		return nil, err
	}
	return v.revoked(ctx, c)
}

// VerifyOnline does what Verify does, then asks the issuer whether the
// mandate is still active (RFC 7662 introspection at
// Config.Introspection): the issuer answers active only if the mandate and
// every ancestor are issued there, unrevoked and unexpired, and every agent
// of the chain is enabled. A revocation anywhere up the chain thus takes
// effect at once, which offline checks cannot see.
//
// It costs a round trip to the issuer on every call; nothing is cached.
// Any failure — no Config.Introspection, the issuer unreachable, a status
// other than 200, an answer that does not decode, is over 64 KiB, or names
// another jti — refuses the mandate with an *Error of Check "online"
// wrapping ErrIntrospection; an inactive mandate gives ErrInactive.
func (v *Verifier) VerifyOnline(ctx context.Context, token string) (*mandate.Claims, error) {
	c, err := v.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	if err := v.introspect(ctx, token, c.ID); err != nil {
		return nil, of(c, err)
	}
	return c, nil
}

func (v *Verifier) introspect(ctx context.Context, token, jti string) error {
	in := v.cfg.Introspection
	if in == nil {
		return fail("online", ErrIntrospection, "no introspection endpoint: set Config.Introspection")
	}
	body := url.Values{"token": {token}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.URL, strings.NewReader(body))
	if err != nil {
		return failCause("online", ErrIntrospection, err, "the issuer cannot be asked")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if in.Authorize != nil {
		if err := in.Authorize(req); err != nil {
			return failCause("online", ErrIntrospection, err, "cannot authorize the introspection request")
		}
	}
	resp, err := in.Client.Do(req)
	if err != nil {
		return failCause("online", ErrIntrospection, err, "the issuer cannot be reached")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail("online", ErrIntrospection, "the issuer answered HTTP %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxIntrospectionBytes+1))
	if err != nil {
		return failCause("online", ErrIntrospection, err, "the issuer's answer cannot be read")
	}
	if len(b) > maxIntrospectionBytes {
		return fail("online", ErrIntrospection, "the answer is larger than %d bytes", maxIntrospectionBytes)
	}
	var r struct {
		Active bool   `json:"active"`
		JTI    string `json:"jti"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return failCause("online", ErrIntrospection, err, "the issuer's answer does not decode")
	}
	if !r.Active {
		return fail("online", ErrInactive, "mandate %s: it, an ancestor, or an agent of its chain is no longer valid", jti)
	}
	if r.JTI != jti {
		return fail("online", ErrIntrospection, "the answer is about mandate %q, not %q", r.JTI, jti)
	}
	return nil
}

// VerifyDPoP checks a mandate presented with a DPoP proof for a request
// with the given method and URL (RFC 9449 §7.1). A bearer mandate presented
// with a proof is accepted unless Config.RequireDPoP is set; the proof is
// then checked all the same.
func (v *Verifier) VerifyDPoP(ctx context.Context, token, proof, method, url string) (*mandate.Claims, error) {
	now := v.cfg.Now()
	c, err := v.verifyToken(ctx, token, now)
	if err != nil {
		return nil, err
	}
	if err := v.checkProof(c, token, []string{proof}, method, url, now); err != nil {
		return nil, err
	}
	return v.revoked(ctx, c)
}

// checkProof checks the proofs presented with the genuine mandate c, of
// which there must be exactly one, and records it for replay detection.
// Every refusal names c; for a key-bound c, its check says whether the
// key was proved (see Error).
func (v *Verifier) checkProof(c *mandate.Claims, token string, proofs []string, method, url string, now time.Time) error {
	bound := c.Confirm != nil
	if !bound && v.cfg.RequireDPoP {
		return failOf(c, "dpop", ErrDPoP, "a DPoP-bound mandate is required here")
	}
	// badProof is the check of proofs refused: for a bound mandate,
	// whether one of them was made with its key (a thief cannot make one).
	// Asked only on refusal, so that a good proof's signature is checked
	// once.
	badProof := func() string {
		switch {
		case !bound:
			return "dpop"
		case slices.ContainsFunc(proofs, func(p string) bool { return dpop.SignedBy(p, c.Confirm.JKT) }):
			return "dpop-proof"
		}
		return "dpop-key"
	}
	switch {
	case len(proofs) == 0 || len(proofs) == 1 && proofs[0] == "":
		check := "dpop"
		if bound {
			check = "dpop-bearer"
		}
		return failOf(c, check, ErrDPoP, "no DPoP proof: send one in the DPoP header")
	case len(proofs) > 1:
		return failOf(c, badProof(), ErrDPoP, "more than one DPoP header")
	}
	p, err := dpop.Check(proofs[0], dpop.Requirements{
		Method: method, URL: url, AccessToken: token, Now: now, MaxAge: v.cfg.DPoPMaxAge, Skew: v.cfg.Skew,
		NotBefore: v.cfg.ReplaySince,
	})
	if err != nil {
		if errors.Is(err, dpop.ErrInvalidProof) {
			return failOf(c, badProof(), ErrDPoP, "%v", err)
		}
		// The request, not the proof (a URL the verifier cannot parse).
		return &Error{Check: "dpop", Err: ErrDPoP, Detail: "the request cannot be checked against the proof", Cause: err, Claims: c}
	}
	if bound && p.JKT != c.Confirm.JKT {
		return failOf(c, "dpop-key", ErrDPoP, "the proof is signed by another key than the one the mandate is bound to (cnf.jkt)")
	}
	switch err := v.cfg.DPoPReplay.Use(p.JKT+"\x00"+p.ID, p.IssuedAt.Add(v.cfg.DPoPMaxAge+v.cfg.Skew), v.replayNow()); {
	case errors.Is(err, replay.ErrReplayed):
		check := "dpop"
		if bound {
			check = "dpop-replay"
		}
		return failOf(c, check, ErrDPoP, "the proof was used before (replay): make a new proof for each request")
	case err != nil:
		e := failCause("dpop", ErrDPoP, err, "the proof cannot be recorded for replay detection now: try again")
		e.Claims = c
		return e
	}
	return nil
}

// VerifyRequest reads the mandate and proof from r (Authorization: DPoP or
// Bearer, and the DPoP header) and verifies them. url is the request's
// absolute URL as the client addressed it (scheme, host and path); the
// server knows it better than r does behind a proxy.
//
// The mandate is verified before its proof is looked at, so that every
// refusal of a genuine mandate names it (Error.Claims): a stolen mandate
// presented with no proof, two, or a bad one included.
func (v *Verifier) VerifyRequest(ctx context.Context, r *http.Request, url string) (*mandate.Claims, error) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || token == "" {
		return nil, fail("authorization", ErrMalformed, "no mandate: send Authorization: DPoP <mandate> (or Bearer)")
	}
	dpopScheme := strings.EqualFold(scheme, "DPoP")
	if !dpopScheme && !strings.EqualFold(scheme, "Bearer") {
		return nil, fail("authorization", ErrMalformed, "unsupported authorization scheme %q: use DPoP or Bearer", scheme)
	}
	now := v.cfg.Now()
	c, err := v.verifyToken(ctx, token, now)
	if err != nil {
		return nil, err
	}
	proofs := r.Header.Values("DPoP")
	switch {
	case dpopScheme:
		err = v.checkProof(c, token, proofs, r.Method, url, now)
	case len(proofs) > 1:
		// Bearer: the proofs are not read, so none proves the key.
		check := "dpop"
		if c.Confirm != nil {
			check = "dpop-bearer"
		}
		err = failOf(c, check, ErrDPoP, "more than one DPoP header")
	default:
		err = v.bearer(c)
	}
	if err != nil {
		return nil, err
	}
	return v.revoked(ctx, c)
}

// bearer checks that the genuine mandate c may be presented without a
// proof.
func (v *Verifier) bearer(c *mandate.Claims) error {
	if c.Confirm != nil && !v.cfg.IgnoreBinding {
		return failOf(c, "dpop-bearer", ErrDPoP, "the mandate is bound to a key (cnf.jkt): present it with the DPoP scheme and a proof")
	}
	if v.cfg.RequireDPoP {
		return failOf(c, "dpop", ErrDPoP, "a DPoP-bound mandate is required here")
	}
	return nil
}

// VerifyRequestOnline is VerifyRequest, then the online check of
// VerifyOnline: the issuer confirms that the mandate and every ancestor
// are still valid. It costs a round trip to the issuer on every call.
func (v *Verifier) VerifyRequestOnline(ctx context.Context, r *http.Request, url string) (*mandate.Claims, error) {
	c, err := v.VerifyRequest(ctx, r, url)
	if err != nil {
		return nil, err
	}
	_, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if err := v.introspect(ctx, token, c.ID); err != nil {
		return nil, of(c, err)
	}
	return c, nil
}

func (v *Verifier) revoked(ctx context.Context, c *mandate.Claims) (*mandate.Claims, error) {
	if v.cfg.Revoked == nil {
		return c, nil
	}
	if err := v.cfg.Revoked(ctx, c); err != nil {
		if errors.Is(err, ErrRevoked) {
			// The hook's word for what is revoked: the mandate, an
			// ancestor, or an agent of its chain that was disabled.
			why := strings.TrimSuffix(err.Error(), ": "+ErrRevoked.Error())
			if why == err.Error() || why == "" {
				why = "mandate " + c.ID
			}
			return nil, failOf(c, "revocation", ErrRevoked, "%s", why)
		}
		// Fail closed, without saying why: the cause is the store's.
		e := failCause("revocation-unknown", ErrRevoked, err, "the revocation status of mandate %s is unknown now, so it is refused: try again later", c.ID)
		e.Claims = c
		return nil, e
	}
	return c, nil
}

// verifyToken runs the checks common to every presentation.
func (v *Verifier) verifyToken(ctx context.Context, token string, now time.Time) (*mandate.Claims, error) {
	if v.cache != nil {
		if c, ok := v.cache.get(token); ok {
			// Everything but the times was checked when it was remembered.
			if err := v.checkTimes(c, now); err != nil {
				return nil, err
			}
			return c, nil
		}
	}
	c, err := v.checkToken(ctx, token, now)
	if err == nil && v.cache != nil {
		v.cache.put(token, c, now)
	}
	return c, err
}

// checkToken parses and checks a token in full.
func (v *Verifier) checkToken(ctx context.Context, token string, now time.Time) (*mandate.Claims, error) {
	jws, err := jose.Parse(token)
	if errors.Is(err, jose.ErrAlgorithm) {
		return nil, fail("alg", ErrAlgorithm, "%v", err)
	} else if err != nil {
		return nil, fail("jws", ErrMalformed, "%v", err)
	}
	// RFC 9068 §4: an access token is typed, so that no other JWT signed
	// by the issuer's key (a future log checkpoint, say), nor any other
	// kind of Mandate's JWTs, passes for one (RFC 8725 §3.11).
	if !mandate.TypIs(jws.Header.Typ, mandate.TypMandate) {
		if kind := mandate.TokenKind(jws.Header.Typ); kind != "" {
			return nil, fail("typ", ErrMalformed, "typ is %q: %s is not a mandate", jws.Header.Typ, kind)
		}
		return nil, fail("typ", ErrMalformed, "typ is %q, want at+jwt", jws.Header.Typ)
	}
	if jws.Header.Kid == "" {
		return nil, fail("kid", ErrUnknownKey, "the header names no kid")
	}
	key, err := v.cfg.Keys.Key(ctx, jws.Header.Kid)
	if err != nil {
		var ve *Error
		if errors.As(err, &ve) {
			return nil, ve
		}
		return nil, failCause("kid", ErrUnknownKey, err, "the signing key %q cannot be found", jws.Header.Kid)
	}
	if err := jws.Verify(key); err != nil {
		return nil, fail("signature", ErrSignature, "the signature does not verify with key %s", jws.Header.Kid)
	}
	var c mandate.Claims
	if err := json.Unmarshal(jws.Payload, &c); err != nil {
		return nil, fail("claims", ErrMalformed, "claims do not decode: %v", err)
	}
	if c.Issuer != v.cfg.Issuer {
		return nil, fail("iss", ErrIssuer, "iss is %q, want %q", c.Issuer, v.cfg.Issuer)
	}
	if c.Expiry.IsZero() || c.ID == "" || c.Subject == "" || c.ClientID == "" || c.Task == "" {
		return nil, fail("claims", ErrMalformed, "exp, jti, sub, client_id and task are required")
	}
	// The audience before the times: every refusal from here on names the
	// claims (Error.Claims), which is only for a mandate meant for here.
	if !v.cfg.AnyAudience && !c.Audience.Contains(v.cfg.Audience) {
		return nil, fail("aud", ErrAudience, "aud %v does not name %q", []string(c.Audience), v.cfg.Audience)
	}
	if err := v.checkTimes(&c, now); err != nil {
		return nil, err
	}
	if err := checkChain(&c, v.cfg.MaxDepth); err != nil {
		return nil, of(&c, err)
	}
	return &c, nil
}

// checkTimes checks exp, nbf and iat against now, to the millisecond.
func (v *Verifier) checkTimes(c *mandate.Claims, now time.Time) error {
	skew := v.cfg.Skew
	if !now.Before(c.Expiry.Add(skew)) {
		return failOf(c, "exp", ErrExpired, "expired %v ago", now.Sub(c.Expiry.Time).Round(time.Microsecond))
	}
	if !c.NotBefore.IsZero() && now.Before(c.NotBefore.Add(-skew)) {
		return failOf(c, "nbf", ErrNotYetValid, "valid in %v", c.NotBefore.Sub(now).Round(time.Microsecond))
	}
	if !c.IssuedAt.IsZero() && c.IssuedAt.After(now.Add(skew)) {
		return failOf(c, "iat", ErrNotYetValid, "issued %v in the future", c.IssuedAt.Sub(now).Round(time.Microsecond))
	}
	return nil
}

// checkChain checks the shape of the actor chain (act) against the holder
// (client_id) and the parent link (par). It needs nothing but the claims:
// whether the ancestors are still valid is VerifyOnline's question.
func checkChain(c *mandate.Claims, maxDepth int) error {
	var chain []string // current actor first
	for a := c.Actor; a != nil; a = a.Actor {
		if len(chain) == maxDepth {
			return fail("depth", ErrChain, "the actor chain is deeper than %d", maxDepth)
		}
		chain = append(chain, a.Subject)
	}
	switch {
	case len(chain) == 0:
		return fail("act", ErrChain, "act is required")
	case chain[0] != c.ClientID:
		return fail("act", ErrChain, "act.sub %q is not the holder %q", chain[0], c.ClientID)
	case len(chain) == 1 && c.Parent != "":
		return fail("par", ErrChain, "a mandate with a single actor cannot have a parent")
	case len(chain) > 1 && c.Parent == "":
		return fail("par", ErrChain, "a delegated mandate must name its parent (par)")
	}
	var seen map[string]bool // for chains longer than usual; short ones are compared pairwise
	if len(chain) > DefaultMaxDepth {
		seen = make(map[string]bool, len(chain))
	}
	for i, id := range chain {
		if !isSPIFFEID(id) {
			return fail("spiffe", ErrChain, "actor %d, %q, is not a SPIFFE ID (spiffe://<trust domain>/<path>)", i, id)
		}
		var repeated bool
		if seen != nil {
			repeated, seen[id] = seen[id], true
		} else {
			repeated = slices.Contains(chain[:i], id)
		}
		if repeated {
			return fail("cycle", ErrChain, "agent %q appears more than once in the actor chain", id)
		}
		if !mandate.IsEphemeral(id) {
			continue
		}
		// The issuer names an ephemeral agent after the agent that
		// delegated to it: <delegator>/sub/<short id>.
		if i+1 == len(chain) {
			return fail("ephemeral", ErrChain, "ephemeral agent %q is the root of the chain: ephemeral agents only receive delegated mandates", id)
		}
		short, ok := strings.CutPrefix(id, chain[i+1]+mandate.EphemeralSeparator)
		if !ok || short == "" || strings.Contains(short, "/") {
			return fail("ephemeral", ErrChain, "ephemeral agent %q is not a direct child of %q, which delegated to it", id, chain[i+1])
		}
	}
	return nil
}

// isSPIFFEID reports whether id is a SPIFFE ID with a path (SPIFFE-ID
// §2): spiffe://, a trust domain of [a-z0-9._-], and segments of
// [a-zA-Z0-9._-], none empty, "." or "..".
func isSPIFFEID(id string) bool {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return false
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok || td == "" || mandate.ValidateTrustDomain(td) != nil {
		return false
	}
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
		for i := 0; i < len(seg); i++ {
			switch b := seg[i]; {
			case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '.', b == '_', b == '-':
			default:
				return false
			}
		}
	}
	return true
}
