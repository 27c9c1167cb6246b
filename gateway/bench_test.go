package gateway_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate/dpop"
	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// BenchmarkGatewayLatency is the latency the gateway adds to a tools/call,
// under a steady load of 1,000 calls/s, against the same call made to the
// upstream directly and through a bare httputil.ReverseProxy, all in the
// same run. The upstream is the official Go SDK's Streamable HTTP server
// (JSON answers); each worker is an MCP client with its own session. The
// gateway verifies the mandate (and the
// DPoP proof), decides with the default policy set and records the call
// write-ahead in SQLite (group-committed, fsynced) before forwarding:
//
//	go test -run '^$' -bench GatewayLatency -benchtime 1x ./gateway/
//
// Each case makes 3,000 calls paced at 1 ms from 8 workers; p50 and p99
// are of the call's round trip, added-p50/p99 the same minus the direct
// case's. BenchmarkGatewaySaturation reports throughput unpaced.
func BenchmarkGatewayLatency(b *testing.B) {
	e := newEnvWith(b, &mcp.StreamableHTTPOptions{JSONResponse: true})
	key := e.agent("bench", "mcp:crm:*")
	bearer := e.mint("bench", key, "mcp:crm:list_customers", time.Hour, false)
	bound := e.mint("bench", key, "mcp:crm:list_customers", time.Hour, true)
	up, _ := url.Parse(e.upstream.URL)
	proxy := httptest.NewServer(httputil.NewSingleHostReverseProxy(up))
	defer proxy.Close()
	gwURL := e.gw.URL + "/mcp/crm"
	cases := []struct {
		name string
		url  string
		auth func(*http.Request)
	}{
		{"direct", e.upstream.URL, nil},
		{"reverseproxy", proxy.URL, nil},
		{"gateway-bearer", gwURL, func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+bearer.AccessToken) }},
		{"gateway-dpop", gwURL, func(r *http.Request) {
			r.Header.Set("Authorization", "DPoP "+bound.AccessToken)
			r.Header.Set("DPoP", dpop.NewProofMillis(key, "POST", gwURL, bound.AccessToken, time.Now()))
		}},
	}
	var base []time.Duration
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			lat := paced(b, c.url, c.auth, 3000, time.Millisecond, 8)
			b.ReportMetric(ms(pct(lat, 0.50)), "p50-ms")
			b.ReportMetric(ms(pct(lat, 0.99)), "p99-ms")
			if c.name == "direct" {
				base = lat
			}
			if c.name == "direct" || base == nil {
				return
			}
			b.ReportMetric(ms(pct(lat, 0.50)-pct(base, 0.50)), "added-p50-ms")
			b.ReportMetric(ms(pct(lat, 0.99)-pct(base, 0.99)), "added-p99-ms")
		})
	}
}

// BenchmarkGatewaySaturation is calls per second through the gateway
// (bearer) and, in the same run, directly, with 16 workers unpaced (one
// agent holds at most 16 sessions):
//
//	go test -run '^$' -bench GatewaySaturation -benchtime 5000x ./gateway/
func BenchmarkGatewaySaturation(b *testing.B) {
	e := newEnvWith(b, &mcp.StreamableHTTPOptions{JSONResponse: true})
	key := e.agent("bench", "mcp:crm:*")
	tok := e.mint("bench", key, "mcp:crm:list_customers", time.Hour, false)
	for _, c := range []struct {
		name string
		url  string
		auth func(*http.Request)
	}{
		{"direct", e.upstream.URL, nil},
		{"gateway-bearer", e.gw.URL + "/mcp/crm", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok.AccessToken) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			start := time.Now()
			lat := paced(b, c.url, c.auth, b.N, 0, 16) // an agent holds 16 sessions at most
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "calls/s")
			b.ReportMetric(ms(pct(lat, 0.99)), "p99-ms")
		})
	}
}

const callBody = `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_customers","arguments":{"name":"a"}}}`

// paced makes n tools/calls from workers goroutines, one every interval
// overall (unpaced if 0), and returns their round-trip times, sorted.
func paced(b *testing.B, u string, auth func(*http.Request), n int, interval time.Duration, workers int) []time.Duration {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	jobs := make(chan struct{})
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			send := func(body, session string) (*http.Response, error) {
				req, _ := http.NewRequest("POST", u, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Accept", "application/json, text/event-stream")
				if session != "" {
					req.Header.Set("Mcp-Session-Id", session)
				}
				if auth != nil {
					auth(req)
				}
				return client.Do(req)
			}
			// Each worker is one MCP client with its session, as agents are.
			resp, err := send(initialize, "")
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			session := resp.Header.Get("Mcp-Session-Id")
			if resp, err := send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`, session); err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			defer func() { // end the session, as a client does
				req, _ := http.NewRequest("DELETE", u, nil)
				req.Header.Set("Mcp-Session-Id", session)
				if auth != nil {
					auth(req)
				}
				if resp, err := client.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			failed := false
			for range jobs { // a failed worker keeps taking jobs, so that the pacer never blocks
				if failed {
					continue
				}
				start := time.Now()
				resp, err := send(callBody, session)
				if err != nil {
					b.Error(err)
					failed = true
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				d := time.Since(start)
				if resp.StatusCode != 200 || !strings.Contains(string(body), "ada, grace") {
					b.Errorf("%s: %d %s", u, resp.StatusCode, body)
					failed = true
					continue
				}
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}
		}()
	}
	b.ResetTimer()
	next := time.Now()
	for range n {
		if interval > 0 {
			next = next.Add(interval)
			time.Sleep(time.Until(next))
		}
		jobs <- struct{}{}
	}
	close(jobs)
	wg.Wait()
	b.StopTimer()
	if len(lat) == 0 {
		b.Fatal("no call succeeded")
	}
	slices.Sort(lat)
	return lat
}

func pct(lat []time.Duration, p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
