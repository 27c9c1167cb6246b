package httpapi_test

import (
	"crypto/ed25519"
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

	"github.com/mandatehq/mandate/dpop"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
)

// BenchmarkHTTPMint is root mints over HTTP on loopback: 1 or 16 concurrent
// clients per core, with keep-alive, the server with SQLite and group commit, both in
// this process on this machine's cores:
//
//	go test -run '^$' -bench HTTPMint -benchtime 20000x ./httpapi/
//
// It reports throughput and the p50/p99 latency seen by the clients.
func BenchmarkHTTPMint(b *testing.B) {
	for _, bc := range []struct {
		mode string
		par  int
	}{{"bearer", 1}, {"bearer", 16}, {"dpop", 1}, {"dpop", 16}} {
		mode := bc.mode
		b.Run(fmt.Sprintf("%s/clients=%dxGOMAXPROCS", mode, bc.par), func(b *testing.B) {
			ts := newServer(b)
			key := ts.addAgent(b, "bench", "mcp:crm:*")
			tokenURL := ts.URL + "/oauth2/token"
			// Assertions and proofs are single-use: make them before timing.
			now := time.Now()
			bodies := make([]string, b.N)
			proofs := make([]string, b.N)
			for i := range bodies {
				bodies[i] = url.Values{
					"grant_type":            {"client_credentials"},
					"client_assertion_type": {issuer.ClientAssertionType},
					"client_assertion":      {httpapi.ClientAssertion(key, "spiffe://example.org/agent/bench", ts.URL, now)},
					"scope":                 {"mcp:crm:list_customers"},
					"ttl_ms":                {"30"},
				}.Encode()
				if mode == "dpop" {
					proofs[i] = dpop.NewProofMillis(ed25519.PrivateKey(key), "POST", tokenURL, "", now)
				}
			}
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, MaxConnsPerHost: 64}}
			var next atomic.Int64
			var mu sync.Mutex
			var lat []time.Duration
			b.SetParallelism(bc.par)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					i := next.Add(1) - 1
					req, _ := http.NewRequest("POST", tokenURL, strings.NewReader(bodies[i]))
					req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
					if mode == "dpop" {
						req.Header.Set("DPoP", proofs[i])
					}
					start := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					mine = append(mine, time.Since(start))
					if resp.StatusCode != 200 {
						b.Errorf("HTTP %d", resp.StatusCode)
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
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "mints/s")
			b.ReportMetric(pct(0.50), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
		})
	}
}
