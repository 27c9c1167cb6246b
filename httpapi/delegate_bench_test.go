package httpapi_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
)

// BenchmarkHTTPDelegate is token exchanges over HTTP on loopback: a root
// mandate delegated to a new ephemeral sub-agent per request, 1 or 16
// concurrent clients per core, keep-alive, the server with SQLite and
// group commit, all in this process on this machine's cores:
//
//	go test -run '^$' -bench HTTPDelegate -benchtime 20000x ./httpapi/
//
// It reports throughput and the p50/p99 latency seen by the clients.
func BenchmarkHTTPDelegate(b *testing.B) {
	for _, par := range []int{1, 16} {
		b.Run(fmt.Sprintf("clients=%dxGOMAXPROCS", par), func(b *testing.B) {
			ts := newServer(b)
			key := ts.addAgent(b, "bench", "mcp:crm:*")
			tokenURL := ts.URL + "/oauth2/token"
			now := time.Now()
			root := mintRoot(b, ts.URL, key, "spiffe://example.org/agent/bench", now)
			// Actor tokens are single-use, each of a new ephemeral agent:
			// make them before timing.
			bodies := make([]string, b.N)
			for i := range bodies {
				_, k, _ := ed25519.GenerateKey(rand.Reader)
				jwk := jose.NewPublicJWK(k.Public().(ed25519.PublicKey))
				c, _ := json.Marshal(map[string]any{"aud": ts.URL, "exp": now.Add(4 * time.Minute).Unix(), "jti": fmt.Sprintf("a-%d", i),
					"par": jtiOf(root)})
				bodies[i] = url.Values{
					"grant_type":         {issuer.GrantTypeTokenExchange},
					"subject_token":      {root},
					"subject_token_type": {issuer.TokenTypeJWT},
					"actor_token":        {jose.Sign(k, jose.Header{Typ: mandate.TypActorToken, JWK: &jwk}, c)},
					"actor_token_type":   {issuer.TokenTypeJWT},
					"scope":              {"mcp:crm:get_customer"},
					"ttl_ms":             {"30"},
				}.Encode()
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
			var next atomic.Int64
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					i := next.Add(1) - 1
					req, _ := http.NewRequest("POST", tokenURL, strings.NewReader(bodies[i]))
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					start := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					mine = append(mine, time.Since(start))
					if resp.StatusCode != 200 {
						b.Errorf("HTTP %d: %s", resp.StatusCode, body)
						return
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			b.StopTimer()
			slices.Sort(lat)
			pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "delegations/s")
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
		})
	}
}

// mintRoot gets a root mandate over HTTP, valid for an hour.
func mintRoot(b *testing.B, base string, key ed25519.PrivateKey, agent string, now time.Time) string {
	b.Helper()
	tokenURL := base + "/oauth2/token"
	resp, err := http.PostForm(tokenURL, url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {issuer.ClientAssertionType},
		"client_assertion":      {httpapi.ClientAssertion(key, agent, base, now)},
		"scope":                 {"mcp:crm:*"},
		"ttl_ms":                {"3600000"},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var tr httpapi.TokenResponse
	if err := json.NewDecoder(resp.Body).Decode(&tr); err != nil || tr.AccessToken == "" {
		b.Fatalf("root mandate: HTTP %d %v", resp.StatusCode, err)
	}
	return tr.AccessToken
}
