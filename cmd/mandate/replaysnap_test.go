package main

import (
	"context"
	"crypto/ed25519"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
)

// The replay set survives restarts through its snapshot and the log: an
// assertion used before a restart is refused after it, whether the
// snapshot covers it, the log after the snapshot does, or the snapshot is
// damaged and the log is read as before. With a good snapshot the start
// reads only the issuance events after it (a counter, not a clock).
func TestReplaySnapshotAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	const issuerURL = "http://mandate.test"
	const agentID = "spiffe://example.org/agent/a"
	start := func() *Main {
		t.Helper()
		m := NewMain()
		m.Addr, m.DataDir, m.IssuerURL = "127.0.0.1:0", dir, issuerURL
		m.Stdout, m.Stderr = testWriter{t}, testWriter{t}
		if err := m.Open(context.Background()); err != nil {
			t.Fatal(err)
		}
		return m
	}
	mint := func(m *Main, assertion string) (int, string) {
		t.Helper()
		resp, err := http.PostForm(m.URL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"mcp:crm:x"},
			"client_assertion_type": {issuer.ClientAssertionType}, "client_assertion": {assertion}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var key ed25519.PrivateKey
	mintMany := func(m *Main, n int) []string {
		t.Helper()
		var used []string
		for range n {
			a := httpapi.ClientAssertion(key, agentID, issuerURL, time.Now())
			if code, body := mint(m, a); code != 200 {
				t.Fatalf("mint: HTTP %d %s", code, body)
			}
			used = append(used, a)
		}
		return used
	}
	refused := func(m *Main, what string, assertions []string) {
		t.Helper()
		for _, a := range assertions {
			if code, body := mint(m, a); code != 401 || !strings.Contains(body, "replay") {
				t.Fatalf("%s: an assertion used before the restart, replayed: HTTP %d %s", what, code, body)
			}
		}
	}
	snapshot := filepath.Join(dir, replaySnapshotFile)

	m := start()
	key = addAgent(t, &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}, "a")
	const many = 60
	before := mintMany(m, many)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(snapshot); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the replay snapshot after Close: %v %v, want a 0600 file", fi, err)
	}

	// A clean restart: everything from the snapshot, no event re-read.
	m = start()
	if r := m.replayRestored; r.fallback != "" || r.fromSnapshot < many || r.events != 0 {
		t.Errorf("start after Close: %+v; want the %d assertions from the snapshot and no event read", r, many)
	}
	refused(m, "snapshot", before[:3])
	covered, err := os.ReadFile(snapshot)
	if err != nil {
		t.Fatal(err)
	}
	const after = 7
	late := mintMany(m, after)
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	// As after a crash before the next snapshot: the older snapshot, and
	// the issuances after it in the log, which are all that is read.
	if err := os.WriteFile(snapshot, covered, 0o600); err != nil {
		t.Fatal(err)
	}
	m = start()
	if r := m.replayRestored; r.fallback != "" || r.events != after {
		t.Errorf("start on an older snapshot: %+v; want %d issuance events read, those after it", r, after)
	}
	refused(m, "older snapshot", append(late, before[len(before)-3:]...))
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	// A damaged snapshot is set aside, saying so, and the log read as
	// before: still refused.
	for name, damage := range map[string]func([]byte) []byte{
		"bit flip": func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b },
		"torn":     func(b []byte) []byte { return b[:len(b)-100] },
	} {
		b, err := os.ReadFile(snapshot)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(snapshot, damage(b), 0o600); err != nil {
			t.Fatal(err)
		}
		m = start()
		if r := m.replayRestored; r.fallback == "" || r.events < many+after {
			t.Errorf("%s snapshot: %+v; want a fallback reading every issuance (%d)", name, r, many+after)
		}
		refused(m, name, append(late[:2], before[:2]...))
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A snapshot that does not match the log, because it covers more than the
// log holds or is of another history, or was taken by a clock ahead of
// this start's, is set aside.
func TestReplaySnapshotOfAnotherLog(t *testing.T) {
	dirs := [2]string{t.TempDir(), t.TempDir()}
	for i, n := range []int{1, 3} {
		m := startMain(t, dirs[i])
		admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
		for j := range n {
			addAgent(t, admin, "a"+string(rune('0'+j)))
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
	copySnap := func(from, to string) {
		b, err := os.ReadFile(filepath.Join(from, replaySnapshotFile))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, replaySnapshotFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ name, from, to, want string }{
		{"longer", dirs[1], dirs[0], "the log holds"},
		{"other history", dirs[0], dirs[1], "another history"},
	} {
		copySnap(c.from, c.to)
		m := startMain(t, c.to)
		if !strings.Contains(m.replayRestored.fallback, c.want) {
			t.Errorf("%s: fallback %q, want it to say %q", c.name, m.replayRestored.fallback, c.want)
		}
		m.Close()
	}
	// A wall clock set back across the restart: the snapshot left out
	// what had expired by its clock, which may not have by this one.
	m := NewMain()
	m.Addr, m.DataDir, m.Now = "127.0.0.1:0", dirs[1], func() time.Time { return time.Now().Add(-10 * time.Minute) }
	m.Stdout, m.Stderr = testWriter{t}, testWriter{t}
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !strings.Contains(m.replayRestored.fallback, "the clock went back") {
		t.Errorf("clock set back: fallback %q, want it to say the clock went back", m.replayRestored.fallback)
	}
}
