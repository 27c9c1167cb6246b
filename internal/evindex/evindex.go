// Package evindex is the audit log's query index: which log positions
// hold the events of a task, a mandate, an agent or a type, and roughly
// when each block of 256 entries happened.
//
// It is built for an append-only log written at 100,000 events a second:
//
//   - An entry costs four 16-byte pairs (the 64-bit hash of a key, the
//     position) appended to an in-memory table, and its time. No B-tree,
//     no SQL, nothing on the write path but a few appends.
//   - Every FlushEntries entries the table is sorted and written, by a
//     goroutine of its own, as an immutable run file; runs of a similar
//     size are merged four into one, so that a query opens few of them
//     (log-structured merging, as LSM trees do, on fixed-size pairs).
//   - Runs cover adjacent, disjoint ranges of positions, so a query walks
//     them in log order (or backwards, for the newest events) and stops as
//     soon as it has enough.
//
// The index holds nothing that is not in the log: it is never fsynced on
// the write path, and whatever a crash loses of it is rebuilt from the log
// at Open. Hashes may collide, so its answers are candidates: the caller
// reads the entries and keeps those that match exactly (Matches). Keys are
// hashed with FNV-1a, which is not collision-resistant against a chooser
// of keys; a collision costs a query one entry read, never a wrong answer.
//
// Why not SQLite, as before: its index database cost 18 µs of CPU per
// event (a row and three secondary B-trees, in transpiled C), a sixth of a
// delegation; this costs about one. Why not an LSM library such as Pebble:
// the keys here are fixed-size pairs that sort and merge in a few hundred
// lines, and the module stays lean.
package evindex

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
)

// Meta is what the index keeps of one log entry.
type Meta struct {
	Idx                        int64
	Time                       int64 // ns
	Type, Task, Mandate, Agent string
}

// MetaOf returns the Meta of event e at position idx.
func MetaOf(idx int64, e *mandate.Event) Meta {
	return Meta{Idx: idx, Time: e.Time, Type: e.Type, Task: e.Task, Mandate: e.Mandate, Agent: e.Agent}
}

// Matches reports whether event e at position idx matches f exactly.
func Matches(f *mandate.EventFilter, idx int64, e *mandate.Event) bool {
	return (f.Task == "" || e.Task == f.Task) && (f.Mandate == "" || e.Mandate == f.Mandate) &&
		(f.Agent == "" || e.Agent == f.Agent) && (f.Type == "" || e.Type == f.Type) &&
		(f.Since.IsZero() || e.Time >= f.Since.UnixNano()) && (f.Until.IsZero() || e.Time < f.Until.UnixNano()) &&
		idx >= f.After
}

// Key kinds: the first byte hashed, so that a task and an agent of the
// same name are different keys.
const (
	kindType    byte = 'y'
	kindTask    byte = 't'
	kindMandate byte = 'm'
	kindAgent   byte = 'a'
)

// keysPerEntry is the most keys one entry has.
const keysPerEntry = 4

// hashKey is 64-bit FNV-1a of kind and s.
func hashKey(kind byte, s string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	h = (h ^ uint64(kind)) * prime
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * prime
	}
	return h
}

// lookupKey is the key a query walks: the most selective field it sets
// (a mandate has few events, a task more, an agent more still, a type
// the most). ok is false if the filter sets none.
func lookupKey(f *mandate.EventFilter) (h uint64, ok bool) {
	switch {
	case f.Mandate != "":
		return hashKey(kindMandate, f.Mandate), true
	case f.Task != "":
		return hashKey(kindTask, f.Task), true
	case f.Agent != "":
		return hashKey(kindAgent, f.Agent), true
	case f.Type != "":
		return hashKey(kindType, f.Type), true
	}
	return 0, false
}

// BlockSize is the number of entries a time range of a run covers: a
// C2SP tlog-tiles entry bundle.
const BlockSize = 256

// DefaultFlushEntries is how many entries the in-memory table holds
// before it is written as a run: ~4 MiB of pairs, about one run every
// second at 65,000 events a second.
const DefaultFlushEntries = 1 << 16

// mergeFanIn runs of one size tier are merged into one.
const mergeFanIn = 4

// maxFrozen bounds the full tables held in memory while runs cannot be
// written (a full disk, say): past it the oldest is dropped, and queries
// fail, saying so, until a restart rebuilds the index from the log.
const maxFrozen = 64

// retryAfter is how long the background writer waits after a failure.
const retryAfter = time.Second

// Config configures an Index.
type Config struct {
	// Dir holds the run files; it is created (0700) if needed.
	Dir string
	// FlushEntries is the in-memory table's size in entries, a multiple of
	// BlockSize (DefaultFlushEntries if 0).
	FlushEntries int
	Logger       *slog.Logger
}

// Index is the query index of one log. Add appends to it; Walk reads it.
// Both may be called concurrently.
type Index struct {
	cfg  Config
	log  *slog.Logger
	work chan struct{}
	stop chan struct{}
	done chan struct{}

	mu     sync.RWMutex
	runs   []*run      // adjacent, in log order
	frozen []*memtable // full tables being written as runs, in log order
	mem    *memtable   // the newest entries
	failed error       // the last background failure, for Stats
	// lost is set when full tables were dropped unwritten (maxFrozen):
	// queries fail until a restart rebuilds the index from the log.
	lost bool
	// writing serializes the background work with Close.
	writing sync.Mutex
	bg      sync.WaitGroup // verifyRuns
}

// Open opens the index in cfg.Dir for a log of size entries and catches
// it up: runs that do not form a prefix of the log are dropped, and the
// entries after the last run are read back through read (start, count),
// which returns their Metas. A damaged run is dropped and rebuilt the
// same way, with a warning.
func Open(cfg Config, size int64, read func(start, n int64) ([]Meta, error)) (*Index, error) {
	if cfg.FlushEntries <= 0 {
		cfg.FlushEntries = DefaultFlushEntries
	}
	if cfg.FlushEntries%BlockSize != 0 {
		return nil, fmt.Errorf("evindex: FlushEntries %d is not a multiple of %d", cfg.FlushEntries, BlockSize)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("evindex: %w", err)
	}
	ix := &Index{cfg: cfg, log: cfg.Logger, work: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	runs, err := ix.openRuns(size)
	if err != nil {
		return nil, err
	}
	ix.runs = runs
	opened := slices.Clone(runs) // for verifyRuns: ix.runs changes from here on
	next := int64(0)
	if len(runs) > 0 {
		next = runs[len(runs)-1].to
	}
	ix.mem = newMemtable(next, cfg.FlushEntries)
	const chunk = 4096
	for start := next; start < size; start += chunk {
		metas, err := read(start, min(chunk, size-start))
		if err != nil {
			ix.closeRuns()
			return nil, fmt.Errorf("evindex: catching up from the log: %w", err)
		}
		if err := ix.addLocked(metas); err != nil {
			ix.closeRuns()
			return nil, err
		}
		// Write the full tables as they come: a long catch-up (a first
		// start on a large log) must not pile them up in memory.
		for len(ix.frozen) > 0 {
			if !ix.step() {
				ix.closeRuns()
				return nil, fmt.Errorf("evindex: catching up from the log: %w", ix.failed)
			}
		}
	}
	go ix.loop()
	ix.bg.Add(1)
	go func() {
		defer ix.bg.Done()
		ix.verifyRuns(opened)
	}()
	ix.kick()
	return ix, nil
}

// verifyRuns checks the pairs of the runs Open found against their
// checksums (Open read only their headers, blocks and fences), in the
// background. A damaged run could hide events from queries (a revocation
// by agent that misses a live mandate, say): it is deleted, and queries
// fail until a restart rebuilds it from the log.
func (ix *Index) verifyRuns(runs []*run) {
	for _, r := range runs {
		select {
		case <-ix.stop:
			return
		default:
		}
		ix.writing.Lock() // not beside a merge that reads and replaces it
		ix.mu.RLock()
		live := slices.Contains(ix.runs, r)
		ix.mu.RUnlock()
		var err error
		if live {
			err = r.checkPairs()
		}
		ix.writing.Unlock()
		if err != nil {
			ix.log.Error("evindex: a run is damaged; queries fail until a restart rebuilds it from the log", "run", r.path, "err", err)
			os.Remove(r.path)
			ix.mu.Lock()
			ix.lost, ix.failed = true, err
			ix.mu.Unlock()
			return
		}
	}
}

// openRuns reads the run files in the directory and keeps the chain that
// starts at position 0 and stays within the log's size; it deletes the
// rest (left over by a merge that a crash interrupted, beyond a gap, or
// damaged).
func (ix *Index) openRuns(size int64) ([]*run, error) {
	names, err := os.ReadDir(ix.cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("evindex: %w", err)
	}
	type named struct {
		name     string
		from, to int64
	}
	var found []named
	for _, e := range names {
		n := e.Name()
		if strings.HasPrefix(n, "tmp-") {
			os.Remove(filepath.Join(ix.cfg.Dir, n))
			continue
		}
		from, to, ok := parseRunName(n)
		if !ok {
			continue
		}
		found = append(found, named{n, from, to})
	}
	// By start, the widest first: a merged run wins over its inputs.
	slices.SortFunc(found, func(a, b named) int {
		return cmp.Or(cmp.Compare(a.from, b.from), cmp.Compare(b.to, a.to))
	})
	var runs []*run
	next := int64(0)
	for _, f := range found {
		path := filepath.Join(ix.cfg.Dir, f.name)
		if f.from != next || f.to > size {
			os.Remove(path)
			continue
		}
		r, err := openRun(path)
		if err != nil {
			ix.log.Warn("evindex: dropping a damaged run; it is rebuilt from the log", "run", f.name, "err", err)
			os.Remove(path)
			continue
		}
		if r.from != f.from || r.to != f.to {
			r.close()
			os.Remove(path)
			continue
		}
		runs = append(runs, r)
		next = r.to
	}
	return runs, nil
}

func runName(from, to int64) string {
	return fmt.Sprintf("run-%020d-%020d.idx", from, to)
}

func parseRunName(n string) (from, to int64, ok bool) {
	rest, ok := strings.CutPrefix(n, "run-")
	if !ok {
		return 0, 0, false
	}
	rest, ok = strings.CutSuffix(rest, ".idx")
	if !ok {
		return 0, 0, false
	}
	a, b, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, 0, false
	}
	from, err1 := strconv.ParseInt(a, 10, 64)
	to, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || from < 0 || to <= from {
		return 0, 0, false
	}
	return from, to, true
}

// Add indexes entries that are in the log, in log order, following the
// ones before. It does not block on I/O.
func (ix *Index) Add(metas []Meta) error {
	ix.mu.Lock()
	err := ix.addLocked(metas)
	ix.mu.Unlock()
	ix.kick()
	return err
}

func (ix *Index) addLocked(metas []Meta) error {
	for i := range metas {
		m := &metas[i]
		if want := ix.mem.from + int64(ix.mem.len()); m.Idx != want {
			return fmt.Errorf("evindex: entry %d added where %d was expected", m.Idx, want)
		}
		ix.mem.add(m)
		if ix.mem.len() == ix.cfg.FlushEntries {
			if len(ix.frozen) == maxFrozen {
				ix.frozen, ix.lost = ix.frozen[1:], true
			}
			ix.frozen = append(ix.frozen, ix.mem)
			ix.mem = newMemtable(ix.mem.from+int64(ix.mem.len()), ix.cfg.FlushEntries)
		}
	}
	return nil
}

func (ix *Index) kick() {
	select {
	case ix.work <- struct{}{}:
	default:
	}
}

// loop writes frozen tables as runs and merges runs, in the background.
func (ix *Index) loop() {
	defer close(ix.done)
	for {
		select {
		case <-ix.stop:
			return
		case <-ix.work:
		}
		for ix.step() {
			select {
			case <-ix.stop:
				return
			default:
			}
		}
		ix.mu.RLock()
		failed := ix.failed != nil
		ix.mu.RUnlock()
		if failed { // do not spin on a failing disk
			select {
			case <-ix.stop:
				return
			case <-time.After(retryAfter):
				ix.kick()
			}
		}
	}
}

// step does one piece of background work and reports whether there may
// be more.
func (ix *Index) step() bool {
	ix.writing.Lock()
	defer ix.writing.Unlock()
	ix.mu.RLock()
	var mt *memtable
	if len(ix.frozen) > 0 {
		mt = ix.frozen[0]
	}
	ix.mu.RUnlock()
	if mt != nil {
		r, err := ix.writeRun(mt)
		if err != nil {
			ix.setFailed(err)
			return false
		}
		ix.mu.Lock()
		if len(ix.frozen) > 0 && ix.frozen[0] == mt { // not dropped meanwhile
			ix.runs = append(ix.runs, r)
			ix.frozen = ix.frozen[1:]
			ix.failed = nil
		} else {
			r.release()
			os.Remove(r.path)
		}
		ix.mu.Unlock()
		return true
	}
	ix.mu.RLock()
	inputs := mergeCandidates(ix.runs, ix.cfg.FlushEntries)
	ix.mu.RUnlock()
	if inputs == nil {
		return false
	}
	merged, err := mergeRuns(ix.cfg.Dir, inputs)
	if err != nil {
		ix.setFailed(err)
		return false
	}
	ix.mu.Lock()
	i := slices.Index(ix.runs, inputs[0])
	ix.runs = slices.Replace(ix.runs, i, i+len(inputs), merged)
	ix.mu.Unlock()
	for _, r := range inputs {
		os.Remove(r.path)
		r.release() // closed once the last query using it is done
	}
	return true
}

func (ix *Index) setFailed(err error) {
	ix.log.Error("evindex: writing the index failed; queries still answer from memory", "err", err)
	ix.mu.Lock()
	ix.failed = err
	ix.mu.Unlock()
}

// tier is the size class of a run of n entries: runs of one tier are
// merged together.
func tier(n, flush int64) int {
	t := 0
	for n >= flush*mergeFanIn {
		n /= mergeFanIn
		t++
	}
	return t
}

// mergeCandidates returns mergeFanIn adjacent runs of the same tier, the
// oldest such group, or nil.
func mergeCandidates(runs []*run, flush int) []*run {
	for i := 0; i+mergeFanIn <= len(runs); i++ {
		t := tier(runs[i].to-runs[i].from, int64(flush))
		same := true
		for _, r := range runs[i+1 : i+mergeFanIn] {
			if tier(r.to-r.from, int64(flush)) != t {
				same = false
				break
			}
		}
		if same {
			return slices.Clone(runs[i : i+mergeFanIn])
		}
	}
	return nil
}

// Close stops the background work. The entries not yet in a run are not
// written: Open reads them back from the log.
func (ix *Index) Close() error {
	close(ix.stop)
	<-ix.done
	ix.bg.Wait()
	ix.writing.Lock()
	defer ix.writing.Unlock()
	ix.closeRuns()
	return nil
}

func (ix *Index) closeRuns() {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for _, r := range ix.runs {
		r.release()
	}
	ix.runs = nil
}

// Stats describe the index.
type Stats struct {
	Runs, InMemory int   // run files; entries held in memory
	Err            error // the last failure of the background writer
}

// Stats returns the index's counters.
func (ix *Index) Stats() Stats {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	n := ix.mem.len()
	for _, m := range ix.frozen {
		n += m.len()
	}
	return Stats{Runs: len(ix.runs), InMemory: n, Err: ix.failed}
}

// Flush writes the tables in memory that are full as runs and does the
// merges due, before it returns: for tests and benchmarks.
func (ix *Index) Flush() error {
	for ix.step() {
	}
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.failed
}

// ErrStop, returned by a Walk callback, ends the walk without an error.
var ErrStop = errors.New("evindex: stop")

// Walk calls fn with the positions in [from, to) that may hold an event
// matching f, in log order (or in reverse if desc), until fn returns an
// error (ErrStop ends the walk with nil). It skips entries whose time
// cannot match f's time range. The caller reads each entry and keeps the
// ones Matches keeps. Walk sees every entry Add returned for.
func (ix *Index) Walk(f *mandate.EventFilter, from, to int64, desc bool, fn func(idx int64) error) error {
	from = max(from, f.After, 0)
	if from >= to {
		return nil
	}
	var since, until int64 = -1 << 63, 1<<63 - 1
	if !f.Since.IsZero() {
		since = f.Since.UnixNano()
	}
	if !f.Until.IsZero() {
		until = f.Until.UnixNano()
	}
	if since >= until {
		return nil
	}
	h, keyed := lookupKey(f)
	runs, memCopies, release, err := ix.acquire()
	if err != nil {
		return err
	}
	defer release()
	type part struct {
		walk     func(lo, hi int64, desc bool, fn func(int64) error) error
		from, to int64
	}
	parts := make([]part, 0, len(runs)+len(memCopies))
	for _, r := range runs {
		parts = append(parts, part{func(lo, hi int64, desc bool, fn func(int64) error) error {
			return r.walk(h, keyed, since, until, lo, hi, desc, fn)
		}, r.from, r.to})
	}
	for i := range memCopies {
		m := &memCopies[i]
		parts = append(parts, part{func(lo, hi int64, desc bool, fn func(int64) error) error {
			return m.walk(h, keyed, since, until, lo, hi, desc, fn)
		}, m.from, m.from + int64(m.len())})
	}
	if desc {
		slices.Reverse(parts)
	}
	for _, p := range parts {
		lo, hi := max(from, p.from), min(to, p.to)
		if lo >= hi {
			continue
		}
		if err := p.walk(lo, hi, desc, fn); err != nil {
			if errors.Is(err, ErrStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

// acquire returns a snapshot of the parts, in log order: the runs stay
// open until release.
func (ix *Index) acquire() (runs []*run, mems []memtable, release func(), err error) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if ix.lost {
		return nil, nil, nil, fmt.Errorf("evindex: part of the index was dropped while it could not be written (%v): restart to rebuild it from the log", ix.failed)
	}
	runs = slices.Clone(ix.runs)
	for _, r := range runs {
		r.acquire()
	}
	for _, m := range append(slices.Clone(ix.frozen), ix.mem) {
		mems = append(mems, m.snapshot())
	}
	return runs, mems, func() {
		for _, r := range runs {
			r.release()
		}
	}, nil
}

// TaskPositions returns the positions in [from, to) that may hold an
// event of one of tasks at or after since (ns), in log order: one walk
// for many tasks, which costs each run a lookup per task and the newest
// entries one pass, where a Walk per task would pass over the newest
// entries once per task. The caller reads each entry and keeps the ones
// that match exactly.
func (ix *Index) TaskPositions(tasks []string, since, from, to int64) ([]int64, error) {
	from = max(from, 0)
	if from >= to || len(tasks) == 0 {
		return nil, nil
	}
	hs := make(map[uint64]struct{}, len(tasks))
	for _, t := range tasks {
		if t != "" {
			hs[hashKey(kindTask, t)] = struct{}{}
		}
	}
	sorted := slices.Sorted(maps.Keys(hs))
	runs, mems, release, err := ix.acquire()
	if err != nil {
		return nil, err
	}
	defer release()
	const until = 1<<63 - 1
	var out []int64
	add := func(idx int64) error { out = append(out, idx); return nil }
	for _, r := range runs {
		lo, hi := max(from, r.from), min(to, r.to)
		if lo >= hi {
			continue
		}
		n := len(out)
		for _, h := range sorted {
			if err := r.walk(h, true, since, until, lo, hi, false, add); err != nil {
				return nil, err
			}
		}
		slices.Sort(out[n:]) // by position, not by task
	}
	for i := range mems {
		m := &mems[i]
		lo, hi := max(from, m.from), min(to, m.from+int64(m.len()))
		for idx := lo; idx < hi; idx++ {
			j := int(idx - m.from)
			if _, ok := hs[m.keys[j*keysPerEntry+1]]; ok && m.times[j] >= since {
				out = append(out, idx)
			}
		}
	}
	return slices.Compact(out), nil
}

// memtable is the newest entries: their key hashes (0 where the field is
// empty) and times, in log order.
type memtable struct {
	from  int64
	keys  []uint64 // keysPerEntry per entry
	times []int64
}

func newMemtable(from int64, capacity int) *memtable {
	return &memtable{from: from, keys: make([]uint64, 0, capacity*keysPerEntry), times: make([]int64, 0, capacity)}
}

func (m *memtable) len() int { return len(m.times) }

func (m *memtable) add(e *Meta) {
	m.keys = append(m.keys, keyOrZero(kindType, e.Type), keyOrZero(kindTask, e.Task),
		keyOrZero(kindMandate, e.Mandate), keyOrZero(kindAgent, e.Agent))
	m.times = append(m.times, e.Time)
}

func keyOrZero(kind byte, s string) uint64 {
	if s == "" {
		return 0
	}
	return hashKey(kind, s)
}

// snapshot returns a view of m as it is now: entries are only appended,
// so the view stays valid while m grows.
func (m *memtable) snapshot() memtable {
	return memtable{from: m.from, keys: m.keys[:len(m.keys):len(m.keys)], times: m.times[:len(m.times):len(m.times)]}
}

func (m *memtable) walk(h uint64, keyed bool, since, until, lo, hi int64, desc bool, fn func(int64) error) error {
	match := func(i int) bool {
		if t := m.times[i]; t < since || t >= until {
			return false
		}
		if !keyed {
			return true
		}
		k := m.keys[i*keysPerEntry : i*keysPerEntry+keysPerEntry]
		return k[0] == h || k[1] == h || k[2] == h || k[3] == h
	}
	a, b := int(lo-m.from), int(hi-m.from)
	if desc {
		for i := b - 1; i >= a; i-- {
			if match(i) {
				if err := fn(m.from + int64(i)); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for i := a; i < b; i++ {
		if match(i) {
			if err := fn(m.from + int64(i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// pairs returns m's keys as sorted pairs, and its blocks' time ranges.
func (m *memtable) pairs() ([]pair, []timeRange) {
	ps := make([]pair, 0, len(m.keys))
	for i, k := range m.keys {
		if k != 0 {
			ps = append(ps, pair{h: k, idx: uint64(m.from) + uint64(i/keysPerEntry)})
		}
	}
	// An entry may carry one hash twice (a task and an agent that hash
	// alike): keep one.
	slices.SortFunc(ps, comparePairs)
	ps = slices.Compact(ps)
	blocks := make([]timeRange, 0, (len(m.times)+BlockSize-1)/BlockSize)
	for i := 0; i < len(m.times); i += BlockSize {
		blocks = append(blocks, spanOf(m.times[i:min(i+BlockSize, len(m.times))]))
	}
	return ps, blocks
}

func spanOf(times []int64) timeRange {
	tr := timeRange{min: times[0], max: times[0]}
	for _, t := range times[1:] {
		tr.min, tr.max = min(tr.min, t), max(tr.max, t)
	}
	return tr
}

// pair is one key of one entry: the key's hash and the entry's position.
type pair struct{ h, idx uint64 }

func comparePairs(a, b pair) int {
	return cmp.Or(cmp.Compare(a.h, b.h), cmp.Compare(a.idx, b.idx))
}

// timeRange is the earliest and latest event time of a block.
type timeRange struct{ min, max int64 }
