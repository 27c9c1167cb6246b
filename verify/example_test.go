package verify_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/mandatehq/mandate/verify"
)

// A resource server verifies the mandate of every request offline, from the
// issuer's published keys, and refuses a mandate that is expired, meant for
// another server, or presented without its holder's DPoP proof.
func ExampleVerifier_VerifyRequest() {
	v, err := verify.New(verify.Config{
		Issuer:   "https://mandate.example",
		Keys:     verify.NewJWKS("https://mandate.example/.well-known/jwks.json", verify.JWKSOptions{}),
		Audience: "mcp:github",
	})
	if err != nil {
		panic(err)
	}
	http.HandleFunc("/mcp/github", func(w http.ResponseWriter, r *http.Request) {
		claims, err := v.VerifyRequest(r.Context(), r, "https://tools.example/mcp/github")
		if err != nil {
			// err names the failed check: errors.Is(err, verify.ErrExpired), ...
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "acting for %s through %v\n", claims.Subject, claims.Actor.Chain())
	})
}

// Verify reports which check failed.
func ExampleError() {
	v, _ := verify.New(verify.Config{Issuer: "https://mandate.example", Keys: verify.StaticKeys{}, Audience: "mcp:github"})
	_, err := v.Verify(context.Background(), "not-a-mandate")
	var ve *verify.Error
	if errors.As(err, &ve) {
		fmt.Println(ve.Check, "-", errors.Is(err, verify.ErrMalformed))
	}
	// Output: jws - true
}

// Where a revocation up the delegation chain must take effect at once, a
// resource server asks the issuer as well, at the cost of a round trip for
// every mandate.
func ExampleVerifier_VerifyOnline() {
	adminToken := "read from a secret store"
	v, err := verify.New(verify.Config{
		Issuer:   "https://mandate.example",
		Keys:     verify.NewJWKS("https://mandate.example/.well-known/jwks.json", verify.JWKSOptions{}),
		Audience: "mcp:github",
		Introspection: &verify.Introspection{
			URL:    "https://mandate.example/oauth2/introspect",
			Client: &http.Client{Timeout: 5 * time.Second},
			Authorize: func(r *http.Request) error {
				r.Header.Set("Authorization", "Bearer "+adminToken)
				return nil
			},
		},
	})
	if err != nil {
		panic(err)
	}
	http.HandleFunc("/mcp/github/admin", func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			http.Error(w, "send a mandate", http.StatusUnauthorized)
			return
		}
		claims, err := v.VerifyOnline(r.Context(), token)
		switch {
		case errors.Is(err, verify.ErrIntrospection):
			http.Error(w, "cannot check the mandate now", http.StatusServiceUnavailable)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "acting for %s through %v\n", claims.Subject, claims.Actor.Chain())
	})
}
