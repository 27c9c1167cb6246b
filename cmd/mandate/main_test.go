package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	// The crash test runs the server as a child process: this binary, told
	// by the environment to be mandate.
	if os.Getenv("MANDATE_TEST_AS_MAIN") == "1" {
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
			// server [--demo] [DATA]: start a server; sets MANDATE_SERVER and DATA.
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
				for _, a := range args {
					switch a {
					case "--demo":
						m.Demo = true
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
			return nil
		},
	})
}

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
