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

// Restore makes a previously saved checkpoint the latest.
func (p *Publisher) Restore(signed []byte) error {
	if signed == nil {
		return nil
	}
	n, err := note.Open(signed, note.VerifierList(p.Key.Verifier))
	if err != nil {
		return fmt.Errorf("audit log: the saved checkpoint does not verify with the log key: %w", err)
	}
	_, size, root, err := layout.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return err
	}
	p.latest.Store(&signedCheckpoint{note: signed, size: int64(size), root: root})
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
