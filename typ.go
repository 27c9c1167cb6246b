package mandate

import "strings"

// The typ header (RFC 7515 §4.1.9) of each kind of JWT that Mandate issues
// or accepts. Every kind is explicitly typed and every endpoint refuses
// the other kinds by their typ, before it looks at anything else in the
// token (RFC 8725 §3.11): no token made for one purpose is accepted for
// another, whatever its claims (docs/tokens.md, "Token types").
const (
	// TypMandate is a mandate: an RFC 9068 access token.
	TypMandate = "at+jwt"
	// TypClientAssertion is a client assertion (private_key_jwt, RFC 7523
	// §2.2), typed as draft-ietf-oauth-rfc7523bis §4 registers it.
	TypClientAssertion = "client-authentication+jwt"
	// TypActorToken is an actor token (RFC 8693 §2.1): a sub-agent's proof
	// of its key for one delegation. No standard type exists for it, so it
	// is a media type of Mandate's vendor tree (RFC 6838 §3.2), which no
	// other system's type can collide with.
	TypActorToken = "vnd.mandatehq.actor+jwt"
	// TypDPoPProof is a DPoP proof (RFC 9449 §4.2); package dpop checks it.
	TypDPoPProof = "dpop+jwt"
)

// TypIs reports whether the typ header value typ names the media type
// want: compared without regard to case, with or without the
// "application/" prefix, as RFC 7515 §4.1.9 says.
func TypIs(typ, want string) bool {
	if len(typ) > len("application/") && strings.EqualFold(typ[:len("application/")], "application/") {
		typ = typ[len("application/"):]
	}
	return strings.EqualFold(typ, want)
}

// TokenKind names the kind of Mandate JWT that typ says, for a message
// that refuses it where another kind was expected: "a mandate", "a client
// assertion", "an actor token", "a DPoP proof"; "" for any other typ.
func TokenKind(typ string) string {
	switch {
	case TypIs(typ, TypMandate):
		return "a mandate"
	case TypIs(typ, TypClientAssertion):
		return "a client assertion"
	case TypIs(typ, TypActorToken):
		return "an actor token"
	case TypIs(typ, TypDPoPProof):
		return "a DPoP proof"
	}
	return ""
}
