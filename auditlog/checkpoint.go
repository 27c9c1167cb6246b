package auditlog

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mandatehq/mandate/auditlog/layout"
	"github.com/mandatehq/mandate/internal/atomicfile"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// LogKey signs the log's checkpoints (C2SP signed-note, Ed25519). Its name
// is the log's origin, so the origin stays the same for the log's life
// even if the server's address changes.
type LogKey struct {
	Signer   note.Signer
	Verifier note.Verifier
	VKey     string // the verifier key text, public
}

// Origin is the log's origin: the key's name.
func (k *LogKey) Origin() string { return k.Signer.Name() }

// LogValue logs the key's name only.
func (k *LogKey) LogValue() slog.Value { return slog.StringValue(k.Signer.Name()) }

// OpenLogKey loads the log key from path (its signer key text, mode 0600)
// and path + ".pub" (the verifier key text), creating both named origin if
// path does not exist.
func OpenLogKey(path, origin string) (*LogKey, error) {
	skey, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		s, v, err := note.GenerateKey(rand.Reader, origin)
		if err != nil {
			return nil, fmt.Errorf("audit log key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(path+".pub", []byte(v+"\n"), 0o644); err != nil {
			return nil, err
		}
		if err := atomicfile.Write(path, []byte(s+"\n"), 0o600); err != nil {
			return nil, err
		}
		skey = []byte(s)
	} else if err != nil {
		return nil, fmt.Errorf("audit log key: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("audit log key %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	vkey, err := os.ReadFile(path + ".pub")
	if err != nil {
		return nil, fmt.Errorf("audit log key: %w", err)
	}
	signer, err := note.NewSigner(strings.TrimSpace(string(skey)))
	if err != nil {
		return nil, fmt.Errorf("audit log key %s does not parse (the key itself is not shown)", path)
	}
	verifier, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		return nil, fmt.Errorf("audit log verifier key %s.pub: %w", path, err)
	}
	if verifier.Name() != signer.Name() || verifier.KeyHash() != signer.KeyHash() {
		return nil, fmt.Errorf("audit log key %s and %s.pub do not match", path, path)
	}
	return &LogKey{Signer: signer, Verifier: verifier, VKey: strings.TrimSpace(string(vkey))}, nil
}

// DefaultCheckpointInterval is how often a checkpoint is signed while
// entries arrive.
const DefaultCheckpointInterval = time.Second

// Publisher signs checkpoints of the committed log: on demand, and every
// Interval while the log grows. Each is saved before it is published.
type Publisher struct {
	Key  *LogKey
	Head func() (int64, tlog.Hash) // the committed log
	// TreeHash returns the root of the committed log's first size entries,
	// so that a new checkpoint is signed only for an extension of the last
	// one. Required once a checkpoint exists.
	TreeHash func(size int64) (tlog.Hash, error)
	Save     func(ctx context.Context, size int64, note []byte) error // durable
	// HeadFile, if set, keeps the latest signed checkpoint apart from the
	// store (the server's keys/log.head, beside the log key): written
	// once the store has saved a checkpoint, and checked by Restore. Whoever
	// wipes or rewrites the log and deletes the store's checkpoints still
	// leaves it behind, so the server refuses to sign over the change.
	HeadFile string
	Interval time.Duration
	Logger   *slog.Logger

	mu     sync.Mutex // serialises Publish; readers use latest
	latest atomic.Pointer[signedCheckpoint]
}

type signedCheckpoint struct {
	note []byte
	size int64
	root tlog.Hash
}

// ErrLogReplaced is wrapped by Restore's refusal of a committed log that
// does not extend a checkpoint signed before: entries were removed or the
// history rewritten. Nothing is changed; restore the log from a backup or
// an export.
var ErrLogReplaced = errors.New("the audit log does not extend its last signed checkpoint")

// Restore makes the latest of two checkpoints signed before the latest:
// saved, the store's (nil if it has none), and the one in HeadFile. It
// first checks that the committed log extends each (RFC 6962 §2.1.2 in
// spirit: the log holds at least the checkpoint's entries, and its first
// that many hash to the checkpoint's root), and refuses, wrapping
// ErrLogReplaced, if it does not.
//
// Restore writes HeadFile when the store's checkpoint is the newer: a
// data directory from before HeadFile (its checkpoint trusted once, as
// logged), or a crash between a checkpoint's save and HeadFile's write.
func (p *Publisher) Restore(saved []byte) error {
	stored, err := p.open(saved, "the saved checkpoint")
	if err != nil {
		return err
	}
	var kept *signedCheckpoint
	if p.HeadFile != "" {
		b, err := os.ReadFile(p.HeadFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return fmt.Errorf("audit log: %w", err)
		default:
			if kept, err = p.open(b, p.HeadFile); err != nil {
				return err
			}
		}
	}
	for _, c := range []struct {
		cp    *signedCheckpoint
		where string
	}{{kept, p.HeadFile}, {stored, "the database's log_checkpoints"}} {
		if c.cp == nil {
			continue
		}
		if err := p.extends(c.cp, c.where); err != nil {
			return err
		}
	}
	latest := stored
	switch {
	case kept == nil && stored == nil:
		// A server that keeps its checkpoint apart (HeadFile) signs one
		// at its first start, before it accepts anything: a log with
		// entries and no checkpoint anywhere had them deleted, and would
		// be signed whatever its history now is.
		if size, _ := p.Head(); p.HeadFile != "" && size > 0 {
			return fmt.Errorf("audit log: %w: the log holds %d entries, but no checkpoint of it is kept, neither in %s nor in the database, "+
				"though one is signed before the first entry is accepted: the checkpoints were deleted, and the log may have been rewritten\nhint: %s",
				ErrLogReplaced, size, p.HeadFile, restoreFix)
		}
		return nil
	case kept == nil:
		if p.HeadFile != "" && p.Logger != nil {
			p.Logger.Info("audit log: no checkpoint kept apart from the store yet; the store's latest is trusted once and kept from now on",
				"file", p.HeadFile, "size", stored.size)
		}
	case stored == nil || kept.size > stored.size:
		// The log extends the kept checkpoint, but the store's
		// checkpoints end before it: rows were deleted from the database.
		if p.Logger != nil {
			p.Logger.Warn("audit log: the database's checkpoints end before the one kept apart from it: some were deleted; the log still extends the kept one",
				"file", p.HeadFile, "kept_size", kept.size, "stored_size", storedSize(stored))
		}
		latest = kept
	case kept.size == stored.size:
		latest = kept
	}
	if p.HeadFile != "" && latest != kept {
		if err := atomicfile.Write(p.HeadFile, latest.note, 0o600); err != nil {
			return fmt.Errorf("audit log: keep the checkpoint: %w", err)
		}
	}
	p.latest.Store(latest)
	return nil
}

// KeptSize returns the size of the checkpoint in HeadFile: the log held
// at least that many entries once. 0 if there is none.
func (p *Publisher) KeptSize() (int64, error) {
	if p.HeadFile == "" {
		return 0, nil
	}
	b, err := os.ReadFile(p.HeadFile)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("audit log: %w", err)
	}
	c, err := p.open(b, p.HeadFile)
	if err != nil {
		return 0, err
	}
	return c.size, nil
}

func storedSize(c *signedCheckpoint) int64 {
	if c == nil {
		return 0
	}
	return c.size
}

// open verifies and parses a signed checkpoint; nil for none.
func (p *Publisher) open(signed []byte, where string) (*signedCheckpoint, error) {
	if signed == nil {
		return nil, nil
	}
	n, err := note.Open(signed, note.VerifierList(p.Key.Verifier))
	if err != nil {
		return nil, fmt.Errorf("audit log: %s does not verify with the log key: %w", where, err)
	}
	_, size, root, err := layout.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return nil, fmt.Errorf("audit log: %s: %w", where, err)
	}
	return &signedCheckpoint{note: signed, size: int64(size), root: root}, nil
}

// restoreFix is the hint of Restore's refusals.
const restoreFix = "restore the log from a backup or an export (`mandate audit export`); the server changes nothing and will not sign over it"

// extends checks that the committed log extends c, which where holds.
func (p *Publisher) extends(c *signedCheckpoint, where string) error {
	size, _ := p.Head()
	if size < c.size {
		return fmt.Errorf("audit log: %w: the log holds %d entries, but its last checkpoint (%s) signed %d: the log was wiped or replaced\nhint: %s",
			ErrLogReplaced, size, where, c.size, restoreFix)
	}
	if c.size == 0 {
		return nil
	}
	if p.TreeHash == nil {
		return errors.New("audit log: Publisher.TreeHash is required")
	}
	h, err := p.TreeHash(c.size)
	if err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	if h != c.root {
		return fmt.Errorf("audit log: %w: the log's first %d entries do not hash to the root its last checkpoint (%s) signed: the history was rewritten\nhint: %s",
			ErrLogReplaced, c.size, where, restoreFix)
	}
	return nil
}

// Latest returns the latest signed checkpoint and its size; nil before
// the first.
func (p *Publisher) Latest() ([]byte, int64) {
	if c := p.latest.Load(); c != nil {
		return c.note, c.size
	}
	return nil, 0
}

// Publish signs a checkpoint of the committed log if it grew since the
// latest (or there is none), saves it, and returns the latest.
func (p *Publisher) Publish(ctx context.Context) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	size, root := p.Head()
	last := p.latest.Load()
	if last != nil {
		if size == last.size && root == last.root {
			return last.note, nil
		}
		// Never sign a log that does not extend the last checkpoint: fewer
		// entries, or a different history under the same size. Entries
		// were removed or changed in the store (by hand, or an old backup
		// restored); refusing keeps the evidence for the verifiers.
		if size < last.size {
			return nil, fmt.Errorf("audit log: the store holds %d entries, fewer than the %d its last signed checkpoint covers: entries were removed; restore them, the server will not sign a shorter log", size, last.size)
		}
		if p.TreeHash == nil {
			return nil, errors.New("audit log: Publisher.TreeHash is required")
		}
		h, err := p.TreeHash(last.size)
		if err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
		if h != last.root {
			return nil, fmt.Errorf("audit log: the store's first %d entries no longer hash to the last signed checkpoint's root: the history was changed; the server will not sign a fork", last.size)
		}
	}
	body := layout.FormatCheckpoint(p.Key.Origin(), uint64(size), root)
	signed, err := note.Sign(&note.Note{Text: string(body)}, p.Key.Signer)
	if err != nil {
		return nil, fmt.Errorf("audit log: sign checkpoint: %w", err)
	}
	if err := p.Save(ctx, size, signed); err != nil {
		return nil, err
	}
	// Kept apart once the store's copy is durable: a crash in between
	// leaves the store's newer, which Restore accepts. Not published
	// unless kept: the next start must know of every checkpoint shown.
	if p.HeadFile != "" {
		if err := atomicfile.Write(p.HeadFile, signed, 0o600); err != nil {
			return nil, fmt.Errorf("audit log: keep the checkpoint: %w", err)
		}
	}
	p.latest.Store(&signedCheckpoint{note: signed, size: size, root: root})
	return signed, nil
}

// Run publishes every Interval until ctx ends.
func (p *Publisher) Run(ctx context.Context) error {
	interval := p.Interval
	if interval <= 0 {
		interval = DefaultCheckpointInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// A last checkpoint of everything committed, for a clean stop.
			if _, err := p.Publish(context.Background()); err != nil && p.Logger != nil {
				p.Logger.Error("audit log: final checkpoint", "err", err)
			}
			return nil
		case <-t.C:
			if _, err := p.Publish(ctx); err != nil && p.Logger != nil {
				p.Logger.Error("audit log: checkpoint", "err", err)
			}
		}
	}
}
