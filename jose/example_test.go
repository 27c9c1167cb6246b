package jose_test

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/mandatehq/mandate/jose"
)

func Example() {
	// The RFC 8037 A.1 key; use ed25519.GenerateKey for real keys.
	k, _ := jose.ParseJWK([]byte(`{"kty":"OKP","crv":"Ed25519",
		"d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A",
		"x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`))
	priv, err := k.PrivateKey()
	if err != nil {
		panic(err)
	}
	token := jose.Sign(priv, jose.Header{}, []byte("Example of Ed25519 signing"))
	fmt.Println(token)

	jws, err := jose.Parse(token)
	if err != nil {
		panic(err)
	}
	if err := jws.Verify(priv.Public().(ed25519.PublicKey)); err != nil {
		panic(err)
	}
	fmt.Printf("%s\n", jws.Payload)

	_, err = jose.Parse("eyJhbGciOiJub25lIn0.e30.")
	fmt.Println(errors.Is(err, jose.ErrAlgorithm), err)
	// Output:
	// eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg
	// Example of Ed25519 signing
	// true jose: algorithm not allowed: alg "none" is not allowed, want "EdDSA"
}

func ExampleThumbprint() {
	k, _ := jose.ParseJWK([]byte(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`))
	pub, _ := k.PublicKey()
	fmt.Println(jose.Thumbprint(pub))
	// Output: kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k
}
