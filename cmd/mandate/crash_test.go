package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
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

// The server is killed (SIGKILL) three times, each time at a random
// moment of a mixed load: root mints, delegations to sub-agents, and
// revocations of some of them. After each restart the log verifies and is
// consistent with the checkpoint verified before; at the end every mandate
// and delegation a client received has its event in the log, and every
// revocation a client was told of is still in force: nothing answered
// was lost. The load waits for the server, not for the clock: each kill
// comes after a random number of answers, not after a time.
func TestKilledUnderMixedLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills a server")
	}
	dir := t.TempDir()
	ctx := context.Background()
	agentID := "spiffe://example.org/agent/loader"

	cmd, base := startChild(t, dir)
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	token, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	adminToken := strings.TrimSpace(string(token))
	key := addAgent(t, &httpapi.Client{BaseURL: base, AdminToken: adminToken}, "loader")

	tg := &killTarget{base: base, up: make(chan struct{})}
	close(tg.up)
	var (
		mu                       sync.Mutex
		roots, children, revoked []string // what clients were told
		childTokens              = map[string]string{}
	)
	answers := make(chan struct{}, 1024)
	answered := func() {
		select {
		case answers <- struct{}{}:
		default:
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				base, up := tg.get()
				// The server's issuer identifier is http://mandate.test:
				// the client's requests to it go to the server.
				hc := &http.Client{Timeout: 10 * time.Second, Transport: toServer{base}}
				admin := &httpapi.Client{BaseURL: base, AdminToken: adminToken, HTTP: hc}
				wait := func() {
					select {
					case <-up:
					case <-stop:
					}
				}
				root, err := admin.Token(ctx, httpapi.TokenRequest{AgentID: agentID, Key: key, Scope: "mcp:crm:*", TTL: time.Hour})
				if err != nil {
					if mandate.ErrorCode(err) != mandate.EUNAVAILABLE && !isConnErr(err) {
						t.Errorf("mint: %v", err)
					}
					wait()
					continue
				}
				rootID, _ := httpapi.MandateID(root.AccessToken)
				mu.Lock()
				roots = append(roots, rootID)
				mu.Unlock()
				answered()
				_, sub, _ := ed25519.GenerateKey(rand.Reader)
				child, err := admin.Delegate(ctx, httpapi.DelegateRequest{SubjectToken: root.AccessToken, ActorKey: sub, Scope: "mcp:crm:list"})
				if err != nil {
					wait()
					continue
				}
				childID, _ := httpapi.MandateID(child.AccessToken)
				mu.Lock()
				children = append(children, childID)
				childTokens[childID] = child.AccessToken
				mu.Unlock()
				answered()
				if (n+w)%4 != 0 {
					continue
				}
				if _, err := admin.Revoke(ctx, httpapi.RevocationRequest{Mandate: childID, Reason: "load"}); err != nil {
					wait()
					continue
				}
				mu.Lock()
				revoked = append(revoked, childID)
				mu.Unlock()
				answered()
			}
		}()
	}

	state := filepath.Join(t.TempDir(), "state.json")
	verifyLog := func(base, when string) {
		t.Helper()
		src := auditcheck.HTTPSource(base+"/audit", &http.Client{Timeout: time.Minute, Transport: httpapi.AuthTransport{Token: adminToken}})
		r, err := auditcheck.Verify(ctx, src, auditcheck.Options{State: state})
		if err != nil || !r.OK() {
			t.Fatalf("verify %s: %v\n%s", when, err, r)
		}
		if when != "under load" && r.Previous == nil {
			t.Errorf("the verification %s did not check consistency with the one before", when)
		}
	}
	// waitAnswers waits for n more answers of the load.
	waitAnswers := func(n int) {
		t.Helper()
		deadline := time.After(2 * time.Minute)
		for range n {
			select {
			case <-answers:
			case <-deadline:
				t.Fatalf("the load got fewer than %d answers in two minutes", n)
			}
		}
	}
	rnd := mathrand.New(mathrand.NewPCG(uint64(time.Now().UnixNano()), 16))
	for round := range 3 {
		waitAnswers(100)
		if round == 0 {
			verifyLog(base, "under load")
		}
		waitAnswers(20 + rnd.IntN(300)) // a random moment
		tg.down()
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		cmd.Wait()
		cmd, base = startChild(t, dir)
		tg.restarted(base)
		verifyLog(base, fmt.Sprintf("after kill %d", round+1))
	}
	waitAnswers(50)
	close(stop)
	wg.Wait()

	admin := &httpapi.Client{BaseURL: base, AdminToken: adminToken}
	mu.Lock()
	defer mu.Unlock()
	if len(roots) < 100 || len(revoked) == 0 {
		t.Fatalf("%d mints, %d delegations, %d revocations: the load did not load", len(roots), len(children), len(revoked))
	}
	missing := func(ids []string, typ string) int {
		n := 0
		for _, id := range ids {
			evs, err := admin.Events(ctx, url.Values{"mandate": {id}, "type": {typ}})
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 1 {
				n++
			}
		}
		return n
	}
	if n := missing(roots, mandate.EventMandateIssued); n > 0 {
		t.Errorf("%d of %d mandates that clients received have no issuance event", n, len(roots))
	}
	if n := missing(children, mandate.EventMandateDelegated); n > 0 {
		t.Errorf("%d of %d delegations that clients received have no event", n, len(children))
	}
	for _, id := range revoked {
		form := url.Values{"token": {childTokens[id]}}
		req, _ := http.NewRequest(http.MethodPost, base+"/oauth2/introspect", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var ir httpapi.IntrospectionResponse
		err = json.NewDecoder(resp.Body).Decode(&ir)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("introspect %s: %d %v", id, resp.StatusCode, err)
		}
		if ir.Active {
			t.Errorf("mandate %s was revoked before a kill, and is active after", id)
		}
	}
	t.Logf("3 kills under load: %d mints, %d delegations, %d revocations answered, all in force after the restarts",
		len(roots), len(children), len(revoked))
}

// killTarget is the server the load talks to, across restarts: while it
// is down, the load waits for up rather than spinning on refused
// connections.
type killTarget struct {
	mu   sync.Mutex
	base string
	up   chan struct{} // closed while the server is up
}

func (k *killTarget) get() (string, chan struct{}) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.base, k.up
}

func (k *killTarget) down() {
	k.mu.Lock()
	k.up = make(chan struct{})
	k.mu.Unlock()
}

func (k *killTarget) restarted(base string) {
	k.mu.Lock()
	k.base = base
	close(k.up)
	k.mu.Unlock()
}

// toServer sends every request to the server at base, whatever its host.
type toServer struct{ base string }

func (s toServer) RoundTrip(r *http.Request) (*http.Response, error) {
	u, _ := url.Parse(s.base)
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = u.Scheme, u.Host
	return http.DefaultTransport.RoundTrip(r)
}

// isConnErr reports whether err is the transport's (the server is gone)
// rather than an answer.
func isConnErr(err error) bool {
	var ue *url.Error
	return errors.As(err, &ue)
}
