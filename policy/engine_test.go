package policy

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/mandatehq/mandate"
)

// loads records OnLoad calls.
type loads struct {
	mu  sync.Mutex
	all []LoadResult
}

func (l *loads) add(r LoadResult) { l.mu.Lock(); l.all = append(l.all, r); l.mu.Unlock() }

func (l *loads) get() []LoadResult {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

func TestOpenWritesDefaults(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "policies")
	var l loads
	e, err := Open(Config{Dir: dir, Logger: discard(), OnLoad: l.add})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("dir: %v %v", fi.Mode(), err)
	}
	fi, err = os.Stat(filepath.Join(dir, "default.cedar"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("default.cedar: %v %v", fi, err)
	}
	want, err := NewSet(DefaultPolicies())
	if err != nil {
		t.Fatal(err)
	}
	got := l.get()
	if len(got) != 1 || got[0].Err != nil || got[0].Hash != want.Hash() || e.Set().Hash() != want.Hash() ||
		!slices.Equal(got[0].Wrote, []string{"default.cedar"}) || got[0].Previous != "" || got[0].Policies != want.Len() {
		t.Fatalf("load %+v; want hash %s", got, want.Hash())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}

	// A second start leaves an edited set alone.
	write(t, dir, "default.cedar", `@id("only") permit (principal, action == Action::"ListTools", resource);`)
	e, err = Open(Config{Dir: dir, Logger: discard(), OnLoad: l.add})
	if err != nil {
		t.Fatal(err)
	}
	if ids := e.Set().PolicyIDs(); !slices.Equal(ids, []string{"only"}) || len(l.get()[1].Wrote) != 0 {
		t.Fatalf("ids %v, load %+v", ids, l.get()[1])
	}
}

// TestOpenDenyAll: a directory whose only file holds no policy gets no
// defaults, and denies everything.
func TestOpenDenyAll(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "deny-all.cedar", "// nothing is allowed\n")
	e, err := Open(Config{Dir: dir, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	if e.Set().Len() != 0 {
		t.Fatal(e.Set().PolicyIDs())
	}
	for _, a := range Actions() {
		if d := e.Decide(context.Background(), Request{Action: a, Agent: AgentInfo{ID: "a"}}); d.Allow {
			t.Errorf("%s allowed", a)
		}
	}
}

func TestOpenInvalid(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "bad.cedar", `permit (principal, action == Action::"CallTool", resource) when { context.nope };`)
	var l loads
	_, err := Open(Config{Dir: dir, Logger: discard(), OnLoad: l.add})
	var ie *InvalidSetError
	if !errors.As(err, &ie) || mandate.ErrorCode(err) != mandate.EINVALID || len(ie.Diagnostics) == 0 {
		t.Fatalf("err %v", err)
	}
	if got := l.get(); len(got) != 1 || got[0].Err == nil || len(got[0].Diagnostics) == 0 {
		t.Fatalf("loads %+v", got)
	}
	if _, err := Open(Config{}); mandate.ErrorCode(err) != mandate.EINVALID {
		t.Fatalf("no dir: %v", err)
	}
}

// TestReloadRefusesInvalid: an invalid set never replaces the one in force,
// here one whose forbid it would drop; the refusal is reported, and a
// valid set then loads.
func TestReloadRefusesInvalid(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.cedar", `@id("tools") permit (principal, action == Action::"CallTool", resource);`)
	write(t, dir, "b.cedar", `@id("no-delete") forbid (principal, action == Action::"CallTool", resource) when { resource.name == "delete" };`)
	var l loads
	e, err := Open(Config{Dir: dir, Logger: discard(), OnLoad: l.add})
	if err != nil {
		t.Fatal(err)
	}
	first := e.Set().Hash()
	del := Request{Action: ActionCallTool, Agent: AgentInfo{ID: "a"}, Server: "s", Tool: "delete"}
	if d := e.Decide(context.Background(), del); d.Allow {
		t.Fatal("delete allowed")
	}

	// Nothing changed: no load.
	if err := e.Reload(); err != nil || len(l.get()) != 1 {
		t.Fatalf("%v %d", err, len(l.get()))
	}

	write(t, dir, "b.cedar", `// the forbid is gone, and this is broken: permit (`+"\n"+`forbid (`)
	err = e.Reload()
	var ie *InvalidSetError
	if !errors.As(err, &ie) || !strings.Contains(ie.Diagnostics[0].String(), filepath.Join(dir, "b.cedar")+":2:") {
		t.Fatalf("err %v", err)
	}
	if e.Set().Hash() != first {
		t.Fatal("the invalid set replaced the valid one")
	}
	if d := e.Decide(context.Background(), del); d.Allow || d.SetHash != first || !slices.Equal(d.Policies, []string{"no-delete"}) {
		t.Fatalf("after refusal: %+v", d)
	}
	got := l.get()
	if r := got[len(got)-1]; r.Err == nil || r.Previous != first || r.Hash == first || len(r.Diagnostics) == 0 {
		t.Fatalf("refusal %+v", r)
	}

	write(t, dir, "b.cedar", `@id("no-delete-v2") forbid (principal, action == Action::"CallTool", resource) when { resource.name like "delete*" };`)
	if err := e.Reload(); err != nil {
		t.Fatal(err)
	}
	if d := e.Decide(context.Background(), del); d.Allow || d.SetHash == first || !slices.Equal(d.Policies, []string{"no-delete-v2"}) {
		t.Fatalf("after reload: %+v", d)
	}
	got = l.get()
	if r := got[len(got)-1]; r.Err != nil || r.Previous != first || r.Hash != e.Set().Hash() || r.Policies != 2 {
		t.Fatalf("load %+v", r)
	}
}

// TestReloadConcurrent swaps between two valid sets and tries invalid ones
// while decisions run, with the race detector: every decision comes from
// exactly one whole valid set, as its hash and outcome show together.
func TestReloadConcurrent(t *testing.T) {
	dir := t.TempDir()
	// Set A allows the request; set B, in two files, denies it, and would
	// allow it if only its first file were loaded.
	setA := map[string]string{"a.cedar": `@id("a") permit (principal, action == Action::"CallTool", resource);`}
	setB := map[string]string{
		"b1.cedar": `@id("b-permit") permit (principal, action == Action::"CallTool", resource);`,
		"b2.cedar": `@id("b-forbid") forbid (principal, action == Action::"CallTool", resource) when { resource.name == "t" };`,
	}
	invalid := map[string]string{"b1.cedar": `@id("b-permit") permit (principal, action == Action::"CallTool", resource);`, "b2.cedar": `forbid (`}
	use := func(files map[string]string) {
		ents, _ := os.ReadDir(dir)
		for _, de := range ents {
			os.Remove(filepath.Join(dir, de.Name()))
		}
		for name, src := range files {
			write(t, dir, name, src)
		}
	}
	hashOf := func(files map[string]string) string {
		m := map[string][]byte{}
		for k, v := range files {
			m[k] = []byte(v)
		}
		s, err := NewSet(m)
		if err != nil {
			t.Fatal(err)
		}
		return s.Hash()
	}
	hashA, hashB := hashOf(setA), hashOf(setB)
	use(setA)
	e, err := Open(Config{Dir: dir, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var decisions, bad atomic.Int64
	var wg sync.WaitGroup
	req := Request{Action: ActionCallTool, Agent: AgentInfo{ID: "a"}, Server: "s", Tool: "t", Args: map[string]any{"x": "y"}}
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				d := e.Decide(context.Background(), req)
				decisions.Add(1)
				switch {
				case d.SetHash == hashA && d.Allow && slices.Equal(d.Policies, []string{"a"}):
				case d.SetHash == hashB && !d.Allow && slices.Equal(d.Policies, []string{"b-forbid"}):
				default:
					if bad.Add(1) == 1 {
						t.Errorf("decision from no whole valid set: %+v", d)
					}
				}
			}
		})
	}
	for i := range 60 {
		switch i % 3 {
		case 0:
			use(setB)
			if err := e.Reload(); err != nil {
				t.Fatal(err)
			}
		case 1:
			before := e.Set().Hash()
			use(invalid)
			if err := e.Reload(); err == nil {
				t.Fatal("invalid set loaded")
			}
			if e.Set().Hash() != before {
				t.Fatal("refused set in force")
			}
		case 2:
			use(setA)
			if err := e.Reload(); err != nil {
				t.Fatal(err)
			}
		}
	}
	stop.Store(true)
	wg.Wait()
	if decisions.Load() == 0 || bad.Load() > 0 {
		t.Fatalf("%d decisions, %d bad", decisions.Load(), bad.Load())
	}
}

// TestWatch runs Watch in a synctest bubble: the directory is looked at
// every interval of fake time, a change loads, an invalid set is refused
// once (not again at every look), and a fix loads.
func TestWatch(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.cedar", `@id("v1") permit (principal, action == Action::"CallTool", resource);`)
	synctest.Test(t, func(t *testing.T) {
		var l loads
		e, err := Open(Config{Dir: dir, Logger: discard(), OnLoad: l.add})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- e.Watch(ctx, time.Second) }()
		tick := func() { time.Sleep(time.Second + time.Millisecond); synctest.Wait() }

		tick()
		if n := len(l.get()); n != 1 {
			t.Fatalf("%d loads with no change", n)
		}
		write(t, dir, "p.cedar", `@id("v2") permit (principal, action == Action::"CallTool", resource) when { context.risk < 50 };`)
		tick()
		if ids := e.Set().PolicyIDs(); !slices.Equal(ids, []string{"v2"}) {
			t.Fatalf("ids %v after change", ids)
		}
		write(t, dir, "p.cedar", `@id("v3") permit (principal, action == Action::"CallTool", resource) when { context.risk < };`)
		tick()
		tick()
		got := l.get()
		if len(got) != 3 || got[2].Err == nil || !slices.Equal(e.Set().PolicyIDs(), []string{"v2"}) {
			t.Fatalf("loads %d, last %+v, ids %v", len(got), got[len(got)-1], e.Set().PolicyIDs())
		}
		write(t, dir, "p.cedar", `@id("v4") permit (principal, action == Action::"CallTool", resource) when { context.risk < 40 };`)
		write(t, dir, "q.cedar", `@id("v4b") forbid (principal, action == Action::"CallTool", resource) when { context.risk > 90 };`)
		tick()
		if ids := e.Set().PolicyIDs(); !slices.Equal(ids, []string{"v4", "v4b"}) {
			t.Fatalf("ids %v after fix", ids)
		}
		os.Remove(filepath.Join(dir, "q.cedar"))
		tick()
		if ids := e.Set().PolicyIDs(); !slices.Equal(ids, []string{"v4"}) {
			t.Fatalf("ids %v after removal", ids)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
