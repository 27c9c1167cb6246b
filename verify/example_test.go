package verify_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"

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
