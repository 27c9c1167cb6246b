package sqlite_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/sqlite"
)

// BenchmarkRecordIssuance is the durable write-ahead record of one root
// mandate and its audit event (a mandate row, a log entry and its tree
// hashes), group-committed, with 64 concurrent writers:
//
//	go test -run '^$' -bench RecordIssuance -cpu 1 ./sqlite/
func BenchmarkRecordIssuance(b *testing.B) {
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(b.TempDir(), "m.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	var n atomic.Int64
	b.SetParallelism(64)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			rec := &mandate.Issuance{
				MandateID: fmt.Sprintf("m_01JD%022d", i), TaskID: fmt.Sprintf("t_01JD%022d", i),
				AgentID: "spiffe://example.org/agent/researcher", Subject: "user:alice@example.org",
				Scope: "mcp:crm:list_customers", Audience: []string{"mcp:crm"}, KeyID: "Y1i0rIhLJvme9_HoE3vMnHkYb9MQGBnNgsZbs3ZeCgU",
				JKT: "iBa3vb8d75OcBlDIAOzPjroP3LJmkMVfThCqqihw7d0", IssuedAt: now, ExpiresAt: now.Add(time.Minute),
				TaskPurpose: "weekly report", AssertionID: uuid(), AssertionExpiry: time.Now().Add(time.Minute),
			}
			err := s.RecordIssuance(context.Background(), rec, issuedEvent(rec))
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := s.Stats()
	b.ReportMetric(float64(st.Writes)/float64(st.Commits), "writes/tx")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// uuid is a random jti, as clients make them.
func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// issuedEvent is the audit event of an issuance, as the issuer makes it.
func issuedEvent(rec *mandate.Issuance) *mandate.Event {
	return &mandate.Event{V: mandate.EventVersion, Time: rec.IssuedAt.UnixNano(), Type: mandate.EventMandateIssued,
		Task: rec.TaskID, Mandate: rec.MandateID, Agent: rec.AgentID, Chain: []string{rec.AgentID}, Subject: rec.Subject,
		Action: "mint", Resource: "mcp:crm", Outcome: mandate.OutcomeOK,
		Details: map[string]any{"scope": rec.Scope, "aud": rec.Audience, "exp_ms": rec.ExpiresAt.UnixMilli(), "kid": rec.KeyID, "jkt": rec.JKT, "purpose": rec.TaskPurpose}}
}

// BenchmarkAppend is durable audit appends with group commit: concurrent
// writers (64 or 256 per core), each appending one decision-sized event at
// a time and waiting until it is durable, on all of this machine's cores:
//
//	go test -run '^$' -bench Append -benchtime 3s ./sqlite/
//
// It reports events/s and the p99 latency of one append.
func BenchmarkAppend(b *testing.B) {
	for _, par := range []int{64, 256} {
		b.Run(fmt.Sprintf("writers=%dxGOMAXPROCS", par), func(b *testing.B) { benchmarkAppend(b, par) })
	}
}

func benchmarkAppend(b *testing.B, par int) {
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(b.TempDir(), "m.db")})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var n atomic.Int64
	var mu sync.Mutex
	var lat []time.Duration
	b.SetParallelism(par)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			i := n.Add(1)
			ev := &mandate.Event{V: mandate.EventVersion, Time: time.Now().UnixNano(), Type: mandate.EventDecision,
				Task: fmt.Sprintf("t_01JD%022d", i/10), Mandate: fmt.Sprintf("m_01JD%022d", i), Agent: "spiffe://example.org/agent/researcher",
				Chain: []string{"spiffe://example.org/agent/researcher", "spiffe://example.org/agent/orchestrator"}, Subject: "user:alice@example.org",
				Action: "tools/call", Resource: "mcp:crm:list_customers", Outcome: mandate.OutcomeOK, Reason: "permitted by policy p1",
				Details: map[string]any{"policies": []string{"p1"}, "policy_hash": "7d865e959b2466918c9863afca942d0fb89d7c9ac0c99bafc3749504ded97730"}}
			start := time.Now()
			if err := s.Append(context.Background(), ev); err != nil {
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
	st := s.Stats()
	b.ReportMetric(float64(st.Writes)/float64(st.Commits), "writes/tx")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
