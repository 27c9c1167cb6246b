package evindex

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
)

// log is a reference log of metas for the tests.
type testLog struct{ metas []Meta }

func (l *testLog) add(r *rand.Rand, n int) []Meta {
	start := len(l.metas)
	for i := range n {
		idx := int64(start + i)
		m := Meta{Idx: idx, Time: idx*1000 + r.Int64N(5000), // roughly in order, as writers stamp them
			Type: fmt.Sprintf("type.%d", r.IntN(5)), Task: fmt.Sprintf("t_%d", r.IntN(40)),
			Mandate: fmt.Sprintf("m_%d", r.IntN(400)), Agent: fmt.Sprintf("a_%d", r.IntN(20))}
		if r.IntN(10) == 0 {
			m.Task, m.Mandate = "", ""
		}
		l.metas = append(l.metas, m)
	}
	return l.metas[start:]
}

func (l *testLog) read(start, n int64) ([]Meta, error) {
	return slices.Clone(l.metas[start : start+n]), nil
}

func event(m Meta) *mandate.Event {
	return &mandate.Event{Time: m.Time, Type: m.Type, Task: m.Task, Mandate: m.Mandate, Agent: m.Agent}
}

// query answers f through the index, as a store does: walk, read, match.
func query(t *testing.T, ix *Index, l *testLog, f mandate.EventFilter) []int64 {
	t.Helper()
	var out []int64
	err := ix.Walk(&f, 0, int64(len(l.metas)), f.Last, func(idx int64) error {
		if Matches(&f, idx, event(l.metas[idx])) {
			out = append(out, idx)
		}
		if f.Limit > 0 && len(out) == f.Limit {
			return ErrStop
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if f.Last {
		slices.Reverse(out)
	}
	return out
}

// brute answers f by reading the whole reference log.
func brute(l *testLog, f mandate.EventFilter) []int64 {
	var out []int64
	for i, m := range l.metas {
		if Matches(&f, int64(i), event(m)) {
			out = append(out, int64(i))
		}
	}
	if f.Limit > 0 && len(out) > f.Limit {
		if f.Last {
			out = out[len(out)-f.Limit:]
		} else {
			out = out[:f.Limit]
		}
	}
	return out
}

func randomFilter(r *rand.Rand, size int) mandate.EventFilter {
	var f mandate.EventFilter
	if r.IntN(3) == 0 {
		f.Task = fmt.Sprintf("t_%d", r.IntN(41))
	}
	if r.IntN(4) == 0 {
		f.Mandate = fmt.Sprintf("m_%d", r.IntN(401))
	}
	if r.IntN(4) == 0 {
		f.Agent = fmt.Sprintf("a_%d", r.IntN(21))
	}
	if r.IntN(3) == 0 {
		f.Type = fmt.Sprintf("type.%d", r.IntN(6))
	}
	if r.IntN(3) == 0 {
		f.Since = time.Unix(0, r.Int64N(int64(size)*1000+1))
	}
	if r.IntN(3) == 0 {
		f.Until = time.Unix(0, r.Int64N(int64(size)*1000+1))
	}
	if r.IntN(4) == 0 {
		f.After = r.Int64N(int64(size) + 1)
	}
	if r.IntN(2) == 0 {
		f.Limit = 1 + r.IntN(50)
	}
	f.Last = r.IntN(2) == 0
	return f
}

func check(t *testing.T, r *rand.Rand, ix *Index, l *testLog, n int) {
	t.Helper()
	for range n {
		f := randomFilter(r, len(l.metas))
		got, want := query(t, ix, l, f), brute(l, f)
		if !slices.Equal(got, want) {
			t.Fatalf("%+v:\n got %v\nwant %v", f, got, want)
		}
	}
}

// Over random logs, through flushes, merges and reopening, every query
// through the index returns exactly what a scan of the log returns.
func TestWalkMatchesScan(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	dir := t.TempDir()
	l := &testLog{}
	cfg := Config{Dir: dir, FlushEntries: BlockSize}
	ix, err := Open(cfg, 0, l.read)
	if err != nil {
		t.Fatal(err)
	}
	for round := range 12 {
		if err := ix.Add(l.add(r, 100+r.IntN(700))); err != nil {
			t.Fatal(err)
		}
		if round%3 == 0 {
			if err := ix.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		check(t, r, ix, l, 200)
		if round%4 == 3 { // reopen: the entries not in runs come back from the log
			ix.Close()
			if ix, err = Open(cfg, int64(len(l.metas)), l.read); err != nil {
				t.Fatal(err)
			}
			check(t, r, ix, l, 100)
		}
	}
	if err := ix.Flush(); err != nil {
		t.Fatal(err)
	}
	st := ix.Stats()
	if full := len(l.metas) / BlockSize; st.Runs == 0 || st.Runs >= full {
		t.Fatalf("the test never merged runs: %+v", st)
	}
	check(t, r, ix, l, 300)
	ix.Close()
}

// A run that a crash left behind its merge, a damaged run, one beyond the
// log and stray temporary files are dropped at Open, and what they held is
// rebuilt from the log.
func TestOpenDropsWhatDoesNotFit(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	cfg, l, runs := writtenIndex(t, r, 20*BlockSize)
	dir := cfg.Dir
	if len(runs) < 2 {
		t.Fatalf("runs: %v", runs)
	}
	// Damage the last run's checksummed part, keep its size.
	b, _ := os.ReadFile(runs[len(runs)-1])
	b[len(b)-1] ^= 1
	os.WriteFile(runs[len(runs)-1], b, 0o600)
	os.WriteFile(filepath.Join(dir, "tmp-123"), []byte("half a run"), 0o600)
	os.WriteFile(filepath.Join(dir, runName(0, BlockSize)), b, 0o600) // an input of a finished merge, damaged too

	// The log lost its tail (it was never durable): runs past it go.
	size := int64(len(l.metas) - 300)
	l.metas = l.metas[:size]
	ix, err := Open(cfg, size, l.read)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	check(t, r, ix, l, 300)
	if left, _ := filepath.Glob(filepath.Join(dir, "tmp-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// Walk sees entries while runs are written and merged beside it.
func TestWalkWhileWriting(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	l := &testLog{}
	ix, err := Open(Config{Dir: t.TempDir(), FlushEntries: BlockSize}, 0, l.read)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	metas := l.add(r, 40*BlockSize)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < len(metas); i += 100 {
			ix.Add(metas[i:min(i+100, len(metas))])
		}
	}()
	for {
		select {
		case <-done:
			ix.Flush()
			check(t, r, ix, l, 100)
			return
		default:
		}
		f := mandate.EventFilter{Task: "t_3"}
		var last int64 = -1
		ix.Walk(&f, 0, 1<<62, false, func(idx int64) error {
			if idx <= last {
				t.Fatalf("walk out of order: %d after %d", idx, last)
			}
			last = idx
			return nil
		})
	}
}

// FuzzOpenRun: a run file of any content is refused or opened; an opened
// one never makes a walk panic or read outside the file.
func FuzzOpenRun(f *testing.F) {
	dir := f.TempDir()
	l := &testLog{}
	ix, err := Open(Config{Dir: dir, FlushEntries: BlockSize}, 0, l.read)
	if err != nil {
		f.Fatal(err)
	}
	ix.Add(l.add(rand.New(rand.NewPCG(7, 8)), BlockSize))
	ix.Flush()
	ix.Close()
	runs, _ := filepath.Glob(filepath.Join(dir, "run-*"))
	good, _ := os.ReadFile(runs[0])
	f.Add(good)
	f.Add(good[:headerSize])
	f.Add([]byte(runMagic))
	path := filepath.Join(dir, "fuzz.idx")
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r, err := openRun(path)
		if err != nil {
			return
		}
		defer r.close()
		for _, h := range []uint64{0, hashKey(kindTask, "t_1"), 1<<64 - 1} {
			r.walk(h, true, -1<<63, 1<<63-1, r.from, r.to, false, func(int64) error { return nil })
			r.walk(h, true, -1<<63, 1<<63-1, r.from, r.to, true, func(int64) error { return nil })
		}
		n := 0
		r.walk(0, false, 0, 1<<40, r.from, min(r.to, r.from+4*BlockSize), true, func(int64) error { n++; return nil })
	})
}

// While runs cannot be written, full tables wait in memory, up to a
// bound; past it the oldest is dropped and queries fail, saying so,
// rather than answer without it. Memory stays bounded.
func TestUnwritableIndexStaysBounded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ix")
	l := &testLog{}
	ix, err := Open(Config{Dir: dir, FlushEntries: BlockSize}, 0, l.read)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	// The directory becomes a file: no run can be created in it.
	os.RemoveAll(dir)
	os.WriteFile(dir, []byte("in the way"), 0o600)
	r := rand.New(rand.NewPCG(9, 9))
	for range maxFrozen + 8 {
		if err := ix.Add(l.add(r, BlockSize)); err != nil {
			t.Fatal(err)
		}
	}
	if st := ix.Stats(); st.InMemory > (maxFrozen+1)*BlockSize || st.Err == nil {
		t.Fatalf("stats %+v: want at most %d entries in memory and the failure named", st, (maxFrozen+1)*BlockSize)
	}
	wantRestartError(t, ix, l)
}

// A run whose pairs were changed on disk (its header, blocks and fences
// intact) is found by the check after Open: it is deleted and queries
// fail until a restart, which rebuilds it from the log.
func TestDamagedPairsAreFound(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	cfg, l, runs := writtenIndex(t, r, 3*BlockSize)
	b, _ := os.ReadFile(runs[0])
	b[headerSize+3] ^= 0xff // a pair's hash
	os.WriteFile(runs[0], b, 0o600)

	ix, err := Open(cfg, int64(len(l.metas)), l.read)
	if err != nil {
		t.Fatal(err)
	}
	ix.bg.Wait()
	wantRestartError(t, ix, l)
	ix.Close()
	ix, err = Open(cfg, int64(len(l.metas)), l.read)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	check(t, r, ix, l, 100)
}

// writtenIndex writes n random entries to a new index as run files and
// closes it; it returns its configuration, the log and the run files.
func writtenIndex(t *testing.T, r *rand.Rand, n int) (Config, *testLog, []string) {
	t.Helper()
	l := &testLog{}
	cfg := Config{Dir: t.TempDir(), FlushEntries: BlockSize}
	ix, err := Open(cfg, 0, l.read)
	if err != nil {
		t.Fatal(err)
	}
	ix.Add(l.add(r, n))
	if err := ix.Flush(); err != nil {
		t.Fatal(err)
	}
	ix.Close()
	runs, _ := filepath.Glob(filepath.Join(cfg.Dir, "run-*"))
	return cfg, l, runs
}

// wantRestartError checks that a walk fails, saying a restart rebuilds
// the index.
func wantRestartError(t *testing.T, ix *Index, l *testLog) {
	t.Helper()
	f := mandate.EventFilter{Task: "t_1"}
	if err := ix.Walk(&f, 0, int64(len(l.metas)), false, func(int64) error { return nil }); err == nil || !strings.Contains(err.Error(), "restart") {
		t.Fatalf("a walk over a damaged index: %v", err)
	}
}

// TaskPositions names, over runs and the newest entries alike, every
// position of the tasks asked for at or after the time, in log order,
// each once: what a Walk per task would name, in one walk.
func TestTaskPositionsMatchesScan(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	l := &testLog{}
	ix, err := Open(Config{Dir: t.TempDir(), FlushEntries: BlockSize}, 0, l.read)
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	for round := range 6 {
		if err := ix.Add(l.add(r, 200+r.IntN(600))); err != nil {
			t.Fatal(err)
		}
		if round%2 == 0 {
			if err := ix.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		for range 50 {
			var tasks []string
			for range 1 + r.IntN(6) {
				tasks = append(tasks, fmt.Sprintf("t_%d", r.IntN(50))) // some never used
			}
			since := r.Int64N(int64(len(l.metas)) * 1000)
			from := r.Int64N(int64(len(l.metas)))
			got, err := ix.TaskPositions(tasks, since, from, int64(len(l.metas)))
			if err != nil {
				t.Fatal(err)
			}
			var kept, want []int64
			for _, idx := range got {
				if m := l.metas[idx]; slices.Contains(tasks, m.Task) && m.Time >= since {
					kept = append(kept, idx)
				}
			}
			for i, m := range l.metas[from:] {
				if slices.Contains(tasks, m.Task) && m.Time >= since {
					want = append(want, from+int64(i))
				}
			}
			if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) || !slices.Equal(kept, want) {
				t.Fatalf("tasks %v since %d from %d:\n got %v\nwant %v", tasks, since, from, got, want)
			}
		}
	}
}
