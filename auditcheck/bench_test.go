package auditcheck_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mandatehq/mandate/auditcheck"
)

// BenchmarkVerify1M verifies a log of 1,000,000 events of the sizes and
// mix a real server writes (realisticEvent: ~740 bytes on average), every
// signature, hash, tile and event, from a directory and over HTTP (a
// file server over the same directory, on loopback), as "mandate audit
// verify DIR" and "--url" do; with -cpu 1,2, one core against two:
//
//	go test -run '^$' -bench Verify1M -benchtime 1x -cpu 1,2 ./auditcheck/
//
// docs/benchmarks.md has the figures, and those against a real server.
func BenchmarkVerify1M(b *testing.B) {
	const n = 1_000_000
	dir := b.TempDir()
	key := newKey(b, origin)
	start := time.Now()
	w := newLogWriter(b, dir)
	var size int64
	for i := range n {
		e := realisticEntry(b, i, 1)
		size += int64(len(e))
		w.add(e)
	}
	w.publish(key)
	w = nil
	b.Logf("wrote %d entries (%.0f bytes on average) in %v", n, float64(size)/n, time.Since(start).Round(time.Millisecond))
	srv := httptest.NewServer(http.StripPrefix("/audit/", http.FileServer(http.Dir(dir))))
	defer srv.Close()

	for _, src := range []struct {
		name string
		src  auditcheck.Source
	}{{"dir", auditcheck.DirSource(dir)}, {"http", auditcheck.HTTPSource(srv.URL+"/audit", nil)}} {
		b.Run(src.name, func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				rep, err := auditcheck.Verify(context.Background(), src.src, auditcheck.Options{VerifierKey: key.vkey})
				if err != nil {
					b.Fatal(err)
				}
				if !rep.OK() || rep.Entries != n {
					b.Fatalf("report:\n%s", rep)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/verify")
			b.ReportMetric(float64(b.N)*n/b.Elapsed().Seconds(), "events/s")
		})
	}
}
