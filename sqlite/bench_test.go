package sqlite_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/sqlite"
)

// BenchmarkRecordIssuance is the durable write-ahead record of one root
// mandate (a task and a mandate row), group-committed, with 64 concurrent
// writers:
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
			err := s.RecordIssuance(context.Background(), &mandate.Issuance{
				MandateID: fmt.Sprintf("m_01JD%022d", i), TaskID: fmt.Sprintf("t_01JD%022d", i),
				AgentID: "spiffe://example.org/agent/researcher", Subject: "user:alice@example.org",
				Scope: "mcp:crm:list_customers", Audience: []string{"mcp:crm"}, KeyID: "Y1i0rIhLJvme9_HoE3vMnHkYb9MQGBnNgsZbs3ZeCgU",
				JKT: "iBa3vb8d75OcBlDIAOzPjroP3LJmkMVfThCqqihw7d0", IssuedAt: now, ExpiresAt: now.Add(time.Minute),
				TaskPurpose: "weekly report", AssertionID: uuid(), AssertionExpiry: time.Now().Add(time.Minute),
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	st := s.Stats()
	b.ReportMetric(float64(st.Writes)/float64(st.Commits), "writes/fsync")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// uuid is a random jti, as clients make them.
func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
