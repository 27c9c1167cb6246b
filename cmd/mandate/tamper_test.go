package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditcheck"
	"github.com/mandatehq/mandate/httpapi"
)

// An insider with write access to the data directory edits the log's
// entries file behind the server's back. The server, restarted, recomputes
// the newest hash tiles from the entries and refuses to start on a log
// that no longer matches its last checkpoint, or that lost bytes, saying
// why; where it does start (tampering older than its newest tiles, which
// it reads as stored), `audit verify` against it names the tampering.
func TestInsiderTamperingInTheLogFiles(t *testing.T) {
	// entry returns the byte range of entry i in the entries file.
	entry := func(b []byte, i int) (int, int) {
		pos := 0
		for ; i > 0; i-- {
			pos += 2 + int(binary.BigEndian.Uint16(b[pos:]))
		}
		return pos, pos + 2 + int(binary.BigEndian.Uint16(b[pos:]))
	}
	for _, tc := range []struct {
		name   string
		tamper func(b []byte) []byte
		want   string
		more   int // events appended before the checkpoint, to fill tiles
	}{
		{"modified entry of a full tile", func(b []byte) []byte {
			from, to := entry(b, 2)
			copy(b[from:to], bytes.Replace(b[from:to], []byte("alice@"), []byte("malice"), 1))
			return b
		}, "entry 2", 300},
		{"modified entry", func(b []byte) []byte {
			from, to := entry(b, 2)
			copy(b[from:to], bytes.Replace(b[from:to], []byte("alice@"), []byte("malice"), 1))
			return b
		}, "the log's first 7 entries do not hash to the root its last checkpoint", 0},
		{"deleted entry", func(b []byte) []byte {
			from, to := entry(b, 3)
			return append(b[:from:from], b[to:]...)
		}, "the log was truncated", 0},
		{"deleted last entries", func(b []byte) []byte {
			from, _ := entry(b, 4)
			return b[:from]
		}, "the log was truncated", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx := context.Background()
			m := startMain(t, dir)
			admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
			key := addAgent(t, admin, "a")
			for range 4 {
				if _, err := admin.Token(ctx, httpapi.TokenRequest{AgentID: "spiffe://example.org/agent/a", Key: key, Scope: "mcp:crm:x"}); err != nil {
					t.Fatal(err)
				}
			}
			var evs []*mandate.Event
			for i := range tc.more {
				evs = append(evs, &mandate.Event{V: 1, Time: time.Now().UnixNano(), Type: mandate.EventDecision, Task: fmt.Sprintf("t_%d", i)})
			}
			if err := m.Store.Append(ctx, evs...); err != nil {
				t.Fatal(err)
			}
			// key.rotated and policy.loaded at start, agent.registered, 4 × mandate.issued
			if _, err := admin.PublishCheckpoint(ctx); err != nil { // cover all 7 entries
				t.Fatal(err)
			}
			state := filepath.Join(t.TempDir(), "state.json")
			verify := func(m *Main) *auditcheck.Report {
				src := auditcheck.HTTPSource(m.URL+"/audit", &http.Client{Timeout: time.Minute, Transport: httpapi.AuthTransport{Token: m.AdminToken}})
				r, err := auditcheck.Verify(ctx, src, auditcheck.Options{State: state, VerifierKey: m.LogKey.VKey})
				if err != nil {
					return &auditcheck.Report{Problems: []string{err.Error()}}
				}
				return r
			}
			if r := verify(m); !r.OK() || r.Size != uint64(7+tc.more) {
				t.Fatalf("honest log:\n%s", r)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}

			path := filepath.Join(dir, "mandate-log", "entries")
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tampered := tc.tamper(bytes.Clone(b))
			if bytes.Equal(tampered, b) {
				t.Fatal("the tampering changed nothing")
			}
			if err := os.WriteFile(path, tampered, 0o600); err != nil {
				t.Fatal(err)
			}

			m2 := NewMain()
			m2.Addr, m2.DataDir = "127.0.0.1:0", dir
			m2.Stdout, m2.Stderr = testWriter{t}, testWriter{t}
			if err := m2.Open(ctx); err != nil {
				// The server itself refuses a log that is shorter than, or
				// differs from, its last checkpoint.
				if !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("restart: %v", err)
				}
				return
			}
			defer m2.Close()
			r := verify(m2)
			if r.OK() {
				t.Fatalf("tampered log verified:\n%s", r)
			}
			if !strings.Contains(r.String(), tc.want) {
				t.Errorf("the report does not name %q:\n%s", tc.want, r)
			}
		})
	}
}
