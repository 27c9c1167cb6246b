package jose

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	"filippo.io/edwards25519"
)

// checkPublicKeySlow is checkPublicKey by point arithmetic: decode, encode
// again and compare, multiply by the cofactor. It is the reference the
// byte tests of checkPublicKey are held to.
func checkPublicKeySlow(x []byte) (ok bool, why string) {
	p, err := new(edwards25519.Point).SetBytes(x)
	if err != nil {
		return false, "not a point"
	}
	if !bytes.Equal(p.Bytes(), x) {
		return false, "canonical"
	}
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return false, "small order"
	}
	return true, ""
}

func agree(t *testing.T, x []byte) {
	t.Helper()
	want, why := checkPublicKeySlow(x)
	err := checkPublicKey(x)
	if err == nil {
		if _, derr := new(edwards25519.Point).SetBytes(x); derr != nil {
			err = derr // as PublicKey does
		}
	}
	if (err == nil) != want {
		t.Fatalf("checkPublicKey(%x) = %v; the point arithmetic says ok=%v (%s)", x, err, want, why)
	}
}

// The small-order table holds exactly the eight points whose multiple by
// the cofactor is the identity, each with both sign bits where that is a
// point at all.
func TestSmallOrderTable(t *testing.T) {
	points := 0
	for _, y := range smallOrderYs {
		for _, sign := range []byte{0, 0x80} {
			x := y
			x[31] |= sign
			p, err := new(edwards25519.Point).SetBytes(x[:])
			if err != nil {
				t.Fatalf("%x is not a point", x)
			}
			if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) != 1 {
				t.Fatalf("%x is not of small order", x)
			}
			if bytes.Equal(p.Bytes(), x[:]) {
				points++
			}
			agree(t, x[:])
		}
	}
	if points != 8 {
		t.Fatalf("%d canonical encodings of small-order points, want 8", points)
	}
}

// Every y at and just above p, every y near the small-order values, real
// keys and random bytes: the byte tests and the point arithmetic agree.
func TestCheckPublicKeyAgreesWithPointArithmetic(t *testing.T) {
	var edge [32]byte
	for i := range edge {
		edge[i] = 0xff
	}
	for b0 := 0xe0; b0 <= 0xff; b0++ {
		for _, top := range []byte{0x7f, 0xff} {
			x := edge
			x[0], x[31] = byte(b0), top
			agree(t, x[:])
		}
	}
	for _, y := range smallOrderYs {
		for _, d := range []byte{1, 2, 0x80} {
			x := y
			x[0] ^= d
			agree(t, x[:])
			x = y
			x[15] ^= d
			agree(t, x[:])
		}
	}
	for range 2000 {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		agree(t, pub)
		var x [32]byte
		rand.Read(x[:])
		agree(t, x[:])
	}
}

func FuzzCheckPublicKey(f *testing.F) {
	for _, y := range smallOrderYs {
		f.Add(y[:])
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	f.Add([]byte(pub))
	f.Fuzz(func(t *testing.T, x []byte) {
		if len(x) != 32 {
			if checkPublicKey(x) == nil {
				t.Fatalf("accepted %d bytes", len(x))
			}
			return
		}
		agree(t, x)
	})
}

// VerifyWithJWK accepts what PublicKey and Verify accept together, and
// says which of the two refused.
func TestVerifyWithJWK(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	own := NewPublicJWK(priv.Public().(ed25519.PublicKey))
	parse := func(signer ed25519.PrivateKey, k *JWK) *JWS {
		j, err := Parse(Sign(signer, Header{Typ: "JWT", JWK: k}, []byte(`{"jti":"1"}`)))
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	if pub, err := parse(priv, &own).VerifyWithJWK(); err != nil || !pub.Equal(priv.Public()) {
		t.Fatalf("own key: %v", err)
	}
	for name, tc := range map[string]struct {
		j    *JWS
		want error
		text string
	}{
		"no jwk":           {parse(priv, nil), ErrMalformed, "missing"},
		"another's key":    {parse(other, &own), ErrSignature, "verification failed"},
		"not on the curve": {parse(priv, &JWK{Kty: "OKP", Crv: "Ed25519", X: "AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}), ErrMalformed, "not a point"},
		"small order":      {parse(priv, &JWK{Kty: "OKP", Crv: "Ed25519", X: "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}), ErrMalformed, "small order"},
	} {
		if _, err := tc.j.VerifyWithJWK(); !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
			t.Errorf("%s: %v, want %v naming %q", name, err, tc.want, tc.text)
		}
	}
}
