package issuer_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/replay"
	"github.com/mandatehq/mandate/sqlite"
)

// floorNs measures, in this run, the floor of a mint: one Ed25519 verify
// (the client assertion) plus one sign (the mandate), on payloads of the
// sizes a mint handles.
func floorNs(b *testing.B) float64 {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 400)
	sig := ed25519.Sign(k, msg)
	pub := k.Public().(ed25519.PublicKey)
	const n = 2000
	start := time.Now()
	for range n {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify")
		}
		ed25519.Sign(k, msg)
	}
	return float64(time.Since(start).Nanoseconds()) / n
}

type nopLog struct{}

func (nopLog) RecordIssuance(context.Context, *mandate.Issuance, *mandate.Event) error { return nil }

// BenchmarkMintRoot is a root mint in process: assertion parse and verify,
// ceiling check, replay check, claims, sign, and (store=sqlite) the durable
// write-ahead record with group commit. Run it on one core:
//
//	go test -run '^$' -bench MintRoot -cpu 1 ./issuer/
//
// floor_ratio is (verify + sign) / mint, both measured in this run.
// store=sqlite+policy also asks the default policy set, as `mandate
// serve` does.
func BenchmarkMintRoot(b *testing.B) {
	// store=none records nothing: the cost of the write-ahead audit log is
	// the difference with store=sqlite, where the issuance is its event.
	for _, store := range []string{"sqlite+policy", "sqlite", "none"} {
		b.Run("store="+store, func(b *testing.B) {
			ctx := context.Background()
			_, key, _ := ed25519.GenerateKey(rand.Reader)
			pub := key.Public().(ed25519.PublicKey)
			st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(b.TempDir(), "m.db")})
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			ceiling, _ := mandate.ParseScopeSet("mcp:crm:* mcp:email:send")
			st.CreateAgent(ctx, &mandate.Agent{ID: agentID, Name: "researcher", Owner: "alice@example.org", Ceiling: ceiling,
				PublicKey: pub, KeyID: jose.Thumbprint(pub), Status: mandate.AgentActive, CreatedAt: time.Now(), UpdatedAt: time.Now()}, nil)
			var log mandate.IssuanceLog = st
			if store == "none" {
				log = nopLog{}
			}
			is, err := issuer.New(issuer.Config{Issuer: iss, Keys: issuer.NewMemoryKeyring(time.Hour, time.Now()),
				Agents: st, Log: log, Replay: replay.New(4 << 20), Policy: benchPolicy(b, store)})
			if err != nil {
				b.Fatal(err)
			}
			// Client assertions are single-use: make them before timing.
			now := time.Now()
			assertions := make([]string, b.N)
			for i := range assertions {
				c, _ := json.Marshal(map[string]any{"iss": agentID, "sub": agentID, "aud": iss, "iat": now.Unix(),
					"exp": now.Add(4 * time.Minute).Unix(), "jti": fmt.Sprintf("bench-%d-%d", now.UnixNano(), i)})
				assertions[i] = jose.Sign(key, jose.Header{Typ: mandate.TypClientAssertion}, c)
			}
			floor := floorNs(b)
			var next atomic.Int64
			b.SetParallelism(64) // concurrent requests, as a server has them
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := next.Add(1) - 1
					_, err := is.MintRoot(ctx, issuer.RootRequest{ClientAssertionType: issuer.ClientAssertionType,
						ClientAssertion: assertions[i], Scope: "mcp:crm:list_customers", TTL: 30 * time.Millisecond})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(1e9/perOp, "mints/s")
			b.ReportMetric(floor, "floor-ns")
			b.ReportMetric(floor/perOp, "floor_ratio")
			if st := st.Stats(); store != "none" && st.Commits > 0 {
				b.ReportMetric(float64(st.Writes)/float64(st.Commits), "writes/tx")
			}
		})
	}
}

// benchPolicy is the default policy set for a store=…+policy benchmark,
// else nil.
func benchPolicy(b *testing.B, store string) issuer.Decider {
	if !strings.HasSuffix(store, "+policy") {
		return nil
	}
	e, err := policy.Open(policy.Config{Dir: filepath.Join(b.TempDir(), "policies"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkFloor is one Ed25519 verify plus one sign, for comparison.
func BenchmarkFloor(b *testing.B) {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	msg := make([]byte, 400)
	sig := ed25519.Sign(k, msg)
	pub := k.Public().(ed25519.PublicKey)
	for b.Loop() {
		ed25519.Verify(pub, msg, sig)
		ed25519.Sign(k, msg)
	}
}

// BenchmarkDelegate is a token exchange in process: the parent mandate
// (signed here, so found in the issuer's cache), the actor token of a new
// ephemeral agent (parse, verify), the attenuation rules, sign, and the
// durable record of the issuance and its mandate.delegated event with
// group commit. Run it on one core:
//
//	go test -run '^$' -bench Delegate -cpu 1 ./issuer/
//
// floor_ratio is (verify + sign) / delegation, both measured in this run;
// store=sqlite+policy also asks the default policy set.
func BenchmarkDelegate(b *testing.B) {
	for _, store := range []string{"sqlite+policy", "sqlite", "none"} {
		b.Run("store="+store, func(b *testing.B) { benchmarkDelegate(b, store) })
	}
}

func benchmarkDelegate(b *testing.B, store string) {
	ctx := context.Background()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	st, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(b.TempDir(), "m.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ceiling, _ := mandate.ParseScopeSet("mcp:crm:* mcp:email:send")
	st.CreateAgent(ctx, &mandate.Agent{ID: agentID, Name: "researcher", Owner: "alice@example.org", Ceiling: ceiling,
		PublicKey: pub, KeyID: jose.Thumbprint(pub), Status: mandate.AgentActive, CreatedAt: time.Now(), UpdatedAt: time.Now()}, nil)
	var log mandate.IssuanceLog = st
	if store == "none" {
		log = nopLog{}
	}
	is, err := issuer.New(issuer.Config{Issuer: iss, Keys: issuer.NewMemoryKeyring(time.Hour, time.Now()),
		Agents: st, Log: log, Issuances: st, Revocations: st, Events: st, Approvals: st, Assertions: st, Replay: replay.New(4 << 20),
		Policy: benchPolicy(b, store)})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	c, _ := json.Marshal(map[string]any{"iss": agentID, "sub": agentID, "aud": iss, "exp": now.Add(time.Minute).Unix(), "jti": "root"})
	root, err := is.MintRoot(ctx, issuer.RootRequest{ClientAssertionType: issuer.ClientAssertionType,
		ClientAssertion: jose.Sign(key, jose.Header{Typ: mandate.TypClientAssertion}, c), Scope: "mcp:crm:*", TTL: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	// Actor tokens are single-use, each from a new ephemeral agent: make
	// them before timing.
	actors := make([]string, b.N)
	for i := range actors {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		jwk := jose.NewPublicJWK(k.Public().(ed25519.PublicKey))
		c, _ := json.Marshal(map[string]any{"aud": iss, "exp": now.Add(4 * time.Minute).Unix(), "jti": fmt.Sprintf("a-%d", i),
			"par": root.Claims.ID})
		actors[i] = jose.Sign(k, jose.Header{Typ: mandate.TypActorToken, JWK: &jwk}, c)
	}
	floor := floorNs(b)
	var next atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(64)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			i := next.Add(1) - 1
			start := time.Now()
			_, err := is.Delegate(ctx, issuer.DelegateRequest{SubjectToken: root.AccessToken, SubjectTokenType: issuer.TokenTypeJWT,
				ActorToken: actors[i], ActorTokenType: issuer.TokenTypeJWT, Scope: "mcp:crm:get_customer", TTL: 30 * time.Millisecond})
			if err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(start))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(1e9/perOp, "delegations/s")
	b.ReportMetric(floor, "floor-ns")
	b.ReportMetric(floor/perOp, "floor_ratio")
}
