package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditcheck"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
)

// child is a `mandate serve` child process whose stderr the test reads.
type child struct {
	cmd    *exec.Cmd
	url    string
	mu     sync.Mutex
	lines  []string
	exited chan struct{} // closed when it exited; then err is its exit
	err    error
}

// startServe starts `mandate serve --data dir` as a child process with env
// added to its environment.
func startServe(t *testing.T, dir string, env ...string) *child {
	t.Helper()
	c := &child{exited: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "serve", "--addr", "127.0.0.1:0", "--data", dir, "--issuer", "http://mandate.test")
	c.cmd.Env = append(append(os.Environ(), "MANDATE_TEST_AS_MAIN=1"), env...)
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urlRE := regexp.MustCompile(`msg="mandate serving" url=(http://\S+)`)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			c.mu.Lock()
			c.lines = append(c.lines, sc.Text())
			c.mu.Unlock()
			if m := urlRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.exited
	})
	select {
	case c.url = <-found:
		return c
	case <-c.exited:
		t.Fatalf("the server exited at start: %v\n%s", c.err, c.output(0))
	case <-time.After(60 * time.Second):
		t.Fatal("the server did not start within 60s")
	}
	return nil
}

// output returns its stderr from line from on, and the number of lines.
func (c *child) output(from int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines[min(from, len(c.lines)):], "\n")
}

func (c *child) lineCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// waitFor polls cond until it holds, or fails the test after a generous
// deadline: a condition, never a duration the machine's speed decides.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
	}
}

// minter mints root mandates from a few goroutines until stopped, keeping
// the IDs of the mandates clients received and counting refusals.
type minter struct {
	mu       sync.Mutex
	received []string
	refused  atomic.Int64 // 503 answers
	retryOK  atomic.Bool  // every 503 had a Retry-After
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startMinting(t *testing.T, base string, key ed25519.PrivateKey, agentID string, n int) *minter {
	m := &minter{stop: make(chan struct{})}
	m.retryOK.Store(true)
	client := &http.Client{Timeout: 30 * time.Second}
	for range n {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			for {
				select {
				case <-m.stop:
					return
				default:
				}
				form := url.Values{"grant_type": {"client_credentials"}, "scope": {"mcp:crm:list"},
					"client_assertion_type": {issuer.ClientAssertionType},
					"client_assertion":      {httpapi.ClientAssertion(key, agentID, "http://mandate.test", time.Now())}}
				resp, err := client.PostForm(base+"/oauth2/token", form)
				if err != nil {
					select {
					case <-m.stop:
						return
					default:
					}
					continue // the server is gone or going: keep trying until told to stop
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					m.refused.Add(1)
					if resp.Header.Get("Retry-After") == "" {
						m.retryOK.Store(false)
					}
					continue
				}
				if resp.StatusCode != 200 {
					continue
				}
				var tr httpapi.TokenResponse
				if json.Unmarshal(b, &tr) != nil {
					t.Errorf("a 200 answer that is not a token: %s", b)
					continue
				}
				jws, err := jose.Parse(tr.AccessToken)
				if err != nil {
					t.Error(err)
					continue
				}
				var c mandate.Claims
				json.Unmarshal(jws.Payload, &c)
				m.mu.Lock()
				m.received = append(m.received, c.ID)
				m.mu.Unlock()
			}
		}()
	}
	return m
}

func (m *minter) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.received)
}

func (m *minter) halt() []string {
	close(m.stop)
	m.wg.Wait()
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.received...)
}

// checkReceived checks that every mandate a client received has its
// issuance event in the log, and that the log verifies.
func checkReceived(t *testing.T, admin *httpapi.Client, received []string) {
	t.Helper()
	ctx := context.Background()
	missing := 0
	for _, jti := range received {
		evs, err := admin.Events(ctx, url.Values{"mandate": {jti}, "type": {mandate.EventMandateIssued}})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d mandates that clients received have no issuance event", missing, len(received))
	}
	src := auditcheck.HTTPSource(admin.BaseURL+"/audit", &http.Client{Timeout: time.Minute, Transport: httpapi.AuthTransport{Token: admin.AdminToken}})
	r, err := auditcheck.Verify(ctx, src, auditcheck.Options{})
	if err != nil || !r.OK() {
		t.Fatalf("the audit log does not verify: %v\n%s", err, r)
	}
}

// probe returns the status and JSON body of GET base+path.
func probe(t *testing.T, base, path string) (int, map[string]string) {
	t.Helper()
	resp, err := http.Get(base + path)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var body map[string]string
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func adminOf(t *testing.T, dir, base string) *httpapi.Client {
	t.Helper()
	token, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return &httpapi.Client{BaseURL: base, AdminToken: strings.TrimSpace(string(token))}
}

// A full disk under load: the server stays live (/healthz 200) but not
// ready (/readyz 503 degraded), refuses mints with 503 and Retry-After,
// logs a bounded number of lines while it does, and once space is freed
// takes mints again without a restart. Every mandate a client received is
// in the log, and the log verifies.
func TestDiskFullRecoversWithoutRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server on a filesystem of its own")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=64m"); err != nil {
		t.Skipf("a full disk needs a small filesystem of its own, and mounting a tmpfs is not allowed here (%v): run as root to run this test", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	dir := filepath.Join(mnt, "data")
	srv := startServe(t, dir)
	admin := adminOf(t, dir, srv.url)
	key := addAgent(t, admin, "loader")
	load := startMinting(t, srv.url, key, "spiffe://example.org/agent/loader", 4)
	defer func() {
		select {
		case <-load.stop:
		default:
			load.halt()
		}
	}()
	waitFor(t, "mints before the disk fills", func() bool { return load.count() >= 20 })

	// Fill the disk.
	filledAt, linesAt, refusedAt := time.Now(), srv.lineCount(), load.refused.Load()
	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for _, n := range []int{len(chunk), 4096, 1} {
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
	f.Close()
	waitFor(t, "/readyz to say degraded", func() bool {
		st, body := probe(t, srv.url, "/readyz")
		return st == http.StatusServiceUnavailable && body["status"] == "degraded"
	})
	if st, body := probe(t, srv.url, "/healthz"); st != 200 || body["status"] != "ok" {
		t.Errorf("/healthz while degraded: %d %v, want 200 ok: a restart would not free the disk", st, body)
	}
	_, body := probe(t, srv.url, "/readyz")
	if body["store"] != "degraded" || body["reason"] == "" || strings.Contains(body["reason"], "no space") {
		t.Errorf("/readyz body %v: want the store's state and a short reason without internal text", body)
	}
	// Many refusals, few lines.
	waitFor(t, "2000 refused mints", func() bool { return load.refused.Load()-refusedAt >= 2000 })
	elapsed := time.Since(filledAt)
	lines := srv.lineCount() - linesAt
	// One line a second per kind (a few kinds), and the store's own.
	if bound := 6*(int(elapsed/time.Second)+1) + 4; lines > bound {
		t.Errorf("%d lines logged in %v of %d refusals, more than %d:\n%s", lines, elapsed, load.refused.Load()-refusedAt, bound, srv.output(linesAt))
	}
	if !load.retryOK.Load() {
		t.Error("a 503 without Retry-After")
	}

	// Free the disk: the server recovers by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freedAt := time.Now()
	waitFor(t, "/readyz to say ready again", func() bool {
		st, body := probe(t, srv.url, "/readyz")
		return st == 200 && body["status"] == "ready"
	})
	recovered := time.Since(freedAt)
	before := load.count()
	waitFor(t, "mints after the recovery", func() bool { return load.count() >= before+20 })
	received := load.halt()
	if !strings.Contains(srv.output(0), "store: recovered") {
		t.Errorf("the recovery was not logged:\n%s", srv.output(linesAt))
	}
	checkReceived(t, admin, received)
	t.Logf("%d mandates received, all in the log; %d refused while degraded; ready again %v after the disk was freed; %d lines logged for %d refusals in %v",
		len(received), load.refused.Load(), recovered.Round(time.Millisecond), lines, load.refused.Load()-refusedAt, elapsed.Round(time.Millisecond))
}

// A failed fsync (EIO, through the store's test hook) under load: the
// server says so and exits with status 1, naming the fault and the fix; a
// restart on the same directory succeeds, every mandate a client received
// is in the log, and the log verifies.
func TestFailedFsyncExitsAndRestartRecovers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a server twice")
	}
	dir := t.TempDir()
	trigger := filepath.Join(t.TempDir(), "fail-fsync")
	srv := startServe(t, dir, "MANDATE_TEST_FAIL_FSYNC="+trigger)
	admin := adminOf(t, dir, srv.url)
	key := addAgent(t, admin, "loader")
	load := startMinting(t, srv.url, key, "spiffe://example.org/agent/loader", 4)
	waitFor(t, "mints before the fault", func() bool { return load.count() >= 20 })
	if err := os.WriteFile(trigger, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.exited:
	case <-time.After(2 * time.Minute):
		t.Fatal("the server did not exit after a failed fsync")
	}
	received := load.halt()
	var ee *exec.ExitError
	if !errors.As(srv.err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1", srv.err)
	}
	out := srv.output(0)
	for _, want := range []string{"mandate: the store failed: fsync of the", "input/output error", "hint: restart mandate", "recovers from its files"} {
		if !strings.Contains(out, want) {
			t.Errorf("the exit message does not say %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "failed for good"); n != 1 {
		t.Errorf("the failure logged %d times, want once", n)
	}

	os.Remove(trigger)
	srv2 := startServe(t, dir)
	admin.BaseURL = srv2.url
	if st, body := probe(t, srv2.url, "/readyz"); st != 200 || body["status"] != "ready" {
		t.Errorf("/readyz after the restart: %d %v", st, body)
	}
	checkReceived(t, admin, received)
	t.Logf("%d mandates received before the failed fsync, all in the log after the restart", len(received))

}
