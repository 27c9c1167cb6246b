package verify

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/mandatehq/mandate/jose"
)

// Defaults for JWKSOptions.
const (
	DefaultMinRefreshInterval = 5 * time.Second
	DefaultMaxAge             = 10 * time.Minute
	maxJWKSBytes              = 1 << 20
	maxJWKSKeys               = 100
)

// JWKSOptions tune a JWKS key source.
type JWKSOptions struct {
	// Client fetches the JWKS; a client with a 10 s timeout if nil.
	Client *http.Client
	// MinRefreshInterval bounds how often an unknown kid may trigger a
	// fetch, so that tokens with made-up kids cannot make us hammer the
	// issuer.
	MinRefreshInterval time.Duration
	// MaxAge is how long fetched keys are used before a refresh, so that
	// keys the issuer withdrew stop verifying.
	MaxAge time.Duration
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// JWKS is a KeySource backed by an issuer's JWK Set URL. Keys are cached;
// an unknown kid triggers a refresh at most once per MinRefreshInterval.
// Only Ed25519 keys are kept; others are ignored.
type JWKS struct {
	url  string
	opts JWKSOptions

	mu        sync.Mutex
	keys      map[string]ed25519.PublicKey
	fetchedAt time.Time
	lastTry   time.Time
	lastErr   error
}

// NewJWKS returns a key source for the JWK Set at url.
func NewJWKS(url string, opts JWKSOptions) *JWKS {
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if opts.MinRefreshInterval == 0 {
		opts.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if opts.MaxAge == 0 {
		opts.MaxAge = DefaultMaxAge
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &JWKS{url: url, opts: opts}
}

// Key implements KeySource.
func (j *JWKS) Key(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	j.mu.Lock()
	defer j.mu.Unlock() // serialises fetches: concurrent misses share one
	now := j.opts.Now()
	if k, ok := j.keys[kid]; ok && now.Sub(j.fetchedAt) < j.opts.MaxAge {
		return k, nil
	}
	if !j.lastTry.IsZero() && now.Sub(j.lastTry) < j.opts.MinRefreshInterval {
		if k, ok := j.keys[kid]; ok { // stale but a refresh failed recently
			return k, nil
		}
		if j.lastErr != nil {
			return nil, fail("kid", ErrUnknownKey, "no key %q, and fetching %s failed: %v", kid, j.url, j.lastErr)
		}
		return nil, fail("kid", ErrUnknownKey, "no key %q in the issuer's JWKS", kid)
	}
	j.lastTry = now
	keys, err := j.fetch(ctx)
	j.lastErr = err
	if err == nil {
		j.keys, j.fetchedAt = keys, now
	}
	if k, ok := j.keys[kid]; ok {
		return k, nil
	}
	if err != nil {
		return nil, fail("kid", ErrUnknownKey, "no key %q, and fetching %s failed: %v", kid, j.url, err)
	}
	return nil, fail("kid", ErrUnknownKey, "no key %q in the issuer's JWKS", kid)
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
