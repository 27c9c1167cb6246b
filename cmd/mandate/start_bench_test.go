package main

import (
	"bytes"
	"context"
	"encoding/json"
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
func BenchmarkStartAfterBurst(b *testing.B) { benchmarkStart(b, writeBurst) }

// BenchmarkStartAfterMixedBurst is BenchmarkStartAfterBurst after a burst
// of the traffic of a gateway: of every ten events, a task's root
// issuance, then three tool calls, each a decision (allowed), its
// tool.call and its tool.result. The calls are what the gateway's task
// state and the monitor restore: the start reads them.
func BenchmarkStartAfterMixedBurst(b *testing.B) { benchmarkStart(b, writeMixedBurst) }

func benchmarkStart(b *testing.B, write func(testing.TB, string, func() time.Time, int)) {
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
	write(b, filepath.Join(dir, "mandate.db"), clock, n)
	b.Logf("%d events written in %v", n, time.Since(t0).Round(time.Millisecond))
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
			b.Logf("snapshot=%v: Open %v (replay set %v, restoreState %v); replay set: %d from the snapshot, %d issuance events read, %d from the log; restoreState: %+v",
				snapshot, d.Round(time.Millisecond), r.took.Round(time.Millisecond), st, r.fromSnapshot, r.events, r.fromLog, m.stateRestored)
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

// writeMixedBurst appends n events to the store at path, 256 writers at a
// time, spread evenly over the 7 minutes before clock(): of every ten, a
// root issuance of a task of its own (a 5-minute mandate), then three
// calls of it through the gateway, each an allowed decision, a tool.call
// of a labelled tool and its tool.result, as the gateway writes them.
func writeMixedBurst(b testing.TB, path string, clock func() time.Time, n int) {
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, Now: clock})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const perTask = 10
	end := clock()
	begin := end.Add(-7 * time.Minute)
	tasks := n / perTask
	step := 7 * time.Minute / time.Duration(max(tasks, 1))
	agent := "spiffe://example.org/agent/burst"
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 256 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(tasks) {
					return
				}
				iat := begin.Add(time.Duration(i) * step)
				id := mandate.NewID(mandate.MandateIDPrefix, iat)
				rec := &mandate.Issuance{MandateID: id, TaskID: mandate.NewID(mandate.TaskIDPrefix, iat),
					AgentID: agent, Subject: "user:alice@example.org", Scope: "mcp:crm:*",
					Audience: []string{"mcp:crm"}, KeyID: "k", IssuedAt: iat, ExpiresAt: iat.Add(5 * time.Minute),
					AssertionID: fmt.Sprintf("jti-%d", i), AssertionExpiry: iat.Add(time.Minute)}
				if err := s.RecordIssuance(context.Background(), rec, mandate.NewIssuanceEvent(rec, iat)); err != nil {
					b.Error(err)
					return
				}
				for c := range (perTask - 1) / 3 {
					at := iat.Add(time.Duration(c+1) * time.Millisecond).UnixNano()
					base := mandate.Event{V: mandate.EventVersion, Time: at, Task: rec.TaskID, Mandate: id, Agent: agent,
						Chain: []string{agent}, Subject: rec.Subject, Action: "tools/call", Resource: "mcp:crm:list_customers"}
					dec, call, res := base, base, base
					dec.Type, dec.Outcome = mandate.EventDecision, mandate.OutcomeOK
					dec.Details = map[string]any{"policies": []string{"call-tools"}, "tool_labels": []string{"data:confidential"}}
					call.Type, call.Outcome = mandate.EventToolCall, mandate.OutcomeOK
					call.Details = map[string]any{"args_bytes": json.Number("2"), "tool_labels": []string{"data:confidential"}}
					res.Type, res.Outcome = mandate.EventToolResult, mandate.OutcomeOK
					res.Details = map[string]any{"result_bytes": json.Number("64"), "duration_ms": json.Number("3")}
					if err := s.Append(context.Background(), &dec, &call, &res); err != nil {
						b.Error(err)
						return
					}
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
