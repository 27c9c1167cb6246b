package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/sqlite"
)

// BenchmarkStartAfterBurst is the wall time of Main.Open on a data
// directory whose log ends with a burst of root-mandate issuances
// (MANDATE_BURST, default 1,000,000) spread over the last 7 minutes, each
// with a client assertion that lives a minute: the last minute's are live
// and must be refused after the start. Starts with the replay snapshot
// (written by the previous Close) and without it (removed, so the replay
// set is read from the log as before the snapshot existed) alternate, on
// one directory and one fixed clock, so that both see the same log:
//
//	go test -run '^$' -bench StartAfterBurst -benchtime 3x ./cmd/mandate/
//
// It reports each start's seconds, the part of it spent restoring the
// replay set, and the part spent rebuilding the gateway's and the
// monitor's state from the last hour (restoreState).
func BenchmarkStartAfterBurst(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("MANDATE_BURST"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	now := time.Now().Truncate(time.Second)
	clock := func() time.Time { return now }
	open := func() (*Main, string) {
		b.Helper()
		var logs bytes.Buffer
		m := NewMain()
		m.Addr, m.DataDir, m.IssuerURL, m.Now = "127.0.0.1:0", dir, "http://mandate.test", clock
		m.Stdout, m.Stderr = discardWriter{}, &syncWriter{w: &logs}
		if err := m.Open(context.Background()); err != nil {
			b.Fatal(err)
		}
		return m, logs.String()
	}
	m, _ := open()
	admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
	addAgent(b, admin, "burst")
	if err := m.Close(); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	writeBurst(b, filepath.Join(dir, "mandate.db"), clock, n)
	b.Logf("%d issuances written in %v", n, time.Since(t0).Round(time.Millisecond))
	m, _ = open() // reads the burst from the log and writes the first snapshot at Close
	if err := m.Close(); err != nil {
		b.Fatal(err)
	}

	took := regexp.MustCompile(`msg="task state rebuilt from the audit log" events=(\d+) .*took=(\S+)`)
	var sum [2]time.Duration
	var state, replayTook [2]time.Duration
	runs := 0
	for b.Loop() {
		for i, snapshot := range []bool{false, true} {
			if !snapshot {
				os.Remove(filepath.Join(dir, replaySnapshotFile))
			}
			t := time.Now()
			m, logs := open()
			d := time.Since(t)
			sum[i] += d
			r := m.replayRestored
			var st time.Duration
			if g := took.FindStringSubmatch(logs); g != nil {
				st, _ = time.ParseDuration(g[2])
				state[i] += st
			}
			replayTook[i] += r.took
			b.Logf("snapshot=%v: Open %v (replay set %v, restoreState %v); replay set: %d from the snapshot, %d issuance events read, %d from the log",
				snapshot, d.Round(time.Millisecond), r.took.Round(time.Millisecond), st, r.fromSnapshot, r.events, r.fromLog)
			if err := m.Close(); err != nil {
				b.Fatal(err)
			}
		}
		runs++
	}
	b.ReportMetric(sum[0].Seconds()/float64(runs), "s/start-no-snapshot")
	b.ReportMetric(sum[1].Seconds()/float64(runs), "s/start-snapshot")
	b.ReportMetric(replayTook[0].Seconds()/float64(runs), "s/replay-no-snapshot")
	b.ReportMetric(replayTook[1].Seconds()/float64(runs), "s/replay-snapshot")
	b.ReportMetric(state[1].Seconds()/float64(runs), "s/restoreState")
	b.ReportMetric(0, "ns/op")
}

// writeBurst appends n root-mandate issuances of the agent burst to the
// store at path, 256 writers at a time (group commit), spread evenly over
// the 7 minutes before clock(); each one's client assertion lives a
// minute.
func writeBurst(b testing.TB, path string, clock func() time.Time, n int) {
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, Now: clock})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	end := clock()
	begin := end.Add(-7 * time.Minute)
	step := 7 * time.Minute / time.Duration(n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 256 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				iat := begin.Add(time.Duration(i) * step)
				id := mandate.NewID(mandate.MandateIDPrefix, iat)
				rec := &mandate.Issuance{MandateID: id, TaskID: mandate.NewID(mandate.TaskIDPrefix, iat),
					AgentID: "spiffe://example.org/agent/burst", Subject: "user:alice@example.org", Scope: "mcp:crm:list",
					Audience: []string{"mcp:crm"}, KeyID: "k", IssuedAt: iat, ExpiresAt: iat.Add(5 * time.Minute),
					AssertionID: fmt.Sprintf("jti-%d", i), AssertionExpiry: iat.Add(time.Minute)}
				if err := s.RecordIssuance(context.Background(), rec, mandate.NewIssuanceEvent(rec, iat)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// syncWriter serializes writes to w: the server logs from many goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
