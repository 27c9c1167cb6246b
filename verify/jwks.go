package verify

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mandatehq/mandate/internal/noredirect"
	"github.com/mandatehq/mandate/jose"
)

// Defaults for JWKSOptions.
const (
	DefaultMinRefreshInterval = 5 * time.Second
	DefaultMaxAge             = 10 * time.Minute
	DefaultMaxStale           = time.Hour
	DefaultFetchTimeout       = 10 * time.Second
	maxJWKSBytes              = 1 << 20
	maxJWKSKeys               = 100
)

// JWKSOptions tune a JWKS key source.
type JWKSOptions struct {
	// Client fetches the JWKS; http.DefaultClient if nil (each fetch has
	// its own FetchTimeout). Redirects are never followed, whatever the
	// client: keys from wherever the JWKS URL points are not the issuer's.
	Client *http.Client
	// FetchTimeout bounds one fetch.
	FetchTimeout time.Duration
	// MinRefreshInterval bounds how often an unknown kid may trigger a
	// fetch, so that tokens with made-up kids cannot make us hammer the
	// issuer.
	MinRefreshInterval time.Duration
	// MaxAge is how long fetched keys are used before a refresh is tried,
	// so that keys the issuer withdrew stop verifying.
	MaxAge time.Duration
	// MaxStale is how long keys may still be used while refreshes fail;
	// after it every lookup fails (fail closed).
	MaxStale time.Duration
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// JWKS is a KeySource backed by an issuer's JWK Set URL. Keys are cached
// and looked up without locking; an unknown kid, or keys older than
// MaxAge, trigger a refresh at most once per MinRefreshInterval, done by
// one caller while the others keep using the cached keys. Only Ed25519
// keys are kept.
type JWKS struct {
	url  string
	opts JWKSOptions

	cur atomic.Pointer[jwksSnapshot]

	mu      sync.Mutex // held by the one caller refreshing
	lastTry time.Time
	lastErr error
}

type jwksSnapshot struct {
	keys      map[string]ed25519.PublicKey
	fetchedAt time.Time
}

// NewJWKS returns a key source for the JWK Set at url.
func NewJWKS(url string, opts JWKSOptions) *JWKS {
	// A copy, so that the caller's client is not changed.
	opts.Client = noredirect.Client(opts.Client)
	if opts.FetchTimeout == 0 {
		opts.FetchTimeout = DefaultFetchTimeout
	}
	if opts.MinRefreshInterval == 0 {
		opts.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.MaxStale == 0 {
		opts.MaxStale = DefaultMaxStale
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &JWKS{url: url, opts: opts}
}

// Key implements KeySource.
func (j *JWKS) Key(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	now := j.opts.Now()
	snap := j.cur.Load()
	if snap != nil {
		if k, ok := snap.keys[kid]; ok && now.Sub(snap.fetchedAt) < j.opts.MaxAge {
			return k, nil // the hot path: no lock
		}
	}
	snap = j.refresh(now)
	if snap != nil && now.Sub(snap.fetchedAt) < j.opts.MaxStale {
		if k, ok := snap.keys[kid]; ok {
			return k, nil
		}
	}
	j.mu.Lock()
	lastErr := j.lastErr
	j.mu.Unlock()
	switch {
	case snap != nil && now.Sub(snap.fetchedAt) >= j.opts.MaxStale:
		// The fetch's error is for the log: it may say where the issuer
		// is unreachable from.
		return nil, failCause("kid", ErrUnknownKey, lastErr, "the issuer's keys are older than %v and cannot be fetched now", j.opts.MaxStale)
	case lastErr != nil:
		return nil, failCause("kid", ErrUnknownKey, lastErr, "no key %q, and the issuer's keys cannot be fetched now", kid)
	}
	return nil, fail("kid", ErrUnknownKey, "no key %q in the issuer's JWKS", kid)
}

// refresh fetches the JWKS unless one was tried within MinRefreshInterval,
// and returns the current snapshot. Concurrent callers wait for the one
// fetching, and do not fetch again.
func (j *JWKS) refresh(now time.Time) *jwksSnapshot {
	before := j.cur.Load()
	j.mu.Lock()
	defer j.mu.Unlock()
	if cur := j.cur.Load(); cur != before { // refreshed while we waited
		return cur
	}
	if !j.lastTry.IsZero() && now.Sub(j.lastTry) < j.opts.MinRefreshInterval {
		return before
	}
	j.lastTry = now
	// Detached from the caller's context: one client giving up must not
	// fail the refresh for everyone.
	ctx, cancel := context.WithTimeout(context.Background(), j.opts.FetchTimeout)
	defer cancel()
	keys, err := j.fetch(ctx)
	j.lastErr = err
	if err != nil {
		return before
	}
	snap := &jwksSnapshot{keys: keys, fetchedAt: now}
	j.cur.Store(snap)
	return snap
}

func (j *JWKS) fetch(ctx context.Context) (map[string]ed25519.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := j.opts.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSBytes)
	}
	return ParseJWKS(b)
}

// ParseJWKS parses a JWK Set (RFC 7517 §5), keeping the Ed25519 signing keys
// that have a kid.
func ParseJWKS(b []byte) (map[string]ed25519.PublicKey, error) {
	var set struct {
		Keys []jose.JWK `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("JWKS does not parse: %w", err)
	}
	if len(set.Keys) > maxJWKSKeys {
		return nil, fmt.Errorf("JWKS has more than %d keys", maxJWKSKeys)
	}
	keys := map[string]ed25519.PublicKey{}
	for _, k := range set.Keys {
		if k.Kid == "" || (k.Use != "" && k.Use != "sig") || k.D != "" {
			continue
		}
		pub, err := k.PublicKey()
		if err != nil {
			continue
		}
		keys[k.Kid] = pub
	}
	return keys, nil
}
