package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mandatehq/mandate/httpapi"
)

// recorder keeps every response a client reads, headers and body, so that
// a test can look for what must never be in one.
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (rec *recorder) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	rec.mu.Lock()
	defer rec.mu.Unlock()
	resp.Header.Write(&rec.buf)
	rec.buf.Write(b)
	rec.buf.WriteByte('\n')
	return resp, nil
}

func (rec *recorder) String() string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.buf.String()
}

// breakTable renames a table of the server's database under it, through a
// connection of the test's own: the server's next query of it fails with
// SQLite's own text ("no such table: …"), as a damaged database would.
func breakTable(t *testing.T, m *Main, table string) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(m.DataDir, "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("ALTER TABLE " + table + " RENAME TO " + table + "_moved_by_test"); err != nil {
		t.Fatal(err)
	}
}

// dataHolding returns the files under dir that hold s.
func dataHolding(t *testing.T, dir, s string) []string {
	t.Helper()
	var found []string
	filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, "mandate.db") || strings.Contains(path, "mandate.db-") {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(s)) {
			found = append(found, path)
		}
		return nil
	})
	return found
}

// When the store fails, a caller is told it is unavailable and nothing of
// why: SQLite's text reaches the server's log, and neither an OAuth
// answer, nor an admin API answer, nor the audit log (which the public
// may read with --public-audit).
func TestInternalErrorsNeverReachCallers(t *testing.T) {
	ctx := context.Background()
	var logs strings.Builder
	logw := &lockedWriter{w: &logs}
	m, _ := serveWith(t, listServer(), false, nil, func(m *Main) { m.Stdout, m.Stderr = logw, logw })
	rec := &recorder{}
	admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken, HTTP: &http.Client{Transport: rec, Timeout: 30 * time.Second}}
	breakTable(t, m, "agents")
	const cause = "no such table"

	_, ghost, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := admin.Token(ctx, httpapi.TokenRequest{AgentID: "spiffe://example.org/agent/ghost", Key: ghost, Scope: "mcp:crm:list"}); err == nil {
		t.Fatal("a token for an agent the store cannot look up")
	}
	if _, err := admin.Agents(ctx); err == nil {
		t.Fatal("the agents listed from a broken store")
	}
	if _, err := admin.Agent(ctx, "nobody"); err == nil {
		t.Fatal("an agent read from a broken store")
	}
	got := rec.String()
	if strings.Contains(got, cause) || strings.Contains(got, "SQL") {
		t.Errorf("a cause reached a caller:\n%s", got)
	}
	if !strings.Contains(got, "temporarily_unavailable") || !strings.Contains(got, `"error":"unavailable"`) {
		t.Errorf("the answers do not say the server is unavailable:\n%s", got)
	}
	if !strings.Contains(logw.String(), cause) {
		t.Errorf("the cause is not in the server's log:\n%s", logw.String())
	}
	m.Gateway.Drain()
	if f := dataHolding(t, m.DataDir, cause); len(f) > 0 {
		t.Errorf("the cause is in the audit log's files: %v", f)
	}
}
