package auditcheck_test

import (
	"context"
	"testing"
	"time"

	"github.com/mandatehq/mandate/auditcheck"
)

// BenchmarkVerify1M verifies a log of 1,000,000 realistic events (~200
// bytes each) from a directory: every signature, hash, tile and event.
//
//	go test -run '^$' -bench Verify1M -cpu 1,2 ./auditcheck/
func BenchmarkVerify1M(b *testing.B) {
	const n = 1_000_000
	dir := b.TempDir()
	key := newKey(b, origin)
	start := time.Now()
	w := newLogWriter(b, dir)
	var size int64
	for i := range n {
		e := eventAt(b, i, "")
		size += int64(len(e))
		w.add(e)
	}
	w.publish(key)
	w = nil
	b.Logf("wrote %d entries (%.0f bytes on average) in %v", n, float64(size)/n, time.Since(start).Round(time.Millisecond))

	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		rep, err := auditcheck.Verify(context.Background(), auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
		if err != nil {
			b.Fatal(err)
		}
		if !rep.OK() || rep.Entries != n {
			b.Fatalf("report:\n%s", rep)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/verify")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/entry")
}
