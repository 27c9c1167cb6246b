// Package dpop makes and checks DPoP proofs ([RFC 9449]): the short JWTs
// by which an agent shows, with each HTTP request, that it holds the
// private key a mandate is bound to.
//
// [NewProof] is for clients (agents, and tests); [Check] is for the token
// endpoint and resource servers. Proofs are signed with Ed25519 (EdDSA)
// only: [Check] refuses any other alg, through [jose.Parse].
//
// # What it is not for
//
// Check validates one proof against one request; it keeps no state. The
// caller must still:
//
//   - refuse requests with more than one DPoP header (RFC 9449 §4.3 step 1);
//   - refuse a replayed proof, with package replay, keyed by [Proof.JKT]
//     and [Proof.ID] (RFC 9449 §11.1; see the example on Check);
//   - for a request with an access token, check that the token's cnf.jkt
//     equals [Proof.JKT] (RFC 9449 §7.1, §6.1).
//
// Server-provided nonces (RFC 9449 §8, §9) are not supported: a nonce
// claim is ignored. There is no DPoP for authorization codes (§10).
//
// [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
package dpop

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/mandatehq/mandate/internal/secret"
	"github.com/mandatehq/mandate/jose"
)

const (
	// Type is the typ header of a DPoP proof.
	Type = "dpop+jwt"

	// DefaultMaxAge is how long after its iat a proof is accepted when
	// Requirements.MaxAge is zero.
	DefaultMaxAge = 60 * time.Second

	// MaxProofSize is the longest proof, in bytes, that Check accepts.
	MaxProofSize = 8 << 10
)

// ErrInvalidProof is wrapped by every error Check returns for a bad proof.
// Its RFC 9449 OAuth error code is "invalid_dpop_proof". The message after
// it says which check failed.
var ErrInvalidProof = errors.New("dpop: invalid proof")

// NewProof returns a DPoP proof for a request with the given method and
// url, signed with priv. The proof's htu is url without its query and
// fragment, its iat is now in whole seconds, and its jti is 16 random
// bytes. If accessToken is not empty, the proof has ath, the hash of
// accessToken, as RFC 9449 §4.2 requires when presenting one.
//
// A server that refuses proofs made before it started (Requirements.NotBefore)
// may refuse a whole-second iat for up to a second after its start: see
// NewProofMillis.
//
// NewProof panics if priv is not ed25519.PrivateKeySize bytes long.
func NewProof(priv ed25519.PrivateKey, method, url, accessToken string, now time.Time) string {
	return newProof(priv, method, url, accessToken, json.Number(strconv.FormatInt(now.Unix(), 10)))
}

// NewProofMillis is NewProof with iat in milliseconds, a NumericDate with a
// fraction (RFC 7519 §2), e.g. 1764412800.123: a server that refuses proofs
// made before it started (Requirements.NotBefore) accepts it from the
// millisecond after its start rather than from the next whole second.
// Mandate's own clients use it.
func NewProofMillis(priv ed25519.PrivateKey, method, url, accessToken string, now time.Time) string {
	ms := now.UnixMilli()
	return newProof(priv, method, url, accessToken, json.Number(strconv.FormatFloat(float64(ms)/1000, 'f', 3, 64)))
}

func newProof(priv ed25519.PrivateKey, method, url, accessToken string, iat json.Number) string {
	pub := priv.Public().(ed25519.PublicKey)
	jwk := jose.JWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(pub)}
	var jti [16]byte
	rand.Read(jti[:]) // never fails (crypto/rand, Go 1.24+)
	if i := strings.IndexAny(url, "?#"); i >= 0 {
		url = url[:i]
	}
	c := struct {
		JTI string      `json:"jti"`
		HTM string      `json:"htm"`
		HTU string      `json:"htu"`
		IAT json.Number `json:"iat"`
		ATH string      `json:"ath,omitempty"`
	}{
		JTI: base64.RawURLEncoding.EncodeToString(jti[:]),
		HTM: method,
		HTU: url,
		IAT: iat,
	}
	if accessToken != "" {
		c.ATH = ath(accessToken)
	}
	payload, _ := json.Marshal(c) // cannot fail: strings and a number
	return jose.Sign(priv, jose.Header{Typ: Type, JWK: &jwk}, payload)
}

// Proof is a DPoP proof that Check accepted.
type Proof struct {
	JKT       string            // the RFC 7638 thumbprint of PublicKey, for cnf.jkt
	PublicKey ed25519.PublicKey // the key from the jwk header, which signed the proof
	ID        string            // jti
	Method    string            // htm
	URL       string            // htu, as sent
	ATH       string            // ath, as sent; "" if absent
	IssuedAt  time.Time         // iat
}

// Requirements describe the request a proof must match.
type Requirements struct {
	Method string // the request's HTTP method; required
	URL    string // the request's absolute URL; required; its query and fragment are ignored

	// AccessToken, if not empty, is the access token sent with the
	// request: the proof's ath must be its hash.
	AccessToken string

	Now    time.Time     // the time of the check; zero means time.Now()
	MaxAge time.Duration // how long after iat a proof is accepted; zero means DefaultMaxAge
	Skew   time.Duration // how far iat may be ahead of Now; zero means not at all

	// NotBefore, if set, refuses a proof whose iat is before NotBefore +
	// Skew: set it to when the caller's replay set began remembering
	// proofs (its process's start), so that a proof another replay set
	// saw (the previous process's, gone with it) is not accepted again.
	// The Skew is added because that set may have accepted an iat up to
	// Skew ahead of its clock.
	NotBefore time.Time
}

// Check checks proof against the request described by req, following the
// list of RFC 9449 §4.3, and returns the proof's contents. It checks, in
// this order, stopping at the first failure:
//
//  1. the proof is at most MaxProofSize bytes and is one well-formed JWS
//     whose alg is EdDSA (jose.Parse);
//  2. typ is "dpop+jwt";
//  3. the jwk header holds an Ed25519 public key, and no private key;
//  4. the signature verifies with that key;
//  5. the payload is a JSON object with the claims jti, htm, htu and iat
//     (and ath if req.AccessToken is set);
//  6. htm is req.Method;
//  7. htu is req.URL, both without query and fragment and after RFC 3986
//     §6.2.2 and §6.2.3 normalization;
//  8. iat is less than MaxAge before Now and at most Skew after it, and
//     not before NotBefore + Skew;
//  9. if req.AccessToken is set, ath is its base64url SHA-256 hash.
//
// The signature is checked before any claim is read, so no unauthenticated
// claim ever decides anything; RFC 9449 allows any order.
//
// Every error for a bad proof wraps ErrInvalidProof, and also jose's error
// where there is one. An error that does not wrap ErrInvalidProof means req
// itself is wrong.
//
// Check does not refuse replays: the caller must, after Check succeeds,
// record the proof in a replay set until it can no longer be accepted:
//
//	p, err := dpop.Check(proof, req)
//	...
//	err = cache.Use(p.JKT+"."+p.ID, p.IssuedAt.Add(maxAge), now)
//
// where cache is a *replay.Cache and maxAge is req.MaxAge (or
// DefaultMaxAge).
func Check(proof string, req Requirements) (*Proof, error) {
	if req.Method == "" || req.URL == "" {
		return nil, errors.New("dpop: requirements: method and url must be set")
	}
	wantURL, err := normalizeURL(req.URL)
	if err != nil {
		return nil, fmt.Errorf("dpop: requirements: url: %w", err)
	}
	now := req.Now
	if now.IsZero() {
		now = time.Now()
	}
	maxAge := req.MaxAge
	if maxAge <= 0 {
		maxAge = DefaultMaxAge
	}
	skew := max(req.Skew, 0)

	// 1. One well-formed JWS, alg EdDSA.
	if len(proof) > MaxProofSize {
		return nil, fmt.Errorf("%w: proof is %d bytes, limit is %d", ErrInvalidProof, len(proof), MaxProofSize)
	}
	jws, err := jose.Parse(proof)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidProof, err)
	}
	// 2. typ.
	if jws.Header.Typ != Type {
		return nil, fmt.Errorf("%w: typ must be %q, is %s", ErrInvalidProof, Type, quote(jws.Header.Typ))
	}
	// 3. jwk: a public key only.
	jwk := jws.Header.JWK
	if jwk == nil {
		return nil, fmt.Errorf("%w: jwk header is missing", ErrInvalidProof)
	}
	if jwk.D != "" {
		return nil, fmt.Errorf("%w: jwk header must hold a public key only, but has d", ErrInvalidProof)
	}
	// 4. Signature, by the key of the jwk header.
	pub, err := jws.VerifyWithJWK()
	if errors.Is(err, jose.ErrMalformed) {
		return nil, fmt.Errorf("%w: jwk header: %w", ErrInvalidProof, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %w", ErrInvalidProof, err)
	}
	// 5. Claims.
	c, err := parseClaims(jws.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidProof, err)
	}
	switch {
	case c.jti == "":
		return nil, fmt.Errorf("%w: missing jti", ErrInvalidProof)
	case c.htm == "":
		return nil, fmt.Errorf("%w: missing htm", ErrInvalidProof)
	case c.htu == "":
		return nil, fmt.Errorf("%w: missing htu", ErrInvalidProof)
	case !c.hasIAT:
		return nil, fmt.Errorf("%w: missing iat", ErrInvalidProof)
	case req.AccessToken != "" && c.ath == "":
		return nil, fmt.Errorf("%w: missing ath: the request has an access token", ErrInvalidProof)
	}
	// 6. htm.
	if c.htm != req.Method {
		return nil, fmt.Errorf("%w: htm mismatch: proof says %s, request is %s", ErrInvalidProof, quote(c.htm), quote(req.Method))
	}
	// 7. htu.
	gotURL, err := normalizeURL(c.htu)
	if err != nil {
		return nil, fmt.Errorf("%w: htu mismatch: %w", ErrInvalidProof, err)
	}
	if gotURL != wantURL {
		return nil, fmt.Errorf("%w: htu mismatch: proof says %s, request is %s", ErrInvalidProof, quote(gotURL), quote(wantURL))
	}
	// 8. iat.
	if age := now.Sub(c.iat); age >= maxAge {
		return nil, fmt.Errorf("%w: iat too old: issued %s before now, must be less than %s", ErrInvalidProof, age, maxAge)
	}
	if ahead := c.iat.Sub(now); ahead > skew {
		return nil, fmt.Errorf("%w: iat in the future: %s ahead of now, allowed skew is %s", ErrInvalidProof, ahead, skew)
	}
	if nb := req.NotBefore.Add(skew); !req.NotBefore.IsZero() && c.iat.Before(nb) {
		return nil, fmt.Errorf("%w: iat before the server started (%s): a proof made before then may have been used already; make a new one (iat in milliseconds, or whole seconds after the start)",
			ErrInvalidProof, nb.UTC().Format(time.RFC3339Nano))
	}
	// 9. ath.
	if req.AccessToken != "" && subtle.ConstantTimeCompare([]byte(c.ath), []byte(ath(req.AccessToken))) != 1 {
		return nil, fmt.Errorf("%w: ath mismatch: it is not the hash of the access token", ErrInvalidProof)
	}

	return &Proof{
		JKT:       jose.Thumbprint(pub),
		PublicKey: pub,
		ID:        c.jti,
		Method:    c.htm,
		URL:       c.htu,
		ATH:       c.ath,
		IssuedAt:  c.iat,
	}, nil
}

// ath is the ath claim for an access token (RFC 9449 §4.2).
func ath(accessToken string) string {
	sum := sha256.Sum256([]byte(accessToken))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

type claims struct {
	jti, htm, htu, ath string
	iat                time.Time
	hasIAT             bool
}

// maxNumericDate bounds iat so that time arithmetic cannot overflow: the
// end of year 9999.
const maxNumericDate = 253402300799

// parseClaims reads the claims Check needs from a proof's payload: a JSON
// object with no duplicate member names. Other claims are ignored.
func parseClaims(b []byte) (claims, error) {
	var c claims
	err := jose.DecodeObject(b, func(name string, v []byte) error {
		var p *string
		switch name {
		case "jti":
			p = &c.jti
		case "htm":
			p = &c.htm
		case "htu":
			p = &c.htu
		case "ath":
			p = &c.ath
		case "iat":
			t, err := parseNumericDate(v)
			if err != nil {
				return err
			}
			c.iat, c.hasIAT = t, true
			return nil
		default:
			return nil
		}
		if len(v) == 0 || v[0] != '"' {
			return fmt.Errorf("claim %s must be a string", name)
		}
		if bytes.IndexByte(v, '\\') < 0 {
			*p = string(v[1 : len(v)-1]) // no escapes: the common case
			return nil
		}
		return json.Unmarshal(v, p)
	})
	if err != nil {
		return claims{}, fmt.Errorf("claims: %w", err)
	}
	return c, nil
}

// parseNumericDate parses iat: a JSON number of seconds since the epoch,
// integer (as RFC 9449 writes it) or with a fraction. A plain decimal is
// read exactly, to the nanosecond (1764412800.001 is not a float's
// 1764412800.000999927), so that a proof made at a server's start is not
// taken for one made just before it; a number with an exponent is read as
// a float.
func parseNumericDate(v []byte) (time.Time, error) {
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return time.Time{}, errors.New("claim iat must be a number")
	}
	if t, ok := parseDecimal(string(v)); ok {
		return t, nil
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || math.IsNaN(f) || math.Abs(f) > maxNumericDate {
		return time.Time{}, errors.New("claim iat is out of range")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

// parseDecimal parses -?DIGITS[.DIGITS] within ±maxNumericDate seconds,
// digits past the nanosecond truncated; ok is false for anything else.
func parseDecimal(s string) (t time.Time, ok bool) {
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	intPart, frac, dot := strings.Cut(s, ".")
	if intPart == "" || len(intPart) > 12 || !digits(intPart) || (dot && frac == "") || !digits(frac) {
		return time.Time{}, false
	}
	sec, err := strconv.ParseInt(intPart, 10, 64)
	if err != nil || sec > maxNumericDate {
		return time.Time{}, false
	}
	frac = (frac + "000000000")[:9]
	nsec, _ := strconv.ParseInt(frac, 10, 64)
	if neg {
		sec, nsec = -sec, -nsec
	}
	return time.Unix(sec, nsec).UTC(), true
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// quote quotes s for an error message, cut to 64 bytes: it comes from
// untrusted input. Its secrets are masked before the cut, which could
// leave half of one that no detector finds.
func quote(s string) string {
	s = secret.Mask(s)
	if len(s) > 64 {
		return strconv.Quote(s[:64]) + "..."
	}
	return strconv.Quote(s)
}
