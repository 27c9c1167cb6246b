package main

import (
	"bufio"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
)

// A server killed (SIGKILL) after its replay snapshot was written and
// more assertions were used: after the restart every assertion used
// before the kill is refused, those of the snapshot and those after it,
// and the start read no more issuance events than were written after it.
func TestReplayAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a server")
	}
	dir := t.TempDir()
	const issuerURL = "http://mandate.test"
	const agentID = "spiffe://example.org/agent/a"
	start := func() (*exec.Cmd, string, <-chan string) {
		t.Helper()
		cmd := exec.Command(os.Args[0], "serve", "--addr", "127.0.0.1:0", "--data", dir, "--issuer", issuerURL)
		cmd.Env = append(os.Environ(), "MANDATE_TEST_AS_MAIN=1")
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan string, 1000)
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				select {
				case lines <- sc.Text():
				default:
				}
			}
			close(lines)
		}()
		urlRE := regexp.MustCompile(`msg="mandate serving" url=(http://\S+)`)
		var before []string
		deadline := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the server exited: %s", strings.Join(before, "\n"))
				}
				before = append(before, l)
				if m := urlRE.FindStringSubmatch(l); m != nil {
					out := make(chan string, len(before))
					for _, b := range before {
						out <- b
					}
					close(out)
					return cmd, m[1], out
				}
			case <-deadline:
				cmd.Process.Kill()
				t.Fatal("the server did not start within 30s")
			}
		}
	}
	mint := func(base, assertion string) (int, string) {
		t.Helper()
		resp, err := http.PostForm(base+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"mcp:crm:x"},
			"client_assertion_type": {issuer.ClientAssertionType}, "client_assertion": {assertion}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	cmd, base, _ := start()
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	token, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	key := addAgent(t, &httpapi.Client{BaseURL: base, AdminToken: strings.TrimSpace(string(token))}, "a")
	const n = 40
	var used []string
	mintN := func() {
		for range n {
			a := httpapi.ClientAssertion(key, agentID, issuerURL, time.Now())
			if code, body := mint(base, a); code != 200 {
				t.Fatalf("mint: HTTP %d %s", code, body)
			}
			used = append(used, a)
		}
	}
	mintN()
	// Wait for a snapshot holding the first n (the writer runs every 5 s).
	snapshot := filepath.Join(dir, replaySnapshotFile)
	const header = len("mandate replay snapshot v1\n") + 8 + 4 + replayCoverSize + 8 + 32
	waitFor(t, "a replay snapshot of the first mints", func() bool {
		fi, err := os.Stat(snapshot)
		return err == nil && fi.Size() >= int64(header+n*24)
	})
	mintN()
	cmd.Process.Kill()
	cmd.Wait()

	cmd, base, lines := start()
	restoredRE := regexp.MustCompile(`from_snapshot=(\d+) issuance_events_read=(\d+)`)
	var fromSnap, read = -1, -1
	for l := range lines {
		if strings.Contains(l, "replay snapshot not used") {
			t.Errorf("the snapshot was set aside: %s", l)
		}
		if m := restoredRE.FindStringSubmatch(l); m != nil {
			fromSnap, _ = strconv.Atoi(m[1])
			read, _ = strconv.Atoi(m[2])
		}
	}
	if fromSnap < n || read < 0 || read > n {
		t.Errorf("restored %d from the snapshot, read %d issuance events; want at least %d, and at most the %d written after it", fromSnap, read, n, n)
	}
	for i, a := range used {
		if code, body := mint(base, a); code != 401 || !strings.Contains(body, "replay") {
			t.Fatalf("assertion %d of %d, used before the kill, replayed after the restart: HTTP %d %s", i, len(used), code, body)
		}
	}
}
