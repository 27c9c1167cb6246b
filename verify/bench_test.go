package verify_test

import (
	"context"
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/verify"
)

// bareVerifyNs measures one Ed25519 verify of a mandate-sized message in
// this run, the unit the verification benchmarks are reported in.
func bareVerifyNs(key ed25519.PrivateKey) float64 {
	msg := make([]byte, 450)
	sig := ed25519.Sign(key, msg)
	pub := key.Public().(ed25519.PublicKey)
	const n = 2000
	start := time.Now()
	for range n {
		ed25519.Verify(pub, msg, sig)
	}
	return float64(time.Since(start).Nanoseconds()) / n
}

// BenchmarkVerify verifies a mandate as a resource server does, as a
// bearer token and with a DPoP proof (a second signature to verify, plus
// the replay check):
//
//	go test -run '^$' -bench Verify -cpu 1 ./verify/
//
// x_ed25519 is the cost in bare Ed25519 verifies measured in the same run.
func BenchmarkVerify(b *testing.B) {
	for _, mode := range []string{"bearer", "dpop", "bearer-cached", "dpop-cached"} {
		b.Run(mode, func(b *testing.B) {
			cached := strings.HasSuffix(mode, "-cached")
			mode := strings.TrimSuffix(mode, "-cached")
			e := newEnv(&testing.T{})
			c := e.claims(time.Hour)
			if mode == "dpop" {
				c.Confirm = &mandate.Confirmation{JKT: jose.Thumbprint(e.holder.Public().(ed25519.PublicKey))}
			}
			tok := e.sign(c)
			cfg := verify.Config{Issuer: iss, Keys: verify.StaticKeys{e.kid: e.key.Public().(ed25519.PublicKey)},
				Audience: "mcp:crm", Now: func() time.Time { return e.now }}
			if cached { // a session's calls present the same mandate
				cfg.CacheSize = 1000
			}
			v, err := verify.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			const url = "https://gw.example/mcp/crm"
			var proofs []string
			if mode == "dpop" { // proofs are single-use: make them before timing
				proofs = make([]string, b.N)
				for i := range proofs {
					proofs[i] = dpop.NewProof(e.holder, "POST", url, tok, e.now)
				}
			}
			unit := bareVerifyNs(e.key)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var err error
				if mode == "dpop" {
					_, err = v.VerifyDPoP(ctx, tok, proofs[i], "POST", url)
				} else {
					_, err = v.Verify(ctx, tok)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/unit, "x_ed25519")
		})
	}
}

// BenchmarkEd25519Verify is the bare signature check, for comparison.
func BenchmarkEd25519Verify(b *testing.B) {
	e := newEnv(&testing.T{})
	msg := make([]byte, 450)
	sig := ed25519.Sign(e.key, msg)
	pub := e.key.Public().(ed25519.PublicKey)
	for b.Loop() {
		ed25519.Verify(pub, msg, sig)
	}
}
