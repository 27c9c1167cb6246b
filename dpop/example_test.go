package dpop_test

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/replay"
)

func Example() {
	// The agent: a proof for each request, bound to its access token.
	_, priv, _ := ed25519.GenerateKey(nil)
	now := time.Now()
	accessToken := "eyJhbGciOiJFZERTQSJ9.e30.c2ln"
	proof := dpop.NewProof(priv, "POST", "https://mcp.example.com/github?x=1", accessToken, now)

	// The resource server.
	cache := replay.New(0) // one for the process
	req := dpop.Requirements{
		Method:      "POST",
		URL:         "https://MCP.example.com:443/github",
		AccessToken: accessToken,
		Now:         now,
	}
	p, err := dpop.Check(proof, req)
	if err != nil {
		fmt.Println(err)
		return
	}
	// Refuse a second use of the proof, for as long as Check would accept it.
	if err := cache.Use(p.JKT+"."+p.ID, p.IssuedAt.Add(dpop.DefaultMaxAge), now); err != nil {
		fmt.Println(err)
		return
	}
	// ...and check that p.JKT is the access token's cnf.jkt.
	fmt.Println("accepted")

	// The same proof again is a replay.
	p, _ = dpop.Check(proof, req)
	fmt.Println(cache.Use(p.JKT+"."+p.ID, p.IssuedAt.Add(dpop.DefaultMaxAge), now))

	// A proof for another method is refused.
	_, err = dpop.Check(dpop.NewProof(priv, "GET", "https://mcp.example.com/github", accessToken, now), req)
	fmt.Println(errors.Is(err, dpop.ErrInvalidProof), err)
	// Output:
	// accepted
	// replay: identifier already used
	// true dpop: invalid proof: htm mismatch: proof says "GET", request is "POST"
}
