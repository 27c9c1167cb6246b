package issuer

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/jose"
)

// assertionClaims are the claims of a client assertion (RFC 7523 §3), and
// of an actor token, which also names the parent mandate it is for.
type assertionClaims struct {
	Issuer    string               `json:"iss"`
	Subject   string               `json:"sub"`
	Audience  mandate.Audience     `json:"aud"`
	Expiry    *mandate.NumericDate `json:"exp"`
	NotBefore *mandate.NumericDate `json:"nbf"`
	IssuedAt  *mandate.NumericDate `json:"iat"`
	ID        string               `json:"jti"`
	Parent    string               `json:"par"` // actor tokens only
}

// assertion is a verified client assertion.
type assertion struct {
	ID     string
	Expiry mandate.NumericDate
}

const maxJTILength = 256

// usedKey is the replay set's key of a client assertion or actor token:
// the agent that signed it, as the issuance log records it (Issuance.AgentID:
// a registered agent's ID, or an ephemeral agent's, which derives from its
// key and the delegator), and its jti. Both the check and RestoreReplay
// use it, so that what is restored after a restart is what is checked.
func usedKey(agentID, jti string) string { return "a\x00" + agentID + "\x00" + jti }

// typProblem says what is wrong with the typ of a JWT presented where the
// kind want is expected, or "": a JWT of another kind is refused by its
// typ before anything else in it is looked at (RFC 8725 §3.11).
func typProblem(typ, want string) string {
	if mandate.TypIs(typ, want) {
		return ""
	}
	if kind := mandate.TokenKind(typ); kind != "" {
		return fmt.Sprintf("typ %q: %s is not %s", typ, kind, mandate.TokenKind(want))
	}
	return fmt.Sprintf("typ must be %s, is %q", want, typ)
}

// claimsProblem checks the audience, times and jti of a JWT an agent
// signed for the token endpoint (a client assertion or an actor token,
// named by what) and says what is wrong with them, or "". A typed JWT names
// this server by its issuer identifier alone, as draft-ietf-oauth-rfc7523bis
// requires of the client assertions its typ marks (which defeats audience
// injection: a JWT a client made for one server's endpoint, presented at
// another). An untyped client assertion (Config.AllowUntypedClientAssertions)
// keeps the rule of RFC 7523 §3 and OpenID Connect Core §9: aud contains the
// token endpoint or the issuer.
func (is *Issuer) claimsProblem(c *assertionClaims, now time.Time, what string, untyped bool) string {
	skew := is.cfg.ClockSkew
	switch {
	case untyped && !c.Audience.Contains(is.cfg.TokenEndpoint) && !c.Audience.Contains(is.cfg.Issuer):
		return fmt.Sprintf("aud must name the token endpoint %s", is.cfg.TokenEndpoint)
	case !untyped && (len(c.Audience) != 1 || c.Audience[0] != is.cfg.Issuer):
		return fmt.Sprintf("aud must be the issuer identifier %s, and nothing else (draft-ietf-oauth-rfc7523bis)", is.cfg.Issuer)
	case c.Expiry == nil:
		return "exp is required"
	case !now.Before(c.Expiry.Add(skew)):
		return "expired at " + c.Expiry.UTC().Format(time.RFC3339Nano)
	case c.Expiry.Sub(now) > is.cfg.MaxAssertionLifetime+skew:
		return fmt.Sprintf("exp is more than %v ahead: make short-lived %ss", is.cfg.MaxAssertionLifetime, what)
	case c.NotBefore != nil && now.Before(c.NotBefore.Add(-skew)):
		return "not valid before " + c.NotBefore.UTC().Format(time.RFC3339Nano)
	case c.IssuedAt != nil && c.IssuedAt.After(now.Add(skew)):
		return "iat is in the future: check the agent's clock"
	case c.ID == "" || len(c.ID) > maxJTILength:
		return fmt.Sprintf("jti is required (at most %d bytes) and must be unique per %s", maxJTILength, what)
	}
	return ""
}

// authenticate verifies a private_key_jwt client assertion (RFC 7523 §3)
// and returns the active agent it names: typ client-authentication+jwt (or
// untyped, if allowed) before anything else, so that no other kind of JWT
// (an actor token of the same agent, say) authenticates it. Every failure
// is invalid_client.
func (is *Issuer) authenticate(ctx context.Context, clientID, typ, raw string, now time.Time) (*mandate.Agent, *assertion, error) {
	fail := func(format string, args ...any) (*mandate.Agent, *assertion, error) {
		return nil, nil, mandate.OAuthErrorf(mandate.EUNAUTHORIZED, "invalid_client", "client assertion: "+format, args...)
	}
	if typ != ClientAssertionType {
		if typ == "" && raw == "" {
			return fail("missing: authenticate with client_assertion_type=%s and a client_assertion JWT signed by the agent's key", ClientAssertionType)
		}
		return fail("client_assertion_type must be %s", ClientAssertionType)
	}
	jws, err := jose.Parse(raw)
	if err != nil {
		return fail("%v", err)
	}
	untyped, p := is.clientAssertionTyp(jws.Header.Typ)
	if p != "" {
		return fail("%s", p)
	}
	var c assertionClaims
	if err := json.Unmarshal(jws.Payload, &c); err != nil {
		return fail("claims are not a JSON object with the expected types: %v", err)
	}
	if c.Issuer == "" || c.Issuer != c.Subject {
		return fail("iss and sub must both be the agent's id")
	}
	if clientID != "" && clientID != c.Subject {
		return fail("client_id %q does not match the assertion's sub", clientID)
	}
	agent, err := is.cfg.Agents.Agent(ctx, c.Subject)
	if mandate.ErrorCode(err) == mandate.ENOTFOUND {
		return fail("unknown agent %q: register it with `mandate agent add`", c.Subject)
	} else if err != nil {
		return nil, nil, err
	}
	if err := jws.Verify(ed25519.PublicKey(agent.PublicKey)); err != nil {
		return fail("signature does not verify with the key registered for %s", agent.ID)
	}
	if p := is.claimsProblem(&c, now, "assertion", untyped); p != "" {
		return fail("%s", p)
	}
	if agent.Status != mandate.AgentActive {
		return fail("agent %s is %s", agent.Name, agent.Status)
	}
	return agent, &assertion{ID: c.ID, Expiry: *c.Expiry}, nil
}

// clientAssertionTyp says what is wrong with a client assertion's typ, or
// "": it is client-authentication+jwt (draft-ietf-oauth-rfc7523bis §4),
// or, with Config.AllowUntypedClientAssertions, none or JWT (untyped).
func (is *Issuer) clientAssertionTyp(typ string) (untyped bool, problem string) {
	p := typProblem(typ, mandate.TypClientAssertion)
	if p == "" || mandate.TokenKind(typ) != "" {
		return false, p
	}
	if typ == "" || mandate.TypIs(typ, "jwt") {
		if is.cfg.AllowUntypedClientAssertions {
			return true, ""
		}
		return true, p + " (this server does not accept untyped client assertions: see docs/tokens.md)"
	}
	return false, p
}

// Authenticate verifies a private_key_jwt client assertion presented at an
// endpoint other than the token endpoint (revocation) and uses up its jti,
// durably. Errors are invalid_client.
func (is *Issuer) Authenticate(ctx context.Context, clientID, typ, raw string) (*mandate.Agent, error) {
	now := is.cfg.Now()
	agent, a, err := is.authenticate(ctx, clientID, typ, raw, now)
	if err != nil {
		return nil, err
	}
	if is.cfg.Assertions == nil {
		return nil, mandate.Errorf(mandate.EINTERNAL, "issuer: Config.Assertions is not set")
	}
	// Durably, before anything is done on its authority: otherwise the
	// assertion could be replayed at the token endpoint after a restart.
	if err := is.useDurably(ctx, agent.ID, a, now, "invalid_client", "client assertion"); err != nil {
		return nil, err
	}
	return agent, nil
}

// useDurably uses up a client assertion or actor token of agentID whose
// use has an effect but obtains no mandate (an authenticated revocation,
// a filed approval request), and records it in Config.Assertions before
// returning, so that RestoreReplay knows it after a restart. (A use that
// obtains a mandate is recorded with its issuance.)
func (is *Issuer) useDurably(ctx context.Context, agentID string, a *assertion, now time.Time, oauth, what string) error {
	if err := is.useOnce(usedKey(agentID, a.ID), a.Expiry.Time, now, oauth, what); err != nil {
		return err
	}
	if err := is.cfg.Assertions.RecordAssertion(ctx, agentID, a.ID, a.Expiry.Time); err != nil {
		return &mandate.Error{Code: mandate.EUNAVAILABLE, OAuth: "temporarily_unavailable",
			Message: "the " + what + " could not be recorded: try again later with a new one", Err: err}
	}
	return nil
}
