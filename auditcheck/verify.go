// Package auditcheck verifies a Mandate audit log offline: the
// implementation of "mandate audit verify". It reads a log in the C2SP
// tlog-tiles layout (see package [layout] and docs/auditlog.md) from a
// directory or over HTTP, checks the checkpoint's signature, recomputes
// every entry's hash and the Merkle tree, checks every hash tile, parses
// every entry as an event, and checks that the log is consistent with what
// an earlier verification saw (a small local state file).
//
// It is not a monitor (it does not follow a log) and does not check
// inclusion proofs of single entries: it verifies the whole log, which
// is what an auditor holding an export wants.
//
// # Verdicts
//
// [Verify] returns a [Report]: [Report.OK] is the verdict, and
// [Report.Problems] says precisely what is wrong, one finding per string,
// the most telling first. Verify returns an error only when it could not
// verify: the log could not be read, the key or the state file is
// unusable, the context ended.
//
// [layout]: https://pkg.go.dev/github.com/mandatehq/mandate/auditlog/layout
package auditcheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	mandate "github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditlog/layout"
)

// Options configure Verify. The zero value verifies with the key the log
// serves (trust on first use) and remembers nothing.
type Options struct {
	// VerifierKey is the log's note verifier key,
	// "<name>+<hash>+<key>". If empty, Verify reads it from the log itself
	// ("vkey"): trust on first use, which the report says. With State, a
	// key read that way is remembered and a later change is a problem.
	VerifierKey string
	// State is the path of a JSON file where Verify remembers, for each
	// log, the last checkpoint it verified and the key; "" remembers
	// nothing. It is written (mode 0600, atomically) only when the
	// verification succeeds.
	State string
	// Now is the clock, time.Now if nil. Entries dated more than a minute
	// after Now are reported as warnings.
	Now func() time.Time
	// Workers is how many entry bundles are hashed and parsed at once,
	// GOMAXPROCS if 0. Parsing the entries as events is most of the work
	// (~20 µs of CPU for an event of 700 bytes), so it is spread over the
	// cores while the tree is built in order. The report does not depend
	// on it; 1 reads and checks one bundle after the other (0 on one core
	// still reads ahead, to hide the round trips of HTTP).
	Workers int
}

// A Checkpoint is a log's tree head: its origin, size and root hash.
type Checkpoint struct {
	Origin string    `json:"origin"`
	Size   uint64    `json:"size"`
	Root   tlog.Hash `json:"root"` // base64 in JSON, as in checkpoints
}

// A Report is the outcome of a verification.
//
// In JSON, a Report also has "ok", the verdict.
type Report struct {
	Origin string    `json:"origin"` // the checkpoint's origin
	Size   uint64    `json:"size"`   // the checkpoint's tree size
	Root   tlog.Hash `json:"root"`   // the checkpoint's root hash

	// Entries is the number of entries read and checked (at most Size).
	Entries uint64 `json:"entries"`
	// Key is the note verifier key the checkpoint was checked with.
	Key string `json:"key"`
	// KeyFromLog says that Key came from the log itself, not from
	// Options.VerifierKey or the state file: trust on first use.
	KeyFromLog bool `json:"key_from_log"`
	// Previous is the checkpoint that the state file remembered for this
	// log, if any: the one this verification checked consistency with.
	Previous *Checkpoint `json:"previous,omitempty"`

	// Warnings do not fail the verification: entries out of time order,
	// a key trusted on first use.
	Warnings []string `json:"warnings"`
	// Problems fail it, most telling first.
	Problems []string `json:"problems"`
	// FirstBad is the index of the first entry found bad (changed,
	// reordered, missing, not a valid event), or -1.
	FirstBad int64 `json:"first_bad"`
}

// OK reports whether the log verified: no problems.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// MarshalJSON adds the verdict, "ok", to the report's fields.
func (r *Report) MarshalJSON() ([]byte, error) {
	type report Report
	out := struct {
		OK bool `json:"ok"`
		*report
	}{r.OK(), (*report)(r)}
	if out.Warnings == nil || out.Problems == nil {
		c := *r
		c.Warnings, c.Problems = nonNil(c.Warnings), nonNil(c.Problems)
		out.report = (*report)(&c)
	}
	return json.Marshal(out)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// String returns the report as text for a person, ending with the
// verdict.
func (r *Report) String() string {
	var b strings.Builder
	if r.Origin != "" {
		fmt.Fprintf(&b, "log:        %s\n", r.Origin)
	}
	if r.Key != "" {
		how := ""
		if r.KeyFromLog {
			how = " (served by the log itself: trust on first use)"
		}
		fmt.Fprintf(&b, "key:        %s%s\n", r.Key, how)
	}
	if r.Origin != "" {
		fmt.Fprintf(&b, "checkpoint: %d entries, root %s\n", r.Size, r.Root)
		fmt.Fprintf(&b, "checked:    %d entries\n", r.Entries)
	}
	if r.Previous != nil {
		fmt.Fprintf(&b, "previously: %d entries, root %s\n", r.Previous.Size, r.Previous.Root)
	}
	for _, w := range r.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(&b, "problem: %s\n", p)
	}
	if r.FirstBad >= 0 {
		fmt.Fprintf(&b, "first bad entry: %d\n", r.FirstBad)
	}
	switch {
	case r.OK() && r.Previous != nil:
		fmt.Fprintf(&b, "verdict: OK: every entry, hash and tile checks out, and the log is consistent with the checkpoint seen before\n")
	case r.OK():
		fmt.Fprintf(&b, "verdict: OK: every entry, hash and tile checks out\n")
	default:
		fmt.Fprintf(&b, "verdict: FAILED: %d %s\n", len(r.Problems), plural(len(r.Problems), "problem", "problems"))
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

const (
	maxDetails     = 20 // problems about single entries or tiles, beyond the summary
	maxTimeDetails = 3  // warnings about single entries' times
	futureSkew     = time.Minute
)

// Verify verifies the log that src reads. See the package documentation.
func Verify(ctx context.Context, src Source, opts Options) (*Report, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	st, err := loadState(opts.State)
	if err != nil {
		return nil, err
	}
	rep := &Report{FirstBad: -1}
	r := &run{src: src, rep: rep, now: now(), lastTime: -1 << 63, workers: opts.Workers, window: 1}
	if r.workers != 1 {
		if r.workers <= 0 {
			r.workers = runtime.GOMAXPROCS(0)
		}
		r.window = readAhead(r.workers)
	}

	// The key.
	key := strings.TrimSpace(opts.VerifierKey)
	if key == "" {
		b, err := src.ReadFile(ctx, layout.VerifierKeyPath)
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("the log serves no verifier key (%w)\nhint: pass the log's key (mandate audit verify --log-key FILE)", err)
		}
		if err != nil {
			return nil, err
		}
		key, rep.KeyFromLog = strings.TrimSpace(string(b)), true
	}
	verifier, err := note.NewVerifier(key)
	if err != nil {
		if rep.KeyFromLog {
			return nil, fmt.Errorf("the log's verifier key %q: %w", key, err)
		}
		return nil, fmt.Errorf("verifier key %q: %w\nhint: a verifier key reads <name>+<hash>+<key>, as the log serves it at /audit/vkey", key, err)
	}
	name := verifier.Name()
	prev := st.Logs[name]
	if prev != nil {
		rep.Previous = &Checkpoint{Origin: name, Size: prev.Size, Root: prev.Root}
		if prev.Key != "" && prev.Key != key {
			if rep.KeyFromLog {
				// Keep trusting the key we trusted first.
				r.summary("the log's key has changed: it serves %s, but it was %s when it was verified before (hint: if the log's key was rotated, pass the new one with --log-key)", key, prev.Key)
				if v, err := note.NewVerifier(prev.Key); err == nil {
					key, verifier, rep.KeyFromLog = prev.Key, v, false
				}
			} else {
				r.warn("the key given differs from %s, the one this log was verified with before", prev.Key)
			}
		} else if rep.KeyFromLog && prev.Key == key {
			rep.KeyFromLog = false // trusted on first use, before: it is pinned now
		}
	}
	rep.Key = key
	if rep.KeyFromLog {
		r.warn("the log's key was read from the log itself, so anyone who can change the log can change it: pin it with --log-key (trust on first use)")
	}

	// The checkpoint.
	raw, err := src.ReadFile(ctx, layout.CheckpointPath)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("no checkpoint (%w)\nhint: is this a Mandate audit log, as served at /audit or written by mandate audit export?", err)
	}
	if err != nil {
		return nil, err
	}
	cp, problem := openCheckpoint(raw, verifier)
	if problem != "" {
		r.summary("%s", problem)
		return r.finish(), nil
	}
	rep.Origin, rep.Size, rep.Root = cp.Origin, cp.Size, cp.Root
	r.verifier, r.size, r.root = verifier, cp.Size, cp.Root
	if cp.Origin != name {
		r.summary("the checkpoint's origin %q is not the name of the log key %q", cp.Origin, name)
	}
	if prev != nil {
		if cp.Size < prev.Size {
			r.summary("the log shrank (rollback): now %d entries, previously %d", cp.Size, prev.Size)
		} else {
			r.prev = prev
			if prev.Size == 0 {
				r.atPrev, r.haveAtPrev = emptyRoot, true
			}
		}
	}

	// The entries and the tiles.
	if err := r.walk(ctx); err != nil {
		return nil, err
	}
	if err := r.conclude(ctx); err != nil {
		return nil, err
	}
	rep = r.finish()
	if rep.OK() && opts.State != "" {
		st.Logs[name] = &seen{Key: key, Size: cp.Size, Root: cp.Root, Verified: r.now.UTC()}
		if err := st.save(opts.State); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// openCheckpoint checks the checkpoint's signature by the log key and
// parses it. A non-empty problem says what is wrong.
func openCheckpoint(raw []byte, verifier note.Verifier) (cp Checkpoint, problem string) {
	keyName := fmt.Sprintf("%s+%08x", verifier.Name(), verifier.KeyHash())
	n, err := note.Open(raw, note.VerifierList(verifier))
	var unverified *note.UnverifiedNoteError
	var invalid *note.InvalidSignatureError
	switch {
	case errors.As(err, &unverified):
		var by []string
		for _, s := range unverified.Note.UnverifiedSigs {
			by = append(by, fmt.Sprintf("%s+%08x", s.Name, s.Hash))
		}
		return cp, fmt.Sprintf("checkpoint is not signed by the log key %s (it is signed by %s)", keyName, strings.Join(by, ", "))
	case errors.As(err, &invalid):
		return cp, fmt.Sprintf("checkpoint signature by the log key %s is invalid: the checkpoint was changed after it was signed", keyName)
	case err != nil:
		return cp, fmt.Sprintf("checkpoint is not a signed note: %v", err)
	}
	cp.Origin, cp.Size, cp.Root, err = layout.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return cp, fmt.Sprintf("checkpoint signed by the log key, but %v", err)
	}
	return cp, ""
}

// run is the state of one verification.
type run struct {
	src      Source
	workers  int // bundles parsed at once
	window   int // bundles in flight
	rep      *Report
	now      time.Time
	verifier note.Verifier
	size     uint64
	root     tlog.Hash
	prev     *seen // what the state remembers, if it is not more than size

	summaries []string
	details   []string
	more      int // details left out

	tree       treeBuilder
	levels     [8][]tlog.Hash // the hashes of the current tile at each level ≥ 1
	broken     bool           // entries are missing: there is no tree to compute
	atPrev     tlog.Hash      // the tree hash at prev.Size
	haveAtPrev bool
	full       []fullTile // tiles above level 0 completed, to check

	present       uint64
	missingSeen   bool
	missingRunLen int  // bundles missing in a row
	stopped       bool // gave up walking after bundles went missing
	mismatches    []mismatch
	missing       []span
	tileDiffs     []tileDiff
	extra         uint64 // entries beyond size in the last bundle's file
	lastFromFull  bool   // the last, partial bundle was read from the full one
	lastTime      int64
	backwards     int
	future        int
}

// mismatch: the entry at index hashes to got, its level-0 tile says want.
type mismatch struct {
	index     uint64
	got, want tlog.Hash
	tile      string
}

// span: entries [from, to) are missing from a bundle.
type span struct {
	from, to uint64
	bundle   string
}

// fullTile: the hashes of full tile n at level, computed from the entries.
type fullTile struct {
	level  int
	n      uint64
	hashes []tlog.Hash
}

// tileDiff: the tile at path, level, index n, differs from the recomputed
// one first at hash pos.
type tileDiff struct {
	path  string
	level int
	n     uint64
	pos   int
}

func (r *run) summary(format string, args ...any) {
	r.summaries = append(r.summaries, fmt.Sprintf(format, args...))
}

func (r *run) detail(format string, args ...any) {
	if len(r.details) >= maxDetails {
		r.more++
		return
	}
	r.details = append(r.details, fmt.Sprintf(format, args...))
}

func (r *run) warn(format string, args ...any) {
	r.rep.Warnings = append(r.rep.Warnings, fmt.Sprintf(format, args...))
}

func (r *run) bad(index uint64) {
	if r.rep.FirstBad < 0 || int64(index) < r.rep.FirstBad {
		r.rep.FirstBad = int64(index)
	}
}

func (r *run) finish() *Report {
	r.rep.Problems = append(append([]string(nil), r.summaries...), r.details...)
	if r.more > 0 {
		r.rep.Problems = append(r.rep.Problems, fmt.Sprintf("and %d more %s", r.more, plural(r.more, "problem", "problems")))
	}
	r.rep.Entries = r.present
	return r.rep
}

// bundle is one entry bundle as read, with its level-0 hash tile.
type bundle struct {
	k        uint64
	want     int    // the entries the checkpoint needs from it
	path     string // the file read
	missing  bool   // no such bundle, partial or full
	fromFull bool   // the partial bundle was gone; the full one was read
	count    int    // the entries the file holds
	bad      error  // not a well-formed bundle
	hashes   []tlog.Hash
	times    []int64
	errs     []error // ParseEvent's, per entry

	tilePath    string
	tile        []byte // want*32 bytes, or nil
	tileProblem string

	err error // could not read
}

func notFound(err error) bool { return errors.Is(err, ErrNotFound) }

// read reads tile (level, n) of width w, level -1 being the entry
// bundles. A missing partial tile may have been replaced by the full one
// (C2SP allows deleting partial tiles once the full tile exists): then the
// full tile is read, and fromFull is set.
func (r *run) read(ctx context.Context, level int, n uint64, w int) (path string, data []byte, fromFull bool, err error) {
	pathOf := func(w int) string {
		if level < 0 {
			return layout.EntriesPath(n, w)
		}
		return layout.HashTilePath(uint64(level), n, w)
	}
	path = pathOf(w)
	data, err = r.src.ReadFile(ctx, path)
	if w < layout.TileWidth && notFound(err) {
		full := pathOf(layout.TileWidth)
		d, err2 := r.src.ReadFile(ctx, full)
		if err2 == nil {
			return full, d, true, nil
		}
		if !notFound(err2) {
			return full, nil, false, err2
		}
	}
	return path, data, false, err
}

// fetch reads bundle k and its level-0 tile, then, holding one of the
// workers' slots in cpu, hashes and parses the entries. It runs
// concurrently with other fetches: reading waits on the source (a round
// trip, over HTTP), parsing on a core.
func (r *run) fetch(ctx context.Context, k uint64, want int, cpu chan struct{}) *bundle {
	b := &bundle{k: k, want: want}
	var data []byte
	b.path, data, b.fromFull, b.err = r.read(ctx, -1, k, want)
	if notFound(b.err) {
		b.missing, b.err, b.path = true, nil, layout.EntriesPath(k, want)
	}
	if b.err != nil {
		return b
	}
	var tile []byte
	var tileFromFull bool
	var err error
	b.tilePath, tile, tileFromFull, err = r.read(ctx, 0, k, want)
	switch {
	case notFound(err):
		b.tilePath = layout.HashTilePath(0, k, want)
		b.tileProblem = fmt.Sprintf("%s is missing", b.tilePath)
	case err != nil:
		b.err = err
		return b
	default:
		wantLen := want * tlog.HashSize
		if tileFromFull {
			wantLen = layout.TileWidth * tlog.HashSize
		}
		if len(tile) != wantLen {
			b.tileProblem = fmt.Sprintf("%s is %d bytes, want %d", b.tilePath, len(tile), wantLen)
		} else {
			b.tile = tile[:want*tlog.HashSize]
		}
	}
	if !b.missing {
		select {
		case cpu <- struct{}{}:
		case <-ctx.Done():
			b.err = ctx.Err()
			return b
		}
		b.prepare(data)
		<-cpu
	}
	return b
}

// prepare splits, hashes and parses the bundle's entries, those that the
// checkpoint covers. It keeps what the checks need, not the entries: a
// bundle waiting to be checked holds ~64 bytes an entry.
func (b *bundle) prepare(data []byte) {
	entries, err := layout.SplitBundle(data)
	if err != nil {
		b.bad = err
		return
	}
	b.count = len(entries)
	use := min(len(entries), b.want)
	b.hashes = make([]tlog.Hash, use)
	b.times = make([]int64, use)
	b.errs = make([]error, use)
	for i, e := range entries[:use] {
		b.hashes[i] = tlog.RecordHash(e)
		ev, err := mandate.ParseEvent(e)
		if err != nil {
			b.errs[i] = err
			continue
		}
		b.times[i] = ev.Time
	}
}

// walk reads every bundle the checkpoint covers, in order, several at a
// time, and checks them one after the other: the checks and the tree are
// sequential, and cheap (two SHA-256 blocks an entry); the reading is
// spread over a window of bundles in flight and the parsing over
// r.workers cores. So the memory held is bounded by the window: at most
// r.window bundles (each at most MaxBundleSize, ~190 KiB for
// 256 events of a real server) are read or parsed, or wait, parsed, to be
// checked.
func (r *run) walk(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.tree.onNode = r.onNode
	nb := (r.size + layout.TileWidth - 1) / layout.TileWidth
	cpu := make(chan struct{}, r.workers)
	futures := make(chan chan *bundle, r.window-1) // and one being checked
	go func() {
		defer close(futures)
		for k := uint64(0); k < nb; k++ {
			want := layout.TileWidth
			if k == nb-1 && r.size%layout.TileWidth != 0 {
				want = int(r.size % layout.TileWidth)
			}
			f := make(chan *bundle, 1)
			select {
			case futures <- f:
			case <-ctx.Done():
				return
			}
			go func() { f <- r.fetch(ctx, k, want, cpu) }()
		}
	}()
	for f := range futures {
		b := <-f
		if b.err != nil {
			return b.err
		}
		if err := r.check(ctx, b, b.k == nb-1); err != nil {
			return err
		}
		if r.stopped {
			break
		}
	}
	return ctx.Err()
}

// readAhead is how many bundles walk keeps in flight for workers parsing
// them: enough to hide the round trips of HTTP (each bundle and its tile
// are two), so that the workers never wait on the network, and at least 8.
func readAhead(workers int) int {
	return min(max(8, 4*workers), 32)
}

// check checks one bundle, in order.
func (r *run) check(ctx context.Context, b *bundle, last bool) error {
	base := b.k * layout.TileWidth
	if b.missing && !r.missingSeen {
		// The first bundle missing: perhaps the log was cut to an
		// earlier size, leaving a narrower partial bundle.
		r.missingSeen = true
		for w := b.want - 1; w >= 1; w-- {
			p := layout.EntriesPath(b.k, w)
			data, err := r.src.ReadFile(ctx, p)
			if notFound(err) {
				continue
			}
			if err != nil {
				return err
			}
			b.missing, b.path = false, p
			b.prepare(data) // once, after the first missing bundle
			break
		}
	}
	if b.missing {
		r.detail("%s is missing: entries %d to %d", b.path, base, base+uint64(b.want)-1)
		r.bad(base)
		r.broken = true
		if r.stopped = r.missingRun(); r.stopped {
			return nil
		}
		if b.tileProblem != "" {
			r.detail("%s", b.tileProblem)
		}
		return nil
	}
	r.missingRunLen = 0
	if b.tileProblem != "" {
		r.detail("%s", b.tileProblem)
	}
	if b.bad != nil {
		r.detail("%s: %v", b.path, b.bad)
		r.bad(base)
		r.broken = true
		return nil
	}
	c := b.count
	if last && b.fromFull {
		r.lastFromFull = true
	}
	if c > b.want {
		if last {
			r.extra = uint64(c - b.want)
		} else {
			r.detail("%s holds %d entries, a bundle holds at most %d", b.path, c, layout.TileWidth)
			r.bad(base + uint64(b.want))
		}
	}
	use := len(b.hashes)
	if use < b.want {
		r.broken = true
	}

	// Each entry against its hash in the level-0 tile.
	switch {
	case b.tile != nil && use == b.want:
		for i, h := range b.hashes {
			if want := tileHash(b.tile, i); h != want {
				r.mismatches = append(r.mismatches, mismatch{base + uint64(i), h, want, b.tilePath})
			}
		}
	case b.tile != nil:
		r.align(b)
	case use < b.want:
		r.detail("%s holds %d entries, the checkpoint needs %d", b.path, use, b.want)
		r.bad(base + uint64(use))
	}

	// Each entry as an event, in the order of the file.
	for i, err := range b.errs {
		idx := base + uint64(i)
		if err != nil {
			if errors.Is(err, mandate.ErrNonCanonical) {
				r.detail("entry %d is not in canonical form: it was not written by Mandate, or was changed", idx)
			} else {
				r.detail("entry %d is not a valid event: %v", idx, err)
			}
			r.bad(idx)
			continue
		}
		t := b.times[i]
		if t < r.lastTime {
			r.backwards++
			if r.backwards <= maxTimeDetails {
				r.warn("entry %d is dated %s, before the entry preceding it (%s)", idx, fmtTime(t), fmtTime(r.lastTime))
			}
		}
		if time.Unix(0, t).After(r.now.Add(futureSkew)) {
			r.future++
			if r.future == 1 {
				r.warn("entry %d is dated %s, in the future", idx, fmtTime(t))
			}
		}
		r.lastTime = t
	}

	if !r.broken {
		for _, h := range b.hashes {
			r.appendLeaf(h)
		}
		for _, t := range r.full {
			if err := r.checkTile(ctx, t.level, t.n, t.hashes); err != nil {
				return err
			}
		}
		r.full = r.full[:0]
	}
	r.present += uint64(use)
	return nil
}

// missingRun counts bundles missing in a row; after two, the rest of the
// log is taken as missing too, so that a checkpoint claiming a huge size
// does not keep the verifier probing forever. It reports whether to stop.
func (r *run) missingRun() bool {
	r.missingRunLen++
	return r.missingRunLen >= 2
}

func tileHash(tile []byte, i int) tlog.Hash {
	return tlog.Hash(tile[i*tlog.HashSize : (i+1)*tlog.HashSize])
}

// align matches a short bundle's entries with the hashes of its level-0
// tile, to say which entries were deleted and which changed.
func (r *run) align(b *bundle) {
	base := b.k * layout.TileWidth
	j := 0
	missingFrom := func(from, to int) {
		if from < to {
			r.missing = append(r.missing, span{base + uint64(from), base + uint64(to), b.path})
		}
	}
	for _, h := range b.hashes {
		if j < b.want && h == tileHash(b.tile, j) {
			j++
			continue
		}
		found := -1
		for x := j + 1; x < b.want; x++ {
			if h == tileHash(b.tile, x) {
				found = x
				break
			}
		}
		if found >= 0 {
			missingFrom(j, found)
			j = found + 1
			continue
		}
		if j < b.want {
			r.mismatches = append(r.mismatches, mismatch{base + uint64(j), h, tileHash(b.tile, j), b.tilePath})
			j++
		}
	}
	missingFrom(j, b.want)
}

func (r *run) appendLeaf(h tlog.Hash) {
	r.tree.append(h)
	if r.prev != nil && r.tree.n == r.prev.Size {
		r.atPrev, r.haveAtPrev = r.tree.root(), true
	}
}

// onNode collects the hashes of the tiles above level 0 as the tree
// completes them; full tiles are checked after each bundle.
func (r *run) onNode(height int, index uint64, h tlog.Hash) {
	if height == 0 || height%layout.TileHeight != 0 {
		return
	}
	level := height / layout.TileHeight
	r.levels[level] = append(r.levels[level], h)
	if index%layout.TileWidth == layout.TileWidth-1 {
		r.full = append(r.full, fullTile{level, index / layout.TileWidth, r.levels[level]})
		r.levels[level] = nil
	}
}

// checkTile compares the log's tile (level, n) with the hashes computed
// from the entries.
func (r *run) checkTile(ctx context.Context, level int, n uint64, hashes []tlog.Hash) error {
	path, data, fromFull, err := r.read(ctx, level, n, len(hashes))
	if notFound(err) {
		r.detail("%s is missing", path)
		return nil
	}
	if err != nil {
		return err
	}
	wantLen := len(hashes) * tlog.HashSize
	if fromFull {
		wantLen = layout.TileWidth * tlog.HashSize
	}
	if len(data) != wantLen {
		r.detail("%s is %d bytes, want %d", path, len(data), wantLen)
		return nil
	}
	for i, h := range hashes {
		if tileHash(data, i) != h {
			r.tileDiffs = append(r.tileDiffs, tileDiff{path, level, n, i})
			return nil
		}
	}
	return nil
}

// conclude draws the conclusions once every bundle was checked.
func (r *run) conclude(ctx context.Context) error {
	rootOK := false
	if !r.broken {
		for level := 1; level < len(r.levels); level++ {
			if w := layout.PartialWidth(level, r.size); w > 0 {
				if len(r.levels[level]) != w {
					return fmt.Errorf("auditcheck: internal error: %d hashes at level %d, want %d", len(r.levels[level]), level, w)
				}
				n := r.size >> (layout.TileHeight * (level + 1))
				if err := r.checkTile(ctx, level, n, r.levels[level]); err != nil {
					return err
				}
			}
		}
		rootOK = r.tree.root() == r.root
	}
	if r.present < r.size {
		r.summary("truncated: checkpoint covers %d entries, only %d present", r.size, r.present)
	}
	if !r.broken && !rootOK {
		r.summary("root mismatch: entries do not match the signed checkpoint")
	}

	// What the tiles say about the entries.
	if rootOK {
		// The entries are right: the tiles are wrong.
		reported := map[string]bool{}
		for _, m := range r.mismatches {
			if !reported[m.tile] {
				reported[m.tile] = true
				r.detail("%s does not match the entries, which match the signed checkpoint: its hash for entry %d is wrong", m.tile, m.index)
			}
		}
		for _, d := range r.tileDiffs {
			r.detail("%s does not match the entries, which match the signed checkpoint: hash %d is wrong", d.path, d.pos)
		}
	} else {
		byWant := make(map[tlog.Hash]uint64, len(r.mismatches))
		for _, m := range r.mismatches {
			byWant[m.want] = m.index
		}
		for _, m := range r.mismatches {
			if j, ok := byWant[m.got]; ok && j != m.index {
				r.detail("entry %d is out of place: the tiles put it at index %d (reordered entries)", m.index, j)
			} else {
				r.detail("entry %d does not match its hash in %s: it was changed or replaced", m.index, m.tile)
			}
			r.bad(m.index)
		}
		for _, s := range r.missing {
			if s.to-s.from == 1 {
				r.detail("entry %d is missing from %s (deleted)", s.from, s.bundle)
			} else {
				r.detail("entries %d to %d are missing from %s (deleted)", s.from, s.to-1, s.bundle)
			}
			r.bad(s.from)
		}
		if len(r.mismatches) == 0 && len(r.missing) == 0 && !r.broken && len(r.tileDiffs) > 0 {
			// The level-0 tiles were rewritten to match changed entries,
			// but not every tile above.
			d := r.tileDiffs[0]
			span := uint64(1) << (layout.TileHeight * d.level)
			from := (d.n*layout.TileWidth + uint64(d.pos)) * span
			r.detail("entries %d to %d do not hash to %s (hash %d): one of them was changed, and the tiles below rewritten to match", from, min(from+span, r.size)-1, d.path, d.pos)
		}
	}

	// Entries beyond the checkpoint.
	n, err := r.uncovered(ctx)
	if err != nil {
		return err
	}
	if n > 0 {
		if newer, ok := r.newerCheckpoint(ctx); ok && newer >= r.size+n {
			r.warn("the log grew while it was verified: %d entries beyond the %d verified are covered by a newer checkpoint (%d entries); run the verification again to check them", n, r.size, newer)
		} else {
			r.summary("%d %s not covered by a signed checkpoint: the checkpoint covers %d, the log holds %d", n, plural(int(n), "entry", "entries"), r.size, r.size+n)
		}
	}

	// Consistency with what was seen before.
	if r.prev != nil && rootOK && r.haveAtPrev && r.atPrev != r.prev.Root {
		r.summary("forked history: the log's first %d entries no longer hash to the root seen before (%s, now %s)", r.prev.Size, r.prev.Root, r.atPrev)
	}

	if r.backwards > maxTimeDetails {
		r.warn("%d entries in all are dated before the entry preceding them", r.backwards)
	}
	if r.future > 1 {
		r.warn("%d entries in all are dated in the future", r.future)
	}
	return nil
}

// uncovered counts the entries the log holds beyond the checkpoint's
// size: in the last bundle's file, in a wider partial bundle or the full
// one, and in further bundles.
func (r *run) uncovered(ctx context.Context) (uint64, error) {
	n := r.extra
	k := r.size / layout.TileWidth
	w := int(r.size % layout.TileWidth)
	if w > 0 {
		if !r.lastFromFull {
			c, full, err := r.probeBundle(ctx, k, w+1)
			if err != nil {
				return 0, err
			}
			if c > w {
				n = max(n, uint64(c-w))
			}
			if !full {
				return n, nil
			}
		}
		k++
	}
	for ; ; k++ {
		c, full, err := r.probeBundle(ctx, k, 1)
		if err != nil {
			return 0, err
		}
		n += uint64(c)
		if !full {
			return n, nil
		}
	}
}

// probeBundle looks for bundle k, full or partial of width from or more,
// and returns how many entries the widest one found holds.
func (r *run) probeBundle(ctx context.Context, k uint64, from int) (count int, full bool, err error) {
	paths := []string{layout.EntriesPath(k, layout.TileWidth)}
	for w := layout.TileWidth - 1; w >= from; w-- {
		paths = append(paths, layout.EntriesPath(k, w))
	}
	// Widest first: the full bundle, then the partials. Several at a
	// time, for HTTP.
	type result struct {
		data []byte
		err  error
	}
	results := make([]result, len(paths))
	const parallel = 16
	for start := 0; start < len(paths); start += parallel {
		var wg sync.WaitGroup
		end := min(start+parallel, len(paths))
		for i := start; i < end; i++ {
			wg.Go(func() {
				d, err := r.src.ReadFile(ctx, paths[i])
				results[i] = result{d, err}
			})
		}
		wg.Wait()
		for i := start; i < end; i++ {
			res := results[i]
			if notFound(res.err) {
				continue
			}
			if res.err != nil {
				return 0, false, res.err
			}
			_, _, width, _ := layout.ParseTilePath(paths[i])
			if e, err := layout.SplitBundle(res.data); err == nil {
				width = len(e)
			}
			return width, i == 0, nil
		}
	}
	return 0, false, nil
}

// newerCheckpoint reads the checkpoint again and returns its size if it
// is validly signed for the same log.
func (r *run) newerCheckpoint(ctx context.Context) (uint64, bool) {
	raw, err := r.src.ReadFile(ctx, layout.CheckpointPath)
	if err != nil {
		return 0, false
	}
	cp, problem := openCheckpoint(raw, r.verifier)
	if problem != "" || cp.Origin != r.rep.Origin {
		return 0, false
	}
	return cp.Size, true
}

func fmtTime(ns int64) string {
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}
