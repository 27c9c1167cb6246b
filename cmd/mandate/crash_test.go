package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditcheck"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
)

// startChild starts `mandate serve` as a child process on dir, with env
// added to its environment, and returns it with its URL.
func startChild(t *testing.T, dir string, env ...string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "serve", "--addr", "127.0.0.1:0", "--data", dir, "--issuer", "http://mandate.test")
	cmd.Env = append(append(os.Environ(), "MANDATE_TEST_AS_MAIN=1"), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	urlRE := regexp.MustCompile(`msg="mandate serving" url=(http://\S+)`)
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := urlRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case u := <-found:
		return cmd, u
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the server did not start within 30s")
	}
	return nil, ""
}

// The server is killed (SIGKILL) while minting under load. After the
// restart the log verifies (and is consistent with a checkpoint verified
// before the crash), and every mandate a client received has its
// issuance event in the log: no mandate left without its record.
func TestCrashDuringLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a server")
	}
	dir := t.TempDir()
	cmd, base := startChild(t, dir)
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	token, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	admin := &httpapi.Client{BaseURL: base, AdminToken: strings.TrimSpace(string(token))}
	ctx := context.Background()
	key := addAgent(t, admin, "loader")
	agentID := "spiffe://example.org/agent/loader"
	issuerURL := "http://mandate.test"

	var mu sync.Mutex
	var received []string // jtis of mandates a client received
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				form := url.Values{"grant_type": {"client_credentials"}, "scope": {"mcp:crm:list"},
					"client_assertion_type": {issuer.ClientAssertionType},
					"client_assertion":      {httpapi.ClientAssertion(key, agentID, issuerURL, time.Now())}}
				resp, err := client.PostForm(base+"/oauth2/token", form)
				if err != nil {
					continue // the server is gone: keep trying until told to stop
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
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
				mu.Lock()
				received = append(received, c.ID)
				mu.Unlock()
			}
		}()
	}

	// Verify once under load, remembering the checkpoint.
	state := filepath.Join(t.TempDir(), "state.json")
	time.Sleep(700 * time.Millisecond)
	src := func(base string) auditcheck.Source {
		return auditcheck.HTTPSource(base+"/audit", &http.Client{Timeout: time.Minute, Transport: httpapi.AuthTransport{Token: admin.AdminToken}})
	}
	r, err := auditcheck.Verify(ctx, src(base), auditcheck.Options{State: state})
	if err != nil || !r.OK() {
		t.Fatalf("verify under load: %v\n%s", err, r)
	}
	time.Sleep(300 * time.Millisecond)

	// Crash.
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	mu.Lock()
	got := append([]string(nil), received...)
	mu.Unlock()
	if len(got) < 50 {
		t.Fatalf("only %d mandates were issued before the crash: the load did not load", len(got))
	}

	// Restart on the same data.
	cmd2, base2 := startChild(t, dir)
	defer func() { cmd2.Process.Kill(); cmd2.Wait() }()
	r, err = auditcheck.Verify(ctx, src(base2), auditcheck.Options{State: state})
	if err != nil || !r.OK() {
		t.Fatalf("verify after the crash: %v\n%s", err, r)
	}
	if r.Previous == nil {
		t.Error("the verification after the crash did not check consistency with the one before")
	}
	admin.BaseURL = base2
	missing := 0
	for _, jti := range got {
		evs, err := admin.Events(ctx, url.Values{"mandate": {jti}, "type": {mandate.EventMandateIssued}})
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d mandates that clients received have no issuance event after the crash", missing, len(got))
	}
	t.Logf("%d mandates issued before SIGKILL, all in the log; the log (%d entries) verifies and is consistent", len(got), r.Size)
}
