package httpapi_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/mandatehq/mandate/httpapi"
)

// An independent verifier, golang-jwt/jwt/v5, accepts our mandates with the
// key from our JWKS, and refuses them once expired.
func TestGolangJWTVerifiesMandate(t *testing.T) {
	ts := newServer(t)
	key := ts.addAgent(t, "a", "mcp:crm:*")
	ctx := context.Background()
	tok, err := ts.client.Token(ctx, httpapi.TokenRequest{AgentID: "spiffe://example.org/agent/a", Key: key, Scope: "mcp:crm:list", TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}

	resp, err := http.Get(ts.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	var set struct {
		Keys []struct{ Kid, Kty, Crv, X string }
	}
	json.NewDecoder(resp.Body).Decode(&set)
	resp.Body.Close()
	keyfunc := func(tk *jwt.Token) (any, error) {
		for _, k := range set.Keys {
			if k.Kid == tk.Header["kid"] && k.Kty == "OKP" && k.Crv == "Ed25519" {
				b, err := base64.RawURLEncoding.DecodeString(k.X)
				return ed25519.PublicKey(b), err
			}
		}
		return nil, errors.New("no such key")
	}
	type claims struct {
		jwt.RegisteredClaims
		ClientID string `json:"client_id"`
		Scope    string `json:"scope"`
		Task     string `json:"task"`
	}
	parse := func(at time.Time) (*claims, error) {
		var c claims
		_, err := jwt.ParseWithClaims(tok.AccessToken, &c, keyfunc,
			jwt.WithValidMethods([]string{"EdDSA"}), jwt.WithIssuer(ts.URL), jwt.WithAudience("mcp:crm"),
			jwt.WithExpirationRequired(), jwt.WithTimeFunc(func() time.Time { return at }))
		return &c, err
	}
	c, err := parse(time.Now())
	if err != nil {
		t.Fatalf("golang-jwt refuses the mandate: %v", err)
	}
	if c.Subject != "user:alice@example.org" || c.ClientID != "spiffe://example.org/agent/a" || c.Scope != "mcp:crm:list" {
		t.Errorf("claims as golang-jwt reads them: %+v", c)
	}
	// golang-jwt truncates dates to jwt.TimePrecision, a second by
	// default: iat and exp both read as whole seconds, 2 s apart.
	if life := c.ExpiresAt.Sub(c.IssuedAt.Time); life != 2*time.Second {
		t.Errorf("lifetime as golang-jwt reads it: %v", life)
	}
	if _, err := parse(c.ExpiresAt.Add(time.Millisecond)); !errors.Is(err, jwt.ErrTokenExpired) {
		t.Errorf("1 ms after exp golang-jwt says %v, want expired", err)
	}
}
