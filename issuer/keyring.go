package issuer

import (
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

	"github.com/mandatehq/mandate/internal/atomicfile"
	"github.com/mandatehq/mandate/jose"
)

// SigningKey is one of the issuer's Ed25519 keys. Its ID is the RFC 7638
// thumbprint of the public key.
type SigningKey struct {
	ID        string
	Private   ed25519.PrivateKey
	CreatedAt time.Time
	RetiredAt time.Time // zero while the key is active
}

// Public returns the public half.
func (k *SigningKey) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// LogValue logs the key ID only, never the key.
func (k *SigningKey) LogValue() slog.Value { return slog.StringValue(k.ID) }

// Keyring holds the active signing key and the retired keys that may still
// have live mandates. A retired key stays published until every mandate it
// could have signed has expired: RetiredAt + Retention.
//
// A Keyring is safe for concurrent use.
type Keyring struct {
	path      string
	retention time.Duration

	mu   sync.RWMutex
	keys []*SigningKey // oldest first; the last one is active
}

// keyFile is the on-disk form: private JWKs with their dates.
type keyFile struct {
	Keys []keyFileEntry `json:"keys"`
}

type keyFileEntry struct {
	JWK       jose.JWK  `json:"jwk"`
	CreatedAt time.Time `json:"created_at"`
	RetiredAt time.Time `json:"retired_at,omitzero"`
}

// OpenKeyring loads the keyring kept in the file at path (mode 0600),
// creating it with one new key if it does not exist. Retention is how long a
// retired key stays published; it must be at least the longest mandate
// lifetime.
func OpenKeyring(path string, retention time.Duration, now time.Time) (*Keyring, error) {
	r := &Keyring{path: path, retention: retention}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("keyring: %w", err)
		}
		if _, err := r.Rotate(now); err != nil {
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
		r.keys = append(r.keys, &SigningKey{ID: jose.Thumbprint(priv.Public().(ed25519.PublicKey)), Private: priv, CreatedAt: e.CreatedAt, RetiredAt: e.RetiredAt})
	}
	if len(r.keys) == 0 || !r.keys[len(r.keys)-1].RetiredAt.IsZero() {
		return nil, fmt.Errorf("keyring: %s has no active key", path)
	}
	return r, nil
}

// NewMemoryKeyring returns a keyring with one new key that is never saved.
// It is for tests and benchmarks.
func NewMemoryKeyring(retention time.Duration, now time.Time) *Keyring {
	r := &Keyring{retention: retention}
	r.Rotate(now)
	return r
}

// Active returns the key that signs new mandates.
func (r *Keyring) Active() *SigningKey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.keys[len(r.keys)-1]
}

// Rotate makes a new active key, retires the previous one, forgets keys
// whose retention has passed, and saves the keyring before returning.
func (r *Keyring) Rotate(now time.Time) (*SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	k := &SigningKey{ID: jose.Thumbprint(priv.Public().(ed25519.PublicKey)), Private: priv, CreatedAt: now.UTC()}
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
	keys = append(keys, k)
	if err := r.save(keys); err != nil {
		return nil, err
	}
	r.keys = keys
	return k, nil
}

// Published returns the keys to publish at now: the active key and the
// retired keys within their retention.
func (r *Keyring) Published(now time.Time) []*SigningKey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*SigningKey
	for _, k := range r.keys {
		if k.RetiredAt.IsZero() || now.Before(k.RetiredAt.Add(r.retention)) {
			out = append(out, k)
		}
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
		f.Keys = append(f.Keys, keyFileEntry{JWK: jose.NewPrivateJWK(k.Private), CreatedAt: k.CreatedAt, RetiredAt: k.RetiredAt})
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(r.path, b, 0o600)
}
