// Package verify checks mandates for resource servers: any Go service that
// receives a mandate can import it to verify the signature against the
// issuer's published keys (JWKS), the millisecond lifetime, the issuer and
// audience, the DPoP key binding (RFC 9449), and optionally revocation.
//
// It verifies offline: after the first fetch of the JWKS, no request to the
// issuer is needed unless a mandate names a key it has not seen.
//
// # Errors
//
// Every failure is a *[Error] naming the check that failed; test for a
// class of failure with errors.Is and the Err* sentinels.
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
	"net/http"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
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
)

// Error is a failed verification. Check names the check ("signature",
// "exp", "aud", "dpop", ...), Err is one of the sentinels.
type Error struct {
	Check  string
	Err    error
	Detail string
}

func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Err.Error()
	}
	return e.Err.Error() + ": " + e.Detail
}

func (e *Error) Unwrap() error { return e.Err }

func fail(check string, sentinel error, format string, args ...any) *Error {
	return &Error{Check: check, Err: sentinel, Detail: fmt.Sprintf(format, args...)}
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
	// Revoked, if set, is asked for every mandate that passed the other
	// checks; a non-nil error refuses the mandate. Return an error wrapping
	// ErrRevoked for a revoked mandate; anything else is treated as a failed
	// check too (fail closed).
	Revoked func(ctx context.Context, c *mandate.Claims) error
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Verifier verifies mandates. It is safe for concurrent use.
type Verifier struct {
	cfg Config
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
	return &Verifier{cfg: cfg}, nil
}

// Verify checks a mandate presented as a bearer token. A DPoP-bound mandate
// is refused (its holder must present it with a proof, see VerifyDPoP)
// unless Config.IgnoreBinding is set.
func (v *Verifier) Verify(ctx context.Context, token string) (*mandate.Claims, error) {
	c, err := v.verifyToken(ctx, token, v.cfg.Now())
	if err != nil {
		return nil, err
	}
	if c.Confirm != nil && !v.cfg.IgnoreBinding {
		return nil, fail("dpop", ErrDPoP, "the mandate is bound to a key (cnf.jkt): present it with the DPoP scheme and a proof")
	}
	if v.cfg.RequireDPoP {
		return nil, fail("dpop", ErrDPoP, "a DPoP-bound mandate is required here")
	}
	return v.revoked(ctx, c)
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
	if c.Confirm == nil && v.cfg.RequireDPoP {
		return nil, fail("dpop", ErrDPoP, "a DPoP-bound mandate is required here")
	}
	if proof == "" {
		return nil, fail("dpop", ErrDPoP, "no DPoP proof: send one in the DPoP header")
	}
	p, err := dpop.Check(proof, dpop.Requirements{
		Method: method, URL: url, AccessToken: token, Now: now, MaxAge: v.cfg.DPoPMaxAge, Skew: v.cfg.Skew,
	})
	if err != nil {
		return nil, fail("dpop", ErrDPoP, "%v", err)
	}
	if c.Confirm != nil && p.JKT != c.Confirm.JKT {
		return nil, fail("dpop", ErrDPoP, "the proof is signed by another key than the one the mandate is bound to (cnf.jkt)")
	}
	switch err := v.cfg.DPoPReplay.Use(p.JKT+"\x00"+p.ID, p.IssuedAt.Add(v.cfg.DPoPMaxAge+v.cfg.Skew), now); {
	case errors.Is(err, replay.ErrReplayed):
		return nil, fail("dpop", ErrDPoP, "the proof was used before (replay): make a new proof for each request")
	case err != nil:
		return nil, fail("dpop", ErrDPoP, "cannot record the proof for replay detection: %v", err)
	}
	return v.revoked(ctx, c)
}

// VerifyRequest reads the mandate and proof from r (Authorization: DPoP or
// Bearer, and the DPoP header) and verifies them. url is the request's
// absolute URL as the client addressed it (scheme, host and path); the
// server knows it better than r does behind a proxy.
func (v *Verifier) VerifyRequest(ctx context.Context, r *http.Request, url string) (*mandate.Claims, error) {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || token == "" {
		return nil, fail("authorization", ErrMalformed, "no mandate: send Authorization: DPoP <mandate> (or Bearer)")
	}
	proofs := r.Header.Values("DPoP")
	if len(proofs) > 1 {
		return nil, fail("dpop", ErrDPoP, "more than one DPoP header")
	}
	switch {
	case strings.EqualFold(scheme, "DPoP"):
		if len(proofs) == 0 {
			return nil, fail("dpop", ErrDPoP, "the DPoP scheme needs a DPoP header with a proof")
		}
		return v.VerifyDPoP(ctx, token, proofs[0], r.Method, url)
	case strings.EqualFold(scheme, "Bearer"):
		return v.Verify(ctx, token)
	default:
		return nil, fail("authorization", ErrMalformed, "unsupported authorization scheme %q: use DPoP or Bearer", scheme)
	}
}

func (v *Verifier) revoked(ctx context.Context, c *mandate.Claims) (*mandate.Claims, error) {
	if v.cfg.Revoked == nil {
		return c, nil
	}
	if err := v.cfg.Revoked(ctx, c); err != nil {
		if errors.Is(err, ErrRevoked) {
			return nil, fail("revocation", ErrRevoked, "mandate %s", c.ID)
		}
		return nil, fail("revocation", ErrRevoked, "revocation status unknown, refusing: %v", err)
	}
	return c, nil
}

// verifyToken runs the checks common to every presentation.
func (v *Verifier) verifyToken(ctx context.Context, token string, now time.Time) (*mandate.Claims, error) {
	jws, err := jose.Parse(token)
	if errors.Is(err, jose.ErrAlgorithm) {
		return nil, fail("alg", ErrAlgorithm, "%v", err)
	} else if err != nil {
		return nil, fail("jws", ErrMalformed, "%v", err)
	}
	// RFC 9068 §4: an access token is typed, so that no other JWT signed
	// by the issuer's key (a future log checkpoint, say) passes for one.
	if t := strings.ToLower(jws.Header.Typ); t != "at+jwt" && t != "application/at+jwt" {
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
		return nil, fail("kid", ErrUnknownKey, "%v", err)
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
	skew := v.cfg.Skew
	if !now.Before(c.Expiry.Add(skew)) {
		return nil, fail("exp", ErrExpired, "expired %v ago", now.Sub(c.Expiry.Time).Round(time.Microsecond))
	}
	if !c.NotBefore.IsZero() && now.Before(c.NotBefore.Add(-skew)) {
		return nil, fail("nbf", ErrNotYetValid, "valid in %v", c.NotBefore.Sub(now).Round(time.Microsecond))
	}
	if !c.IssuedAt.IsZero() && c.IssuedAt.After(now.Add(skew)) {
		return nil, fail("iat", ErrNotYetValid, "issued %v in the future", c.IssuedAt.Sub(now).Round(time.Microsecond))
	}
	if !v.cfg.AnyAudience && !c.Audience.Contains(v.cfg.Audience) {
		return nil, fail("aud", ErrAudience, "aud %v does not name %q", []string(c.Audience), v.cfg.Audience)
	}
	if err := checkChain(&c); err != nil {
		return nil, err
	}
	return &c, nil
}

// checkChain checks that the actor chain names the holder and matches the
// parent link: a root mandate has one actor and no par; a delegated one has
// more than one actor and a par.
func checkChain(c *mandate.Claims) error {
	chain := c.Actor.Chain()
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
	return nil
}
