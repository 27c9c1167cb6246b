// Package jose is the small, Ed25519-only part of JOSE that Mandate needs:
// compact JWS ([RFC 7515]) signed with EdDSA over Ed25519 ([RFC 8037]),
// Ed25519 JSON Web Keys ([RFC 7517], [RFC 8037]) and JWK thumbprints
// ([RFC 7638]).
//
// It is used by the token issuer to sign mandates and by resource servers
// to parse and verify them and the DPoP proofs that come with them.
//
// # What it is not for
//
// It is not a general JOSE library. The algorithm allow-list is exactly
// "EdDSA" with Ed25519 keys: "none", HMAC, RSA and ECDSA are refused. There
// is no JWE, no JSON serialization, no unencoded payloads ([RFC 7797]), no
// "crit" extensions (a token that has "crit" is refused) and no fetching of
// keys from "jku", "x5u" or "x5c". It does not look inside the payload:
// checking claims such as exp or aud is the caller's job.
//
// # Strictness
//
// [Parse] accepts one encoding of a token and refuses the rest: exactly
// three parts, base64url without padding, whitespace or non-zero trailing
// bits, a header that is one JSON object in valid UTF-8 with no duplicate
// member names, and a 64-byte signature. A token that parses therefore
// re-encodes to the same string: tokens are not malleable.
//
// Errors wrap one of [ErrMalformed], [ErrAlgorithm] or [ErrSignature]; test
// them with [errors.Is]. No error or log value ever holds key material.
//
// [RFC 7515]: https://www.rfc-editor.org/rfc/rfc7515
// [RFC 7517]: https://www.rfc-editor.org/rfc/rfc7517
// [RFC 7638]: https://www.rfc-editor.org/rfc/rfc7638
// [RFC 7797]: https://www.rfc-editor.org/rfc/rfc7797
// [RFC 8037]: https://www.rfc-editor.org/rfc/rfc8037
package jose

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/mandatehq/mandate/internal/secret"
)

// Algorithm is the JWS "alg" this package signs with (RFC 8037).
const Algorithm = "EdDSA"

// AlgorithmEd25519 is the fully-specified name of the same algorithm (RFC
// 9864 §2.2), which newer libraries (jose v6) emit. It is accepted, never
// emitted: Ed25519 is the only curve this package knows, so the two names
// mean exactly the same verification.
const AlgorithmEd25519 = "Ed25519"

// allowedAlg is the allow-list of Parse and Verify.
func allowedAlg(alg string) bool { return alg == Algorithm || alg == AlgorithmEd25519 }

// MaxTokenSize is the longest compact JWS, in bytes, that [Parse] accepts.
const MaxTokenSize = 16 << 10

var (
	// ErrMalformed means the token or key is not well-formed: wrong
	// structure, bad base64url, bad JSON, a missing or mistyped member, or a
	// key of the wrong type or size.
	ErrMalformed = errors.New("jose: malformed")

	// ErrAlgorithm means the "alg" header is not "EdDSA", or the header
	// asks for an extension through "crit".
	ErrAlgorithm = errors.New("jose: algorithm not allowed")

	// ErrSignature means the signature does not verify under the given key.
	ErrSignature = errors.New("jose: signature invalid")
)

// Header is a JWS protected header. Sign and Parse know only these
// members; Parse ignores any other member, as RFC 7515 §4 says.
type Header struct {
	Alg  string   `json:"alg"`
	Typ  string   `json:"typ,omitempty"`
	Kid  string   `json:"kid,omitempty"`
	JWK  *JWK     `json:"jwk,omitempty"`
	Crit []string `json:"crit,omitempty"`
}

// JWS is a parsed compact JWS. Parse fills it; its signature has not been
// checked until Verify returns nil.
type JWS struct {
	Header    Header
	Payload   []byte
	Signature []byte

	signingInput string // BASE64URL(header) "." BASE64URL(payload), as received
}

// Sign returns the compact serialization of a JWS over payload, signed with
// priv. It sets h.Alg to "EdDSA"; the header is encoded with its members in
// the order alg, typ, kid, jwk, crit, empty ones left out, so Header{} gives
// exactly {"alg":"EdDSA"}.
//
// Sign never writes a private key: a JWK in h.JWK is written without d.
//
// Sign panics if priv is not ed25519.PrivateKeySize bytes long, as
// [ed25519.Sign] does. Note that Parse refuses tokens whose header has crit.
func Sign(priv ed25519.PrivateKey, h Header, payload []byte) string {
	h.Alg = Algorithm
	if h.JWK != nil && h.JWK.D != "" {
		public := *h.JWK
		public.D = ""
		h.JWK = &public
	}
	var scratch [256]byte // most headers fit: no heap allocation for them
	hdr := appendHeader(scratch[:0], &h)

	enc := base64.RawURLEncoding
	n := enc.EncodedLen(len(hdr)) + 1 + enc.EncodedLen(len(payload)) + 1 + enc.EncodedLen(ed25519.SignatureSize)
	buf := make([]byte, 0, n)
	buf = enc.AppendEncode(buf, hdr)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	sig := ed25519.Sign(priv, buf) // inlined, so sig stays on the stack
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf)
}

// Parse parses a compact JWS without verifying it. It refuses, wrapping
// ErrMalformed, a token longer than MaxTokenSize, one that is not three
// strict base64url parts, a header that is not a JSON object or a signature
// that is not 64 bytes; and, wrapping ErrAlgorithm, any "alg" but "EdDSA"
// and any header with "crit".
//
// Call Verify before trusting anything in the result.
func Parse(token string) (*JWS, error) {
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: token is %d bytes, limit is %d", ErrMalformed, len(token), MaxTokenSize)
	}
	i := strings.IndexByte(token, '.')
	if i < 0 {
		return nil, fmt.Errorf("%w: token must have three dot-separated parts, has 1", ErrMalformed)
	}
	j := strings.IndexByte(token[i+1:], '.')
	if j < 0 {
		return nil, fmt.Errorf("%w: token must have three dot-separated parts, has 2", ErrMalformed)
	}
	j += i + 1
	if strings.IndexByte(token[j+1:], '.') >= 0 {
		return nil, fmt.Errorf("%w: token must have three dot-separated parts, has more", ErrMalformed)
	}

	hdr, err := decodeSegment("header", token[:i])
	if err != nil {
		return nil, err
	}
	h, err := parseHeader(hdr)
	if err != nil {
		return nil, err
	}
	if !allowedAlg(h.Alg) {
		return nil, fmt.Errorf("%w: alg %s is not allowed, want %q", ErrAlgorithm, quote(h.Alg), Algorithm)
	}
	if h.Crit != nil {
		return nil, fmt.Errorf("%w: header has crit, but no extensions are understood", ErrAlgorithm)
	}
	payload, err := decodeSegment("payload", token[i+1:j])
	if err != nil {
		return nil, err
	}
	sig, err := decodeSegment("signature", token[j+1:])
	if err != nil {
		return nil, err
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature must be %d bytes, is %d", ErrMalformed, ed25519.SignatureSize, len(sig))
	}
	return &JWS{Header: h, Payload: payload, Signature: sig, signingInput: token[:j]}, nil
}

// Verify checks the signature over the signing input with pub. It returns
// nil only for a JWS from Parse whose Ed25519 signature is valid.
func (j *JWS) Verify(pub ed25519.PublicKey) error {
	if !allowedAlg(j.Header.Alg) {
		return fmt.Errorf("%w: alg %s is not allowed, want %q", ErrAlgorithm, quote(j.Header.Alg), Algorithm)
	}
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key must be %d bytes, is %d", ErrSignature, ed25519.PublicKeySize, len(pub))
	}
	if j.signingInput == "" || len(j.Signature) != ed25519.SignatureSize {
		return fmt.Errorf("%w: not a parsed token", ErrSignature)
	}
	if !ed25519.Verify(pub, []byte(j.signingInput), j.Signature) {
		return fmt.Errorf("%w: ed25519 verification failed", ErrSignature)
	}
	return nil
}

// VerifyWithJWK verifies j with the Ed25519 key of its jwk header (a DPoP
// proof, an ephemeral agent's actor token) and returns that key. The key
// must be one PublicKey accepts; it is decoded once, by the verification
// (JWK.VerifyingKey), and decoded again only if the verification fails, to
// tell a key that is not a point (ErrMalformed) from a bad signature
// (ErrSignature).
func (j *JWS) VerifyWithJWK() (ed25519.PublicKey, error) {
	if j.Header.JWK == nil {
		return nil, fmt.Errorf("%w: jwk header is missing", ErrMalformed)
	}
	pub, err := j.Header.JWK.VerifyingKey()
	if err != nil {
		return nil, err
	}
	if err := j.Verify(pub); err != nil {
		if _, kerr := j.Header.JWK.PublicKey(); kerr != nil {
			return nil, kerr
		}
		return nil, err
	}
	return pub, nil
}

func parseHeader(b []byte) (Header, error) {
	var h Header
	err := decodeObject(b, func(name string, v []byte) error {
		var err error
		switch name {
		case "alg":
			h.Alg, err = stringMember(name, v)
		case "typ":
			h.Typ, err = stringMember(name, v)
		case "kid":
			h.Kid, err = stringMember(name, v)
		case "jwk":
			var k JWK
			k, err = decodeJWK(v)
			if err == nil {
				h.JWK = &k
			}
		case "crit":
			h.Crit = []string{} // whatever it holds: Parse refuses it
		}
		return err
	})
	if err != nil {
		return Header{}, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	return h, nil
}

// strictB64 refuses non-zero trailing bits. It still skips \r and \n, which
// decodeSegment refuses first.
var strictB64 = base64.RawURLEncoding.Strict()

// decodeSegment decodes one part of a token: unpadded base64url, and
// nothing else.
func decodeSegment(part, s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if !isBase64URL(s[i]) {
			return nil, fmt.Errorf("%w: %s must be unpadded base64url, has byte 0x%02x at offset %d", ErrMalformed, part, s[i], i)
		}
	}
	b, err := strictB64.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s must be canonical unpadded base64url", ErrMalformed, part)
	}
	return b, nil
}

func isBase64URL(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}

// quote quotes s for an error message, cut to 32 bytes: values in errors
// come from untrusted input. Its secrets are masked before the cut, which
// could leave half of one that no detector finds.
func quote(s string) string {
	s = secret.Mask(s)
	if len(s) > 32 {
		return fmt.Sprintf("%q...", s[:32])
	}
	return fmt.Sprintf("%q", s)
}
