package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditlog"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/internal/dirlock"
	"github.com/mandatehq/mandate/issuer"
)

// testFaults puts the fault that MANDATE_TEST_CRASH names into the child
// server this test binary is about to run as:
//
//   - rotate-before-event: a key rotation kills the process (SIGKILL)
//     before its key.rotated event is appended;
//   - rotate-after-event: once that event is durable, before the new key
//     is activated.
func testFaults() {
	mode := os.Getenv("MANDATE_TEST_CRASH")
	if mode == "" {
		return
	}
	testNewMain = func(m *Main) {
		m.testAPI = func(c *httpapi.Config) { c.Events = crashingLog{EventLog: c.Events, mode: mode} }
	}
}

// crashingLog kills the process around the append of an operator's
// key.rotated event, as its mode says.
type crashingLog struct {
	mandate.EventLog
	mode string
}

func (l crashingLog) Append(ctx context.Context, evs ...*mandate.Event) error {
	rotation := len(evs) == 1 && evs[0].Type == mandate.EventKeyRotated && evs[0].By == "admin"
	if rotation && l.mode == "rotate-before-event" {
		killSelf()
	}
	err := l.EventLog.Append(ctx, evs...)
	if rotation && err == nil && l.mode == "rotate-after-event" {
		killSelf()
	}
	return err
}

// killSelf ends this process as SIGKILL would: nothing runs after it.
func killSelf() {
	p, _ := os.FindProcess(os.Getpid())
	p.Kill()
	select {} // until the signal lands
}

// runChild runs the test binary as `mandate ARGS…` and returns its exit
// status and output; a child still running after a minute fails the test
// (it was meant to stop at once).
func runChild(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "MANDATE_TEST_AS_MAIN=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), out.String()
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("mandate %s still runs after a minute; it should have refused at once:\n%s", strings.Join(args, " "), out.String())
	}
	return 0, ""
}

// A second server on a data directory a server holds is refused at once,
// naming the holder's pid, and so is `mandate demo` on it. Killed
// (SIGKILL), the holder leaves its LOCK file behind, which does not keep
// the next server from starting.
func TestSecondServerRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers")
	}
	dir := t.TempDir()
	first, _ := startChild(t, dir)
	defer func() { first.Process.Kill(); first.Wait() }()
	pid := strconv.Itoa(first.Process.Pid)
	for _, args := range [][]string{
		{"serve", "--addr", "127.0.0.1:0", "--data", dir},
		{"demo", "--data", dir},
		{"serve", "--demo", "--addr", "127.0.0.1:0", "--data", dir},
	} {
		code, out := runChild(t, args...)
		if code == 0 || !strings.Contains(out, "is in use by process "+pid) || !strings.Contains(out, "hint: stop that server, or start this one with another --data") {
			t.Errorf("mandate %s on a held directory: exit %d\n%s\nwant a refusal naming pid %s and the hint", args[0], code, out, pid)
		}
		// Refused before it wrote anything there: the demo's policy
		// would join the running server's set, which it reloads from disk.
		if _, err := os.Stat(filepath.Join(dir, "policies", "demo.cedar")); err == nil {
			t.Fatalf("mandate %s, refused, wrote its policy into the held directory", strings.Join(args, " "))
		}
	}
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.Wait()
	if _, err := os.Stat(filepath.Join(dir, dirlock.Name)); err != nil {
		t.Fatalf("the killed server's lock file: %v", err)
	}
	again, _ := startChild(t, dir)
	again.Process.Kill()
	again.Wait()
}

// `audit verify DIR` on a server's data directory says what it is, and
// who holds it, rather than failing to find a log export there.
func TestAuditVerifyDataDir(t *testing.T) {
	dir := t.TempDir()
	m := startMain(t, dir)
	defer m.Close()
	var out bytes.Buffer
	code := Run(context.Background(), []string{"audit", "verify", dir, "--state", ""}, nil, &out, &out)
	want := fmt.Sprintf("is a server's data directory, in use by process %d", os.Getpid())
	if code != 1 || !strings.Contains(out.String(), want) || !strings.Contains(out.String(), "hint:") {
		t.Fatalf("exit %d:\n%s\nwant %q and a hint", code, out.String(), want)
	}
}

// openMain opens a server on dir, its log written to logs.
func openMain(dir string, logs io.Writer) (*Main, error) {
	m := NewMain()
	m.Addr, m.DataDir = "127.0.0.1:0", dir
	m.Stdout, m.Stderr = logs, logs
	return m, m.Open(context.Background())
}

// useDir starts a server on dir, registers the agents named, mints a
// mandate for each, and stops it.
func useDir(t *testing.T, dir string, agents ...string) {
	t.Helper()
	m := startMain(t, dir)
	admin := &httpapi.Client{BaseURL: m.URL, AdminToken: m.AdminToken}
	for _, name := range agents {
		key := addAgent(t, admin, name)
		if _, err := admin.Token(context.Background(), httpapi.TokenRequest{AgentID: "spiffe://example.org/agent/" + name, Key: key, Scope: "mcp:crm:list"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

// sqlExec runs a statement on the (stopped) server's database, as an
// insider with the file would.
func sqlExec(t *testing.T, dir, stmt string) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "mandate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmt); err != nil {
		t.Fatal(err)
	}
}

// copyDir copies the files of src into dst, modes kept.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), fi.Mode().Perm())
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// refused opens a server on dir, wants a refusal that wraps
// auditlog.ErrLogReplaced and says each of want, and checks that the
// refusal changed nothing of what it names: the kept checkpoint and the
// database's checkpoints.
func refused(t *testing.T, dir string, want ...string) {
	t.Helper()
	head, _ := os.ReadFile(filepath.Join(dir, "keys", "log.head"))
	_, logDirErr := os.Stat(filepath.Join(dir, "mandate-log"))
	var logs bytes.Buffer
	m, err := openMain(dir, &logs)
	if err == nil {
		m.Close()
		t.Fatalf("the server started:\n%s", logs.String())
	}
	if !errors.Is(err, auditlog.ErrLogReplaced) {
		t.Fatalf("refusal %v, want one wrapping ErrLogReplaced", err)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("refusal %q does not say %q", err, w)
		}
	}
	if !strings.Contains(err.Error(), "hint: restore the log from a backup or an export (`mandate audit export`)") {
		t.Errorf("refusal %q has no hint", err)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, "keys", "log.head")); !bytes.Equal(now, head) {
		t.Error("the refusal changed keys/log.head")
	}
	if _, err := os.Stat(filepath.Join(dir, "mandate-log")); errors.Is(logDirErr, os.ErrNotExist) && err == nil {
		t.Error("the refusal made a new, empty log")
	}
	// And it is refused again: nothing was signed over it meanwhile.
	if m, err := openMain(dir, io.Discard); !errors.Is(err, auditlog.ErrLogReplaced) {
		if err == nil {
			m.Close()
		}
		t.Fatalf("second start: %v", err)
	}
}

// An insider rewrites the log's history (here: the log and database of a
// copy of the directory that went another way, whose checkpoints are
// signed with the same key) and deletes the database's checkpoints: the
// checkpoint kept apart (keys/log.head) no longer matches, and the server
// refuses to start rather than sign the new history.
func TestRewrittenLogRefused(t *testing.T) {
	dir, fork := t.TempDir(), t.TempDir()
	useDir(t, dir, "a")
	copyDir(t, dir, fork)
	useDir(t, dir, "b")
	useDir(t, fork, "c", "d", "e") // longer than dir's log
	for _, name := range []string{"mandate.db", "mandate-log", "mandate-events-index", "mandate-events-index.db"} {
		os.RemoveAll(filepath.Join(dir, name))
		if _, err := os.Stat(filepath.Join(fork, name)); err == nil {
			os.Rename(filepath.Join(fork, name), filepath.Join(dir, name))
		}
	}
	sqlExec(t, dir, "DELETE FROM log_checkpoints")
	refused(t, dir, "do not hash to the root its last checkpoint ("+filepath.Join(dir, "keys", "log.head")+") signed", "the history was rewritten")
}

// The log wiped: refused, before a new empty log is made, naming the
// checkpoint that says it held entries. With that checkpoint gone too,
// and the database's deleted, the database's agents, or else the active
// signing key, still say the log was used.
func TestWipedLogRefused(t *testing.T) {
	dir := t.TempDir()
	useDir(t, dir, "a")
	os.RemoveAll(filepath.Join(dir, "mandate-log"))
	refused(t, dir, "the log's directory "+filepath.Join(dir, "mandate-log")+" is gone, but its last checkpoint ("+filepath.Join(dir, "keys", "log.head")+") signed")

	os.Remove(filepath.Join(dir, "keys", "log.head"))
	sqlExec(t, dir, "DELETE FROM log_checkpoints")
	refused(t, dir, "the log's directory "+filepath.Join(dir, "mandate-log")+" is gone, but the database holds 1 agent")
	// Or the log's files emptied, the directory left.
	os.MkdirAll(filepath.Join(dir, "mandate-log"), 0o700)
	refused(t, dir, "the log holds 0 entries, but the database holds 1 agent")

	// A directory with no agents: its signing key.
	bare := t.TempDir()
	useDir(t, bare)
	os.RemoveAll(filepath.Join(bare, "mandate-log"))
	os.Remove(filepath.Join(bare, "keys", "log.head"))
	sqlExec(t, bare, "DELETE FROM log_checkpoints")
	refused(t, bare, "is gone, but the signing keyring ("+filepath.Join(bare, "keys", "signing.json")+") has an active key")
}

// What must still start: a data directory from before keys/log.head (its
// database's checkpoint trusted once, and kept), and one where a crash
// came after a checkpoint was saved but before log.head was written (the
// database's newer checkpoint accepted, as the log extends both).
func TestLogHeadUpgradeAndCrash(t *testing.T) {
	dir := t.TempDir()
	head := filepath.Join(dir, "keys", "log.head")
	useDir(t, dir, "a")
	old, err := os.ReadFile(head)
	if err != nil {
		t.Fatal(err)
	}
	useDir(t, dir, "b")
	if err := os.WriteFile(head, old, 0o600); err != nil { // the crash: log.head one checkpoint behind
		t.Fatal(err)
	}
	var logs bytes.Buffer
	m, err := openMain(dir, &logs)
	if err != nil {
		t.Fatalf("start after a crash before log.head was written: %v\n%s", err, logs.String())
	}
	m.Close()
	signed, _ := m.Publisher.Latest()
	if now, _ := os.ReadFile(head); bytes.Equal(now, old) || !bytes.Equal(now, signed) {
		t.Error("log.head was not brought up to the latest checkpoint")
	}

	os.Remove(head) // a data directory from before log.head
	logs.Reset()
	if m, err = openMain(dir, &logs); err != nil {
		t.Fatalf("start without log.head: %v\n%s", err, logs.String())
	}
	m.Close()
	if !strings.Contains(logs.String(), "the store's latest is trusted once and kept from now on") {
		t.Errorf("the upgrade was not logged:\n%s", logs.String())
	}
	if fi, err := os.Stat(head); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("log.head after the upgrade: %v %v", fi, err)
	}
}

// A key rotation is killed (SIGKILL) between its steps: after the new key
// is saved, before its key.rotated event; and after the event, before the
// key signs. After the restart, every mandate in the log was signed by a
// key whose key.rotated event comes before it, the first key included,
// and the interrupted rotation's key is the one signing.
func TestRotationCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts and kills servers")
	}
	for _, mode := range []string{"rotate-before-event", "rotate-after-event"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			ctx := context.Background()
			cmd, base := startChild(t, dir, "MANDATE_TEST_CRASH="+mode)
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			token, err := os.ReadFile(filepath.Join(dir, "admin.token"))
			if err != nil {
				t.Fatal(err)
			}
			admin := &httpapi.Client{BaseURL: base, AdminToken: strings.TrimSpace(string(token))}
			key := addAgent(t, admin, "a")
			mint := func() {
				t.Helper()
				// The child's --issuer is not its address: the request goes
				// to the address, the assertion names the issuer.
				resp, err := http.PostForm(admin.BaseURL+"/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "scope": {"mcp:crm:list"},
					"client_assertion_type": {issuer.ClientAssertionType},
					"client_assertion":      {httpapi.ClientAssertion(key, "spiffe://example.org/agent/a", "http://mandate.test", time.Now())}})
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("mint: %d %s", resp.StatusCode, b)
				}
			}
			mint()
			if _, err := admin.RotateKeys(ctx); err == nil {
				t.Fatal("the rotation answered: the fault did not happen")
			}
			if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("the server ended with %v, want SIGKILL", err)
			}

			cmd, base = startChild(t, dir)
			admin.BaseURL = base
			mint()
			keys, err := admin.Keys(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 2 || keys[1].Status != "active" || keys[0].Status != "retired" {
				t.Fatalf("keys after the restart: %+v; want the interrupted rotation's key active", keys)
			}
			if _, err := admin.RotateKeys(ctx); err != nil {
				t.Fatal(err)
			}
			mint()

			announced := map[string]bool{}
			var rotations, mandates int
			for after := int64(0); ; {
				evs, err := admin.Events(ctx, url.Values{"after": {strconv.FormatInt(after, 10)}, "limit": {"1000"}})
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range evs {
					after = e.Index + 1
					kid, _ := e.Details["kid"].(string)
					switch e.Type {
					case mandate.EventKeyRotated:
						rotations++
						announced[kid] = true
					case mandate.EventMandateIssued, mandate.EventMandateDelegated:
						mandates++
						if !announced[kid] {
							t.Errorf("mandate %s (entry %d) is signed by key %s, whose key.rotated event does not come before it", e.Mandate, e.Index, kid)
						}
					}
				}
				if len(evs) < 1000 {
					break
				}
			}
			if mandates != 3 || rotations != 3 {
				t.Errorf("%d mandates and %d key.rotated events in the log, want 3 and 3 (the first key, the interrupted rotation, the last)", mandates, rotations)
			}
		})
	}
}

// The history rewritten, as in TestRewrittenLogRefused, and both
// checkpoints deleted: the database's and keys/log.head. A server signs
// a checkpoint at its first start, before it accepts anything, so a log
// with entries and no checkpoint anywhere had its checkpoints deleted:
// refused rather than signed.
func TestRewrittenLogWithoutCheckpointsRefused(t *testing.T) {
	dir, fork := t.TempDir(), t.TempDir()
	useDir(t, dir, "a")
	copyDir(t, dir, fork)
	useDir(t, dir, "b")
	useDir(t, fork, "c", "d", "e")
	for _, name := range []string{"mandate.db", "mandate-log", "mandate-events-index", "mandate-events-index.db"} {
		os.RemoveAll(filepath.Join(dir, name))
		if _, err := os.Stat(filepath.Join(fork, name)); err == nil {
			os.Rename(filepath.Join(fork, name), filepath.Join(dir, name))
		}
	}
	sqlExec(t, dir, "DELETE FROM log_checkpoints")
	os.Remove(filepath.Join(dir, "keys", "log.head"))
	refused(t, dir, "no checkpoint of it is kept", "the checkpoints were deleted")
}
