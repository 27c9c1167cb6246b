package issuer

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/atomicfile"
	"github.com/mandatehq/mandate/jose"
)

// SigningKey is one of the issuer's Ed25519 keys. Its ID is the RFC 7638
// thumbprint of the public key.
type SigningKey struct {
	ID        string
	Private   ed25519.PrivateKey
	CreatedAt time.Time
	RetiredAt time.Time // zero while the key is active (or pending)
	// Pending: the key is made and published, but does not sign until its
	// activation is in the audit log (Keyring.Rotate).
	Pending bool
}

// Public returns the public half.
func (k *SigningKey) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// LogValue logs the key ID only, never the key.
func (k *SigningKey) LogValue() slog.Value { return slog.StringValue(k.ID) }

// Keyring holds the active signing key, the retired keys that may still
// have live mandates, and at most one pending key. A retired key stays
// published until every mandate it could have signed has expired:
// RetiredAt + Retention.
//
// A key becomes active write-ahead, like every other change: it is saved
// as pending first, then its activation is announced (the key.rotated
// event, durable in the audit log), and only then does it sign. A crash
// between the steps leaves a pending key that never signed, which
// [Keyring.Finish] announces (if it was not) and activates at the next
// start. So every mandate in the log is signed by a key whose event
// precedes it.
//
// A Keyring is safe for concurrent use.
type Keyring struct {
	path      string
	retention time.Duration

	rotating sync.Mutex // one rotation at a time, announcement included

	mu      sync.RWMutex
	keys    []*SigningKey // oldest first; the last one is active (none before the first activation)
	pending *SigningKey   // made and saved, not yet announced and activated
}

// Announce records, durably, that next becomes the signing key in place
// of the key prev ("" for the first key): for the server, the key.rotated
// event in the audit log. It returns once the record is durable; an error
// leaves next pending.
type Announce func(ctx context.Context, next *SigningKey, prev string) error

// KeyRotatedEvent is the key.rotated event of kid becoming the signing
// key in place of retired ("" for the first key), asked for by by, with
// reason saying why when it is not an operator's rotation.
func KeyRotatedEvent(now time.Time, kid, retired, by, reason string) *mandate.Event {
	details := map[string]any{"kid": kid}
	action := "create"
	if retired != "" {
		details["retired_kid"], action = retired, "rotate"
	}
	return &mandate.Event{V: mandate.EventVersion, Time: now.UnixNano(), Type: mandate.EventKeyRotated,
		Action: action, Outcome: mandate.OutcomeOK, By: by, Reason: reason, Details: details}
}

// keyFile is the on-disk form: private JWKs with their dates.
type keyFile struct {
	Keys []keyFileEntry `json:"keys"`
}

type keyFileEntry struct {
	JWK       jose.JWK  `json:"jwk"`
	CreatedAt time.Time `json:"created_at"`
	RetiredAt time.Time `json:"retired_at,omitzero"`
	Pending   bool      `json:"pending,omitzero"`
}

// OpenKeyring loads the keyring kept in the file at path (mode 0600). If
// the file does not exist, it is created with one pending key: the first
// key signs once [Keyring.Finish] has announced it. Retention is how long
// a retired key stays published; it must be at least the longest mandate
// lifetime.
func OpenKeyring(path string, retention time.Duration, now time.Time) (*Keyring, error) {
	r := &Keyring{path: path, retention: retention}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		if _, err := r.prepare(now); err != nil {
			return nil, err
		}
		return r, nil
	case err != nil:
		return nil, fmt.Errorf("keyring: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("keyring: %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	var f keyFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("keyring: %s does not parse: %w", path, err)
	}
	for i, e := range f.Keys {
		priv, err := e.JWK.PrivateKey()
		if err != nil {
			return nil, fmt.Errorf("keyring: %s: key %d: %w", path, i, err)
		}
		k := &SigningKey{ID: jose.Thumbprint(priv.Public().(ed25519.PublicKey)), Private: priv, CreatedAt: e.CreatedAt, RetiredAt: e.RetiredAt, Pending: e.Pending}
		switch {
		case k.Pending && (r.pending != nil || i != len(f.Keys)-1):
			return nil, fmt.Errorf("keyring: %s: key %d is pending but not the last", path, i)
		case k.Pending:
			r.pending = k
		default:
			r.keys = append(r.keys, k)
		}
	}
	if r.pending == nil && (len(r.keys) == 0 || !r.keys[len(r.keys)-1].RetiredAt.IsZero()) {
		return nil, fmt.Errorf("keyring: %s has no active key", path)
	}
	return r, nil
}

// NewMemoryKeyring returns a keyring with one active key that is never
// saved, nor announced. It is for tests and benchmarks.
func NewMemoryKeyring(retention time.Duration, now time.Time) *Keyring {
	r := &Keyring{retention: retention}
	r.prepare(now)
	r.activate(now)
	return r
}

// Active returns the key that signs new mandates; nil only before the
// first key's activation (Finish).
func (r *Keyring) Active() *SigningKey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.keys) == 0 || !r.keys[len(r.keys)-1].RetiredAt.IsZero() {
		return nil
	}
	return r.keys[len(r.keys)-1]
}

// Pending returns the key made but not yet activated, or nil.
func (r *Keyring) Pending() *SigningKey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.pending
}

// Rotate makes a new key and saves it as pending, has announce record its
// activation durably, and only then makes it the active key, retires the
// previous one, forgets keys whose retention has passed, and saves the
// keyring. If a key is pending already (a rotation whose announcement
// failed), that key is the one announced and activated.
func (r *Keyring) Rotate(ctx context.Context, now time.Time, announce Announce) (*SigningKey, error) {
	r.rotating.Lock()
	defer r.rotating.Unlock()
	if _, err := r.prepare(now); err != nil {
		return nil, err
	}
	return r.finish(ctx, now, announce)
}

// Finish announces and activates the pending key, if there is one, and
// returns it (nil if none). The server calls it at start, before it
// signs anything: after a crash during a rotation, or at the first start,
// whose key OpenKeyring left pending. announce may find the key's event
// already in the log (the crash came after it) and not write it again.
func (r *Keyring) Finish(ctx context.Context, now time.Time, announce Announce) (*SigningKey, error) {
	r.rotating.Lock()
	defer r.rotating.Unlock()
	return r.finish(ctx, now, announce)
}

func (r *Keyring) finish(ctx context.Context, now time.Time, announce Announce) (*SigningKey, error) {
	k, prev := r.Pending(), ""
	if k == nil {
		return nil, nil
	}
	if a := r.Active(); a != nil {
		prev = a.ID
	}
	if err := announce(ctx, k, prev); err != nil {
		return nil, err
	}
	// The activation is durable now, in the log: it stands even if the
	// keyring file cannot be saved (a full disk), since failing here
	// would have the old key go on signing after the event that retired
	// it, and the next rotation announce this key again. The file catches
	// up at its next save; a restart before that finds the key pending
	// and its event in the log, and activates it (Finish).
	r.activate(now)
	return k, nil
}

// prepare makes a new pending key and saves it, unless one is pending.
func (r *Keyring) prepare(now time.Time) (*SigningKey, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending != nil {
		return r.pending, nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	k := &SigningKey{ID: jose.Thumbprint(priv.Public().(ed25519.PublicKey)), Private: priv, CreatedAt: now.UTC(), Pending: true}
	if err := r.save(append(r.keys[:len(r.keys):len(r.keys)], k)); err != nil {
		return nil, err
	}
	r.pending = k
	return k, nil
}

// activate makes the pending key the active one, retires the previous
// one, forgets keys past their retention, and saves the keyring; in
// memory even if the save fails.
func (r *Keyring) activate(now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var keys []*SigningKey
	for _, old := range r.keys {
		old := *old
		if old.RetiredAt.IsZero() {
			old.RetiredAt = now.UTC()
		}
		if now.Before(old.RetiredAt.Add(r.retention)) {
			keys = append(keys, &old)
		}
	}
	k := *r.pending
	k.Pending = false
	keys = append(keys, &k)
	err := r.save(keys)
	r.keys, r.pending = keys, nil
	return err
}

// Published returns the keys to publish at now: the active key, the
// retired keys within their retention, and the pending key. A pending key
// is published before it signs, so that verifiers that fetch the keys in
// the meantime know it when its first mandate comes; a published key that
// never signs costs nothing.
func (r *Keyring) Published(now time.Time) []*SigningKey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*SigningKey
	for _, k := range r.keys {
		if k.RetiredAt.IsZero() || now.Before(k.RetiredAt.Add(r.retention)) {
			out = append(out, k)
		}
	}
	if r.pending != nil {
		out = append(out, r.pending)
	}
	return out
}

// PublicKey returns the published key with the given ID.
func (r *Keyring) PublicKey(kid string, now time.Time) (ed25519.PublicKey, bool) {
	for _, k := range r.Published(now) {
		if k.ID == kid {
			return k.Public(), true
		}
	}
	return nil, false
}

// JWKS returns the public JWK Set (RFC 7517 §5) of the published keys.
func (r *Keyring) JWKS(now time.Time) []jose.JWK {
	keys := r.Published(now)
	out := make([]jose.JWK, 0, len(keys))
	for _, k := range keys {
		j := jose.NewPublicJWK(k.Public())
		j.Kid, j.Use, j.Alg = k.ID, "sig", "EdDSA"
		out = append(out, j)
	}
	return out
}

// save writes the keyring atomically with mode 0600. A memory keyring is
// not saved.
func (r *Keyring) save(keys []*SigningKey) error {
	if r.path == "" {
		return nil
	}
	var f keyFile
	for _, k := range keys {
		f.Keys = append(f.Keys, keyFileEntry{JWK: jose.NewPrivateJWK(k.Private), CreatedAt: k.CreatedAt, RetiredAt: k.RetiredAt, Pending: k.Pending})
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(r.path, b, 0o600)
}
