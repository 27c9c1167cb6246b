package policy

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mandatehq/mandate"
)

//go:embed defaults/*.cedar
var defaultFS embed.FS

// DefaultPolicies returns the default policy set (file name to Cedar text)
// that [Open] writes into an empty policy directory.
func DefaultPolicies() map[string][]byte {
	out := map[string][]byte{}
	des, _ := defaultFS.ReadDir("defaults")
	for _, de := range des {
		b, _ := defaultFS.ReadFile("defaults/" + de.Name())
		out[de.Name()] = b
	}
	return out
}

// DefaultWatchInterval is how often [Engine.Watch] looks at the directory
// when given no interval.
const DefaultWatchInterval = 2 * time.Second

// Config configures an [Engine]. Zero values mean the defaults.
type Config struct {
	// Dir holds the policy set: every *.cedar file directly in it. It is
	// created (mode 0700) if missing; if it holds no *.cedar file, the
	// default set is written into it. Required.
	Dir string
	// Logger receives loads and refusals (default slog.Default()).
	Logger *slog.Logger
	// OnLoad, if set, is called after every load attempt that found the
	// files changed, the first included, with its outcome, so that the
	// caller can audit it. Calls come one at a time, in the order of the
	// loads, with the engine's reload lock held: OnLoad may call Decide
	// and Set, and MUST NOT call Reload.
	OnLoad func(LoadResult)
	// Location is the time zone of context.time's hour, minute and weekday
	// (default UTC).
	Location *time.Location
	// Now is the clock for requests without a time (default time.Now).
	Now func() time.Time
}

func (c *Config) validate() error {
	if c.Dir == "" {
		return mandate.Errorf(mandate.EINVALID, "policy: Config.Dir is required")
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Location == nil {
		c.Location = time.UTC
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// LoadResult is the outcome of one attempt to load the policy directory.
type LoadResult struct {
	Dir      string
	Hash     string   // of the files read: the set now in force if Err is nil
	Previous string   // hash of the set in force before ("" at the first load)
	Files    []string // the *.cedar files read
	Policies int      // policies in the set (0 if refused)
	Wrote    []string // default files written into an empty directory
	// Err is nil if the set was loaded and is in force. Otherwise the set
	// was refused and the previous one stays in force; Diagnostics list
	// what is wrong with it.
	Err         error
	Diagnostics []Diagnostic
	Time        time.Time
}

// Engine is the policy decision point: the policy set in force, swapped
// atomically on reload. Obtain one with [Open]. It is safe for concurrent
// use; Decide never sees a partly loaded set.
type Engine struct {
	cfg Config
	cur atomic.Pointer[Set]

	mu       sync.Mutex // serializes loads and OnLoad calls
	refused  string     // hash of the last set refused, not retried by Watch
	lastSeen string     // the directory's fingerprint at the last look
}

// Open loads the policy set in cfg.Dir, writing the default set first if the
// directory holds no policy file. An invalid set is an error: the engine
// does not start without a valid one (EINVALID, wrapping an
// [*InvalidSetError]).
func Open(cfg Config) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg}
	wrote, err := writeDefaults(cfg.Dir)
	if err != nil {
		return nil, mandate.Wrapf(err, mandate.EUNAVAILABLE, "policy: writing the default set into %s", cfg.Dir)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.load(wrote); err != nil {
		return nil, err
	}
	return e, nil
}

// Set returns the policy set in force.
func (e *Engine) Set() *Set { return e.cur.Load() }

// Decide evaluates r against the policy set in force (see [Set.Decide]). A
// zero r.Time is the engine's now; hour, minute and weekday are in
// Config.Location. It does not block; ctx is for tracing and not used yet.
func (e *Engine) Decide(_ context.Context, r Request) Decision {
	s := e.cur.Load()
	r.Time = e.time(r.Time)
	d, _ := s.decide(&r)
	return d
}

// Explain is [Set.Explain] with the set in force and the engine's clock.
func (e *Engine) Explain(r Request) Explanation {
	r.Time = e.time(r.Time)
	return e.cur.Load().Explain(r)
}

func (e *Engine) time(t time.Time) time.Time {
	if t.IsZero() {
		t = e.cfg.Now()
	}
	return t.In(e.cfg.Location)
}

// Reload reads the directory again and, if the set differs from the one in
// force and is valid, puts it in force. An invalid set is refused: the one
// in force stays, OnLoad hears of the refusal, and the error (EINVALID,
// wrapping an [*InvalidSetError]) says why.
func (e *Engine) Reload() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.load(nil)
}

// load reads and compiles the directory and swaps the set in. e.mu is held.
func (e *Engine) load(wrote []string) error {
	now := e.cfg.Now()
	prev := e.cur.Load()
	// The fingerprint before the read: a change during it shows at the
	// next poll.
	e.lastSeen = fingerprint(e.cfg.Dir)
	files, diags := readDir(e.cfg.Dir)
	res := LoadResult{Dir: e.cfg.Dir, Hash: hashFiles(files), Wrote: wrote, Time: now}
	for _, f := range files {
		res.Files = append(res.Files, f.name)
	}
	if prev != nil {
		res.Previous = prev.hash
		if len(diags) == 0 && res.Hash == prev.hash {
			return nil // unchanged
		}
	}
	var s *Set
	if len(diags) == 0 {
		s, diags = build(e.cfg.Dir, files)
	}
	log := e.cfg.Logger.With(slog.String("dir", e.cfg.Dir), slog.String("hash", res.Hash))
	if len(diags) > 0 {
		ie := &InvalidSetError{Dir: e.cfg.Dir, Hash: res.Hash, Diagnostics: diags}
		res.Err = &mandate.Error{Code: mandate.EINVALID, Message: ie.Error(), Err: ie}
		res.Diagnostics = diags
		e.refused = res.Hash
		if prev != nil {
			log.Error("policy set refused; the previous set stays in force", slog.String("in_force", prev.hash), slog.Int("problems", len(diags)), slog.String("first", diags[0].String()))
		} else {
			log.Error("policy set refused", slog.Int("problems", len(diags)), slog.String("first", diags[0].String()))
		}
		e.onLoad(res)
		return res.Err
	}
	e.cur.Store(s)
	e.refused = ""
	res.Policies = s.Len()
	if s.Len() == 0 {
		log.Warn("policy set loaded with no policies: every request is denied", slog.Int("files", len(files)))
	} else {
		log.Info("policy set loaded", slog.Int("policies", s.Len()), slog.Int("files", len(files)), slog.String("previous", res.Previous))
	}
	e.onLoad(res)
	return nil
}

func (e *Engine) onLoad(res LoadResult) {
	if e.cfg.OnLoad != nil {
		e.cfg.OnLoad(res)
	}
}

// Watch looks at the directory every interval (DefaultWatchInterval if 0)
// and reloads when the policy files changed: their names, sizes or
// modification times, and then their content hash. A set that was refused
// is not tried again until the files change again. Watch returns nil when
// ctx is done.
func (e *Engine) Watch(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultWatchInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			e.poll()
		}
	}
}

// poll reloads if the directory's fingerprint changed since the last look.
func (e *Engine) poll() {
	e.mu.Lock()
	defer e.mu.Unlock()
	fp := fingerprint(e.cfg.Dir)
	if fp == e.lastSeen {
		return
	}
	e.lastSeen = fp
	files, diags := readDir(e.cfg.Dir)
	if len(diags) == 0 {
		h := hashFiles(files)
		if h == e.cur.Load().hash || h == e.refused {
			return
		}
	}
	_ = e.load(nil) // logged and reported through OnLoad
}

// fingerprint summarises the policy files' names, sizes, modification
// times and modes, or the error reading the directory.
func fingerprint(dir string) string {
	des, err := os.ReadDir(dir)
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, de := range des {
		if !isPolicyFile(de.Name()) {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			fmt.Fprintf(&b, "%s\x00?\n", de.Name())
			continue
		}
		fmt.Fprintf(&b, "%s\x00%d\x00%d\x00%v\n", de.Name(), fi.Size(), fi.ModTime().UnixNano(), fi.Mode())
	}
	return b.String()
}

// writeDefaults creates dir if needed and, if it holds no policy file,
// writes the default set into it. It returns the names written.
func writeDefaults(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	if slices.ContainsFunc(des, func(de fs.DirEntry) bool { return isPolicyFile(de.Name()) }) {
		return nil, nil
	}
	defaults := DefaultPolicies()
	var names []string
	for name := range defaults {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := writeFile(filepath.Join(dir, name), defaults[name]); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// writeFile writes data to path through a temporary file (whose name starts
// with "." so that a load never reads it), synced, then renamed.
func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
