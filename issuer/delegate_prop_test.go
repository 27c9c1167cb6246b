package issuer_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/evindex"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/verify"
)

// TestDelegationProperty grows random delegation trees with random, often
// escalating, requests. Whatever is issued never exceeds its parent in
// scope, audience or lifetime, keeps the parent's sub and task, nests the
// parent's chain, and verifies with the issuer's key.
func TestDelegationProperty(t *testing.T) {
	pool := []string{"mcp:crm:*", "mcp:crm:list_*", "mcp:crm:list_customers", "mcp:crm:get_customer",
		"mcp:crm:delete_customer", "mcp:email:send", "mcp:email:*", "mcp:*:*", "mcp:crm:get_*"}
	resources := []string{"mcp:crm", "mcp:email", "mcp:github"}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	f := newFixture(t)
	type node struct {
		tok *issuer.Token
		key ed25519.PrivateKey
	}
	issued, refused := 0, 0
	for tree := 0; tree < 20; tree++ {
		nodes := []node{{f.root("mcp:crm:* mcp:email:send", time.Duration(1+rng.IntN(60))*time.Second, rng.IntN(2) == 0), f.key}}
		for step := 0; step < 15; step++ {
			p := nodes[rng.IntN(len(nodes))]
			k := newKey(t)
			child, err := f.delegate(p.tok, p.key, k, "", func(r *issuer.DelegateRequest) {
				var sc []string
				for range 1 + rng.IntN(3) {
					sc = append(sc, pool[rng.IntN(len(pool))])
				}
				if rng.IntN(4) > 0 {
					r.Scope = strings.Join(dedup(sc), " ")
				}
				if rng.IntN(3) == 0 {
					r.Resources = []string{resources[rng.IntN(len(resources))]}
				}
				if rng.IntN(2) == 0 {
					r.TTL = time.Duration(10+rng.IntN(90_000)) * time.Millisecond
				}
			})
			f.clk.Advance(time.Duration(rng.IntN(500)) * time.Millisecond)
			if err != nil {
				if mandate.ErrorCode(err) == mandate.EINTERNAL || mandate.ErrorCode(err) == mandate.EUNAVAILABLE {
					t.Fatal(err)
				}
				refused++
				continue
			}
			issued++
			checkChild(t, f, p.tok.Claims, child)
			nodes = append(nodes, node{child, k})
		}
	}
	t.Logf("%d issued, %d refused", issued, refused)
	if issued < 50 || refused < 50 {
		t.Errorf("the random requests should both pass and fail often: %d issued, %d refused", issued, refused)
	}
}

func dedup(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

func checkChild(t *testing.T, f *fixture, p *mandate.Claims, child *issuer.Token) {
	t.Helper()
	c := child.Claims
	ps, _ := p.Scopes()
	cs, err := c.Scopes()
	if err != nil || !ps.Covers(cs) {
		t.Fatalf("child scope %q exceeds parent %q", c.Scope, p.Scope)
	}
	for _, a := range c.Audience {
		if !p.Audience.Contains(a) {
			t.Fatalf("child aud %v exceeds parent %v", c.Audience, p.Audience)
		}
	}
	if c.Expiry.After(p.Expiry.Time) {
		t.Fatalf("child exp %v after parent %v", c.Expiry, p.Expiry)
	}
	if c.Subject != p.Subject || c.Task != p.Task || c.Parent != p.ID || c.Actor.Actor != p.Actor || c.Actor.Subject != c.ClientID {
		t.Fatalf("child identity: %+v of parent %+v", c, p)
	}
	if c.Depth() > issuer.DefaultMaxDepth {
		t.Fatalf("depth %d", c.Depth())
	}
	// What the token says is what the claims say, signed by the issuer.
	jws, err := jose.Parse(child.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if err := jws.Verify(f.keys.Active().Public()); err != nil {
		t.Fatal(err)
	}
	var got mandate.Claims
	if err := json.Unmarshal(jws.Payload, &got); err != nil || got.ID != c.ID || got.Scope != c.Scope || !got.Expiry.Equal(c.Expiry.Time) {
		t.Fatalf("token payload %s differs from the claims", jws.Payload)
	}
	// And the public verifier accepts it, chain and all, at the issuer's
	// clock (the property test's clock runs ahead of the real one).
	v, err := verify.New(verify.Config{Issuer: iss, Keys: verify.StaticKeys{f.keys.Active().ID: f.keys.Active().Public()},
		AnyAudience: true, IgnoreBinding: true, Now: func() time.Time { return c.IssuedAt.Time }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(context.Background(), child.AccessToken); err != nil {
		t.Fatalf("the chain does not verify: %v", err)
	}
}

// TestConcurrentDelegations: 1,000 delegations under one task at once are
// all recorded, and the task's events make a complete, consistent tree.
func TestConcurrentDelegations(t *testing.T) {
	f := newFixture(t)
	root := f.root("mcp:crm:*", time.Hour, false)
	const n = 1000
	var wg sync.WaitGroup
	errs := make(chan error, n)
	ids := make(chan string, n)
	sem := make(chan struct{}, 64)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			tok, err := f.delegate(root, f.key, newKey(t), "", func(r *issuer.DelegateRequest) { r.Scope = "mcp:crm:get_customer" })
			if err != nil {
				errs <- err
				return
			}
			ids <- tok.Claims.ID
		}()
	}
	wg.Wait()
	close(errs)
	close(ids)
	for err := range errs {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for id := range ids {
		want[id] = true
	}
	evs, err := f.store.Events(context.Background(), mandate.EventFilter{Task: root.Claims.Task, Limit: mandate.MaxEventsPerQuery})
	if err != nil {
		t.Fatal(err)
	}
	children := 0
	for _, ev := range evs {
		switch ev.Type {
		case mandate.EventMandateIssued:
			if ev.Mandate != root.Claims.ID {
				t.Errorf("a second root in the task: %s", ev.Mandate)
			}
		case mandate.EventMandateDelegated:
			if ev.Parent != root.Claims.ID || !want[ev.Mandate] {
				t.Errorf("delegation %s under %s is not one that was returned", ev.Mandate, ev.Parent)
			}
			delete(want, ev.Mandate)
			children++
			rec, err := f.store.Issuance(context.Background(), ev.Mandate)
			if err != nil || rec.ParentID != root.Claims.ID {
				t.Errorf("issuance record of %s: %+v %v", ev.Mandate, rec, err)
			}
		}
	}
	if children != n || len(want) != 0 {
		t.Errorf("%d delegations in the log, %d returned but missing", children, len(want))
	}
}

// TestEphemeralAgentsStayBounded: 100,000 ephemeral sub-agents created
// over (simulated) time do not pile up: once their mandates expire they
// leave the live set, and the issuance records are pruned; memory stays
// flat. Their story stays in the audit log.
func TestEphemeralAgentsStayBounded(t *testing.T) {
	total := 100_000
	if testing.Short() || raceEnabled {
		total = 10_000
	}
	f := newFixture(t)
	ctx := context.Background()
	root := f.root("mcp:crm:*", time.Hour, false)
	var ms runtime.MemStats
	heap := func() uint64 { runtime.GC(); runtime.ReadMemStats(&ms); return ms.HeapAlloc }
	var base uint64
	maxLive := 0
	const perSecond = 500 // delegations per simulated second, each living 1 s
	var wg sync.WaitGroup
	for i := 0; i < total; i += perSecond {
		if i == 20*perSecond {
			base = heap()
		}
		for range perSecond {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := f.delegate(root, f.key, newKey(t), "", func(r *issuer.DelegateRequest) { r.TTL = time.Second }); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		f.clk.Advance(time.Second)
		maxLive = max(maxLive, f.is.LiveEphemeral())
		if i/perSecond%60 == 59 {
			if _, err := f.store.PruneMandates(ctx, f.clk.Now().Add(-10*time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if t.Failed() {
		return
	}
	// Two seconds' worth at most: the last second's and the one before the sweep.
	if maxLive > 2*perSecond+1 {
		t.Errorf("live ephemeral agents reached %d, want at most %d", maxLive, 2*perSecond+1)
	}
	if _, err := f.store.PruneMandates(ctx, f.clk.Now().Add(-10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Issuances are their events in the audit log, not rows: the store
	// keeps nothing per mandate beyond revocations, which pruning drops,
	// and the query index's in-memory table, which it writes out as runs.
	if st := f.store.IndexStats(); st.InMemory > evindex.DefaultFlushEntries*2 {
		t.Errorf("the index holds %d entries in memory", st.InMemory)
	}
	if grew := int64(heap()) - int64(base); grew > 32<<20 {
		t.Errorf("heap grew by %d MiB over %d delegations", grew>>20, total)
	}
	if n := f.events(mandate.EventMandateDelegated); n < min(total, mandate.MaxEventsPerQuery) {
		t.Errorf("the audit log lost delegations: %d events", n)
	}
}
