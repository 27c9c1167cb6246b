package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	// The crash test runs the server as a child process: this binary, told
	// by the environment to be mandate.
	if os.Getenv("MANDATE_TEST_AS_MAIN") == "1" {
		testFaults()
		// Every fsync of the store fails with EIO once this file exists.
		if trigger := os.Getenv("MANDATE_TEST_FAIL_FSYNC"); trigger != "" {
			testSyncHook = func() error {
				if _, err := os.Stat(trigger); err == nil {
					return syscall.EIO
				}
				return nil
			}
		}
		main()
	}
	testscript.Main(m, map[string]func(){
		"mandate": main,
	})
}

// TestScripts runs the CLI end to end: testdata/script/*.txtar against a
// server started in-process on 127.0.0.1:0 with a temporary data directory.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: filepath.Join("testdata", "script"),
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			// server [--demo] [--policies DIR] [DATA]: start a server; sets
			// MANDATE_SERVER and DATA.
			"server": func(ts *testscript.TestScript, neg bool, args []string) {
				m := NewMain()
				m.Addr = "127.0.0.1:0"
				m.DataDir = ts.MkAbs("data")
				// The server runs concurrently with the script: it logs to
				// its own file ($WORK/server.log), not to the script's buffers.
				logf, err := os.OpenFile(ts.MkAbs("server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
				ts.Check(err)
				w := &lockedWriter{w: logf}
				m.Stdout, m.Stderr = w, w
				for i := 0; i < len(args); i++ {
					switch a := args[i]; a {
					case "--demo":
						m.Demo = true
					case "--policies":
						if i++; i == len(args) {
							ts.Fatalf("usage: server [--demo] [--policies DIR] [DATA]")
						}
						m.PolicyDir = ts.MkAbs(args[i])
					default:
						m.DataDir = ts.MkAbs(a)
					}
				}
				if err := m.Open(context.Background()); err != nil {
					ts.Fatalf("start server: %v", err)
				}
				ts.Setenv("MANDATE_SERVER", m.URL)
				ts.Setenv("DATA", m.DataDir)
				ts.Defer(func() { m.Close(); logf.Close() })
			},
			// waitfile FILE: wait up to 20 s for FILE to exist.
			"waitfile": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: waitfile FILE")
				}
				for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					if _, err := os.Stat(ts.MkAbs(args[0])); err == nil {
						return
					}
				}
				ts.Fatalf("%s did not appear within 20s", args[0])
			},
			// waitstdout REGEXP CMD [ARGS...]: run CMD until it succeeds
			// with stdout matching REGEXP, for up to 20 s; stdout is then
			// the last run's. For what the server does in the background.
			"waitstdout": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) < 2 {
					ts.Fatalf("usage: waitstdout REGEXP CMD [ARGS...]")
				}
				re := regexp.MustCompile(args[0])
				for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
					if err := ts.Exec(args[1], args[2:]...); err == nil && re.MatchString(ts.ReadFile("stdout")) {
						return
					}
					if time.Now().After(deadline) {
						ts.Fatalf("no match for %q in the stdout of %s within 20s", args[0], args[1])
					}
				}
			},
			// grepenv VAR REGEXP FILE: set VAR to REGEXP's first submatch in FILE.
			"grepenv": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 3 {
					ts.Fatalf("usage: grepenv VAR REGEXP FILE")
				}
				m := regexp.MustCompile(args[1]).FindStringSubmatch(ts.ReadFile(args[2]))
				if len(m) < 2 {
					ts.Fatalf("%s does not match in %s", args[1], args[2])
				}
				ts.Setenv(args[0], m[1])
			},
			// readme WORD FILE: write to FILE the README's first ```sh block
			// that holds WORD, with the default server URL in it replaced by
			// $MANDATE_SERVER, so that a script runs the README's commands as
			// they are written.
			"readme": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 2 {
					ts.Fatalf("usage: readme WORD FILE")
				}
				b, err := os.ReadFile(readmePath)
				ts.Check(err)
				for _, block := range strings.Split(string(b), "```sh\n")[1:] {
					block, _, _ = strings.Cut(block, "```")
					if strings.Contains(block, args[0]) {
						block = strings.ReplaceAll(block, "http://127.0.0.1:7676", ts.Getenv("MANDATE_SERVER"))
						ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(block), 0o600))
						return
					}
				}
				ts.Fatalf("no sh block in the README holds %q", args[0])
			},
			// sleep DURATION
			"sleep": func(ts *testscript.TestScript, neg bool, args []string) {
				if len(args) != 1 {
					ts.Fatalf("usage: sleep DURATION")
				}
				d, err := time.ParseDuration(args[0])
				ts.Check(err)
				time.Sleep(d)
			},
		},
		Setup: func(env *testscript.Env) error {
			env.Setenv("MANDATE_ADMIN_TOKEN", "")
			// The example policy sets, so that scripts test them as they are.
			env.Setenv("EXAMPLES", examples)
			return nil
		},
	})
}

// examples is the repository's examples/policies directory.
var examples, _ = filepath.Abs(filepath.Join("..", "..", "examples", "policies"))

// readmePath is the repository's README.md.
var readmePath, _ = filepath.Abs(filepath.Join("..", "..", "README.md"))

// lockedWriter serialises writes from the server's goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

// String is what was written, when w keeps it (a *strings.Builder).
func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.w.(fmt.Stringer); ok {
		return s.String()
	}
	return ""
}
