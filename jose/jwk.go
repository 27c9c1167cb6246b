package jose

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"github.com/mandatehq/mandate/internal/jsonstr"
	"log/slog"

	"filippo.io/edwards25519"
)

// MaxJWKSize is the longest JWK, in bytes, that ParseJWK accepts.
const MaxJWKSize = 8 << 10

// JWK is a JSON Web Key (RFC 7517). Only Ed25519 keys (kty "OKP", crv
// "Ed25519", RFC 8037) can be turned into keys; the RSA and EC members are
// here so that Thumbprint can handle any key a peer presents.
//
// A JWK may hold a private key in D. Its String, GoString and LogValue
// methods never show D; use json.Marshal only where the private key is
// meant to go.
type JWK struct {
	Kty string `json:"kty,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	D   string `json:"d,omitempty"`
	Kid string `json:"kid,omitempty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
}

// NewPublicJWK returns the public JWK of pub: kty OKP, crv Ed25519, x, and
// kid set to the RFC 7638 thumbprint.
func NewPublicJWK(pub ed25519.PublicKey) JWK {
	return JWK{
		Kty: "OKP",
		Crv: "Ed25519",
		X:   base64.RawURLEncoding.EncodeToString(pub),
		Kid: Thumbprint(pub),
	}
}

// NewPrivateJWK returns the private JWK of priv: the public JWK plus d, the
// 32-byte seed. It panics if priv is not ed25519.PrivateKeySize bytes long.
func NewPrivateJWK(priv ed25519.PrivateKey) JWK {
	if len(priv) != ed25519.PrivateKeySize {
		panic("jose: NewPrivateJWK: private key must be 64 bytes")
	}
	k := NewPublicJWK(priv.Public().(ed25519.PublicKey))
	k.D = base64.RawURLEncoding.EncodeToString(priv.Seed())
	return k
}

// PublicKey returns the Ed25519 public key in k. It requires kty "OKP",
// crv "Ed25519", x of 32 bytes in strict base64url, the canonical encoding
// of a point on the curve that is not of small order, and, where present,
// alg "EdDSA" and use "sig". Errors wrap ErrMalformed.
func (k JWK) PublicKey() (ed25519.PublicKey, error) {
	pub, err := k.VerifyingKey()
	if err != nil {
		return nil, err
	}
	if _, err := new(edwards25519.Point).SetBytes(pub); err != nil {
		return nil, fmt.Errorf("%w: jwk: x is not a point on Ed25519", ErrMalformed)
	}
	return pub, nil
}

// VerifyingKey is PublicKey for a key that is about to verify one
// signature and is not kept: it refuses what PublicKey refuses except a
// point off the curve, which it leaves to ed25519.Verify, since Verify
// decodes the point anyway and refuses every signature under such a key.
// It saves a point decoding on the paths that see a key once (an ephemeral
// agent's actor token, a DPoP proof). After a failed verification,
// PublicKey tells a key that is not a point from a bad signature.
func (k JWK) VerifyingKey() (ed25519.PublicKey, error) {
	if k.Kty != "OKP" {
		return nil, fmt.Errorf("%w: jwk: kty must be \"OKP\", is %s", ErrMalformed, quote(k.Kty))
	}
	if k.Crv != "Ed25519" {
		return nil, fmt.Errorf("%w: jwk: crv must be \"Ed25519\", is %s", ErrMalformed, quote(k.Crv))
	}
	if k.Alg != "" && !allowedAlg(k.Alg) {
		return nil, fmt.Errorf("%w: jwk: alg must be %q or absent, is %s", ErrMalformed, Algorithm, quote(k.Alg))
	}
	if k.Use != "" && k.Use != "sig" {
		return nil, fmt.Errorf("%w: jwk: use must be \"sig\" or absent, is %s", ErrMalformed, quote(k.Use))
	}
	x, err := decodeKeyMember("x", k.X)
	if err != nil {
		return nil, err
	}
	if err := checkPublicKey(x); err != nil {
		return nil, err
	}
	return ed25519.PublicKey(x), nil
}

// checkPublicKey refuses encodings that are not a canonical point on the
// curve, and points of small order: with such a key (the identity, say) a
// signature with R = the point and S = 0 verifies for every message under
// Go's ed25519.Verify, so anyone could sign as its holder.
//
// It is on the path of every delegation to an ephemeral agent, so it tests
// the encoding's bytes (as libsodium does) rather than computing with the
// point: y must be below p, and y must not be one of the five values that
// the eight points of small order have (the sign bit picks x, so both signs
// are refused). Whether the point is on the curve at all is PublicKey's
// question. checkPublicKeySlow, which computes all three, is the reference
// of the two in tests.
func checkPublicKey(x []byte) error {
	if len(x) != 32 {
		return fmt.Errorf("%w: jwk: x is not 32 bytes", ErrMalformed)
	}
	if !canonicalY(x) {
		return fmt.Errorf("%w: jwk: x is not the canonical encoding of its point", ErrMalformed)
	}
	if smallOrderY(x) {
		return fmt.Errorf("%w: jwk: x is a point of small order, which anyone can sign for: generate a real key", ErrMalformed)
	}
	return nil
}

// canonicalY reports whether the 255-bit y of the encoding x is below
// p = 2^255 - 19 (RFC 8032 §5.1.3, step 1). The one other non-canonical
// form, x = 0 with the sign bit set, has y = ±1, which smallOrderY refuses.
func canonicalY(x []byte) bool {
	if x[31]&0x7f != 0x7f || x[0] < 0xed {
		return true
	}
	for _, b := range x[1:31] {
		if b != 0xff {
			return true
		}
	}
	return false
}

// smallOrderYs are the y coordinates, little-endian, of the eight points
// of order 1, 2, 4 and 8 on edwards25519: y = 1 (the identity), y = -1
// (order 2), y = 0 (the two points of order 4), and the two y values of the
// four points of order 8.
var smallOrderYs = [...][32]byte{
	{},
	{0x01},
	{0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f},
	{0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0,
		0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05},
	{0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67, 0x0f,
		0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac, 0x03, 0x7a},
}

// smallOrderY reports whether the canonical encoding x, sign bit aside,
// is the y of a point of small order.
func smallOrderY(x []byte) bool {
	var y [32]byte
	copy(y[:], x)
	y[31] &= 0x7f
	for i := range smallOrderYs {
		if y == smallOrderYs[i] {
			return true
		}
	}
	return false
}

// PrivateKey returns the Ed25519 private key in k. Besides what PublicKey
// requires, d must be a 32-byte seed in strict base64url whose public key
// is x. Errors wrap ErrMalformed and never show d.
func (k JWK) PrivateKey() (ed25519.PrivateKey, error) {
	pub, err := k.PublicKey()
	if err != nil {
		return nil, err
	}
	if k.D == "" {
		return nil, fmt.Errorf("%w: jwk: d is missing: not a private key", ErrMalformed)
	}
	seed, err := decodeKeyMember("d", k.D)
	if err != nil {
		return nil, err
	}
	priv := ed25519.NewKeyFromSeed(seed)
	clear(seed)
	if !pub.Equal(priv.Public()) {
		return nil, fmt.Errorf("%w: jwk: x does not match the public key derived from d", ErrMalformed)
	}
	return priv, nil
}

// decodeKeyMember decodes an Ed25519 key member: 32 bytes, strict
// base64url. Its errors never show the value.
func decodeKeyMember(name, v string) ([]byte, error) {
	if v == "" {
		return nil, fmt.Errorf("%w: jwk: %s is missing", ErrMalformed, name)
	}
	if len(v) != 43 { // base64url of 32 bytes, unpadded
		return nil, fmt.Errorf("%w: jwk: %s must be 43 characters of base64url (32 bytes), is %d characters", ErrMalformed, name, len(v))
	}
	for i := 0; i < len(v); i++ {
		if !isBase64URL(v[i]) {
			return nil, fmt.Errorf("%w: jwk: %s must be unpadded base64url", ErrMalformed, name)
		}
	}
	b, err := strictB64.DecodeString(v)
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("%w: jwk: %s must be canonical unpadded base64url of 32 bytes", ErrMalformed, name)
	}
	return b, nil
}

// ParseJWK parses one JWK: a single JSON object of at most MaxJWKSize
// bytes, in valid UTF-8, with no duplicate member names, and with kty. The
// known members must be strings; unknown members are ignored, as RFC 7517
// §4 says. ParseJWK does not check that the key is usable: call PublicKey
// or PrivateKey for that. Errors wrap ErrMalformed.
func ParseJWK(b []byte) (JWK, error) {
	if len(b) > MaxJWKSize {
		return JWK{}, fmt.Errorf("%w: jwk is %d bytes, limit is %d", ErrMalformed, len(b), MaxJWKSize)
	}
	k, err := decodeJWK(b)
	if err != nil {
		return JWK{}, fmt.Errorf("%w: jwk: %w", ErrMalformed, err)
	}
	return k, nil
}

func decodeJWK(b []byte) (JWK, error) {
	var k JWK
	err := decodeObject(b, func(name string, v []byte) error {
		var p *string
		switch name {
		case "kty":
			p = &k.Kty
		case "crv":
			p = &k.Crv
		case "x":
			p = &k.X
		case "y":
			p = &k.Y
		case "n":
			p = &k.N
		case "e":
			p = &k.E
		case "d":
			p = &k.D
		case "kid":
			p = &k.Kid
		case "use":
			p = &k.Use
		case "alg":
			p = &k.Alg
		default:
			return nil
		}
		s, err := stringMember(name, v)
		*p = s
		return err
	})
	if err != nil {
		return JWK{}, err
	}
	if k.Kty == "" {
		return JWK{}, fmt.Errorf("kty is missing")
	}
	return k, nil
}

// Thumbprint returns the RFC 7638 thumbprint of k: the SHA-256 digest of
// its required members in lexicographic order (e, kty, n for RSA; crv,
// kty, x, y for EC; crv, kty, x for OKP), base64url-encoded. It does not
// check that the members hold a valid key. Errors wrap ErrMalformed.
func (k JWK) Thumbprint() (string, error) {
	var buf [512]byte
	b := buf[:0]
	// missing names the first required member that is empty.
	missing := func(names []string, vals ...string) error {
		for i, v := range vals {
			if v == "" {
				return fmt.Errorf("%w: jwk thumbprint: kty %s requires %s", ErrMalformed, k.Kty, names[i])
			}
		}
		return nil
	}
	switch k.Kty {
	case "RSA":
		if err := missing([]string{"e", "n"}, k.E, k.N); err != nil {
			return "", err
		}
		b = append(b, `{"e":`...)
		b = jsonstr.Append(b, k.E)
		b = append(b, `,"kty":"RSA","n":`...)
		b = jsonstr.Append(b, k.N)
	case "EC":
		if err := missing([]string{"crv", "x", "y"}, k.Crv, k.X, k.Y); err != nil {
			return "", err
		}
		b = append(b, `{"crv":`...)
		b = jsonstr.Append(b, k.Crv)
		b = append(b, `,"kty":"EC","x":`...)
		b = jsonstr.Append(b, k.X)
		b = append(b, `,"y":`...)
		b = jsonstr.Append(b, k.Y)
	case "OKP":
		if err := missing([]string{"crv", "x"}, k.Crv, k.X); err != nil {
			return "", err
		}
		b = append(b, `{"crv":`...)
		b = jsonstr.Append(b, k.Crv)
		b = append(b, `,"kty":"OKP","x":`...)
		b = jsonstr.Append(b, k.X)
	default:
		return "", fmt.Errorf("%w: jwk thumbprint: kty must be \"RSA\", \"EC\" or \"OKP\", is %s", ErrMalformed, quote(k.Kty))
	}
	b = append(b, '}')
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// Thumbprint returns the RFC 7638 thumbprint of an Ed25519 public key, the
// same as NewPublicJWK(pub).Thumbprint() but without building a JWK. It is
// meant for the hot path of checking a cnf.jkt binding. For a pub that is
// not 32 bytes it returns the thumbprint of a JWK that PublicKey refuses.
func Thumbprint(pub ed25519.PublicKey) string {
	const prefix = `{"crv":"Ed25519","kty":"OKP","x":"`
	var buf [len(prefix) + 43 + 2]byte
	b := append(buf[:0], prefix...)
	b = base64.RawURLEncoding.AppendEncode(b, pub)
	b = append(b, '"', '}')
	sum := sha256.Sum256(b)
	var out [43]byte
	base64.RawURLEncoding.Encode(out[:], sum[:])
	return string(out[:])
}

// String describes k without its private part.
func (k JWK) String() string {
	s := fmt.Sprintf("JWK{kty=%s crv=%s kid=%s", quote(k.Kty), quote(k.Crv), quote(k.Kid))
	if k.D != "" {
		s += " private"
	}
	return s + "}"
}

// GoString is String: %#v must not show the private part either.
func (k JWK) GoString() string { return k.String() }

// LogValue logs k's type, curve, kid and whether it is private, never d.
func (k JWK) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("kty", k.Kty),
		slog.String("crv", k.Crv),
		slog.String("kid", k.Kid),
		slog.Bool("private", k.D != ""),
	)
}
