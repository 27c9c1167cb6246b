package httpapi

import (
	"context"
	"crypto/ed25519"
	"time"

	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/verify"
)

// KeySource returns the issuer's keyring as a verify.KeySource, for
// verifiers in the same process (the gateway): the keys published and
// still live at now().
func KeySource(keys *issuer.Keyring, now func() time.Time) verify.KeySource {
	return keyringSource{keys: keys, now: now}
}

// keyringSource adapts the issuer's keyring to verify.KeySource.
type keyringSource struct {
	keys *issuer.Keyring
	now  func() time.Time
}

func (k keyringSource) Key(_ context.Context, kid string) (ed25519.PublicKey, error) {
	if pub, ok := k.keys.PublicKey(kid, k.now()); ok {
		return pub, nil
	}
	return verify.StaticKeys{}.Key(context.Background(), kid)
}
