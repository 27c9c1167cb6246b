package jose

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mandatehq/mandate/internal/jsonstr"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
)

type rfc8037Vectors struct {
	PrivateJWK          json.RawMessage `json:"private_jwk"`
	PublicJWK           json.RawMessage `json:"public_jwk"`
	ThumbprintInput     string          `json:"thumbprint_input"`
	ThumbprintSHA256Hex string          `json:"thumbprint_sha256_hex"`
	Thumbprint          string          `json:"thumbprint"`
	Payload             string          `json:"payload"`
	JWS                 string          `json:"jws"`
}

func loadJSON(t testing.TB, name string, v any) {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// TestRFC8037 checks the known answers of RFC 8037 Appendix A.1 to A.4.
func TestRFC8037(t *testing.T) {
	var v rfc8037Vectors
	loadJSON(t, "rfc8037.json", &v)

	// A.1: the private key.
	privJWK, err := ParseJWK(v.PrivateJWK)
	if err != nil {
		t.Fatalf("ParseJWK(A.1): %v", err)
	}
	priv, err := privJWK.PrivateKey()
	if err != nil {
		t.Fatalf("A.1 PrivateKey: %v", err)
	}
	if got := NewPrivateJWK(priv); got.D != privJWK.D || got.X != privJWK.X {
		t.Errorf("NewPrivateJWK(A.1) does not round-trip d and x")
	}

	// A.2: the public key.
	pubJWK, err := ParseJWK(v.PublicJWK)
	if err != nil {
		t.Fatalf("ParseJWK(A.2): %v", err)
	}
	pub, err := pubJWK.PublicKey()
	if err != nil {
		t.Fatalf("A.2 PublicKey: %v", err)
	}
	if !pub.Equal(priv.Public()) {
		t.Errorf("A.2 public key is not the public key of A.1")
	}
	if _, err := pubJWK.PrivateKey(); !errors.Is(err, ErrMalformed) {
		t.Errorf("A.2 PrivateKey() error = %v, want ErrMalformed", err)
	}

	// A.3: the thumbprint, its input and its digest.
	sum := sha256.Sum256([]byte(v.ThumbprintInput))
	if got := hex.EncodeToString(sum[:]); got != v.ThumbprintSHA256Hex {
		t.Errorf("SHA-256 of A.3 input = %s, want %s", got, v.ThumbprintSHA256Hex)
	}
	for name, got := range map[string]string{
		"Thumbprint(pub)":         Thumbprint(pub),
		"NewPublicJWK(pub).Kid":   NewPublicJWK(pub).Kid,
		"NewPrivateJWK(priv).Kid": NewPrivateJWK(priv).Kid,
	} {
		if got != v.Thumbprint {
			t.Errorf("%s = %s, want %s", name, got, v.Thumbprint)
		}
	}
	for name, k := range map[string]JWK{"A.1": privJWK, "A.2": pubJWK} {
		got, err := k.Thumbprint()
		if err != nil || got != v.Thumbprint {
			t.Errorf("%s Thumbprint() = %q, %v; want %s", name, got, err, v.Thumbprint)
		}
	}

	// A.4: signing. Ed25519 is deterministic, so the token is exact.
	if got := Sign(priv, Header{}, []byte(v.Payload)); got != v.JWS {
		t.Errorf("Sign(A.4) =\n%s\nwant\n%s", got, v.JWS)
	}
	jws, err := Parse(v.JWS)
	if err != nil {
		t.Fatalf("Parse(A.4): %v", err)
	}
	if err := jws.Verify(pub); err != nil {
		t.Errorf("Verify(A.4): %v", err)
	}
	if string(jws.Payload) != v.Payload {
		t.Errorf("A.4 payload = %q, want %q", jws.Payload, v.Payload)
	}
	if want := (Header{Alg: "EdDSA"}); !reflect.DeepEqual(jws.Header, want) {
		t.Errorf("A.4 header = %+v, want %+v", jws.Header, want)
	}
}

// TestRFC7638 checks the known answer of RFC 7638 §3.1, an RSA key.
func TestRFC7638(t *testing.T) {
	var v struct {
		JWK        json.RawMessage `json:"jwk"`
		Digest     []int           `json:"thumbprint_sha256"`
		Thumbprint string          `json:"thumbprint"`
	}
	loadJSON(t, "rfc7638.json", &v)
	k, err := ParseJWK(v.JWK)
	if err != nil {
		t.Fatalf("ParseJWK: %v", err)
	}
	got, err := k.Thumbprint()
	if err != nil {
		t.Fatalf("Thumbprint: %v", err)
	}
	if got != v.Thumbprint {
		t.Errorf("Thumbprint() = %s, want %s", got, v.Thumbprint)
	}
	digest, _ := base64.RawURLEncoding.DecodeString(got)
	var want []byte
	for _, b := range v.Digest {
		want = append(want, byte(b))
	}
	if !bytes.Equal(digest, want) {
		t.Errorf("thumbprint digest = %v, want %v", digest, want)
	}
	if _, err := k.PublicKey(); !errors.Is(err, ErrMalformed) {
		t.Errorf("PublicKey() of an RSA key: error = %v, want ErrMalformed", err)
	}
}

func TestThumbprintRequiredMembers(t *testing.T) {
	for _, k := range []JWK{
		{Kty: "OKP", Crv: "Ed25519"},
		{Kty: "OKP", X: "x"},
		{Kty: "EC", Crv: "P-256", X: "x"},
		{Kty: "RSA", N: "n"},
		{Kty: "oct"},
		{},
	} {
		if got, err := k.Thumbprint(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%v.Thumbprint() = %q, %v; want ErrMalformed", k, got, err)
		}
	}
	// EC members are used in order crv, kty, x, y (RFC 7638 §3.2).
	k := JWK{Kty: "EC", Crv: "P-256", X: "ax", Y: "ay", Kid: "ignored"}
	sum := sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"ax","y":"ay"}`))
	if got, _ := k.Thumbprint(); got != base64.RawURLEncoding.EncodeToString(sum[:]) {
		t.Errorf("EC thumbprint does not follow RFC 7638 §3.2 member order")
	}
}

func testKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
}

func TestSignParseRoundTrip(t *testing.T) {
	priv := testKey(t)
	pub := priv.Public().(ed25519.PublicKey)
	jwk := NewPublicJWK(pub)
	for _, h := range []Header{
		{},
		{Typ: "JWT"},
		{Typ: "dpop+jwt", JWK: &JWK{Kty: "OKP", Crv: "Ed25519", X: jwk.X}},
		{Kid: jwk.Kid, Typ: "at+jwt"},
		{Kid: "odd \"kid\" \\ <&> \n\t\x01 \u2028 é"},
		{Alg: "none"}, // Sign overrides it
	} {
		payload := []byte(`{"sub":"user:ada@example.com"}`)
		tok := Sign(priv, h, payload)
		j, err := Parse(tok)
		if err != nil {
			t.Fatalf("Parse(Sign(%+v)): %v", h, err)
		}
		if err := j.Verify(pub); err != nil {
			t.Errorf("Verify: %v", err)
		}
		h.Alg = "EdDSA"
		if !reflect.DeepEqual(j.Header, h) {
			t.Errorf("header = %+v, want %+v", j.Header, h)
		}
		if !bytes.Equal(j.Payload, payload) {
			t.Errorf("payload = %q, want %q", j.Payload, payload)
		}
		// The hand-written header encoding is what encoding/json would
		// write, apart from HTML escaping.
		hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		enc.Encode(h)
		if got := string(hdr); got != strings.TrimSuffix(want.String(), "\n") {
			t.Errorf("header JSON = %s, want %s", got, want.String())
		}
	}
}

func TestSignNeverWritesD(t *testing.T) {
	priv := testKey(t)
	k := NewPrivateJWK(priv)
	tok := Sign(priv, Header{Typ: "dpop+jwt", JWK: &k}, []byte("{}"))
	j, err := Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if j.Header.JWK == nil || j.Header.JWK.D != "" || j.Header.JWK.X != k.X {
		t.Errorf("header jwk = %v, want the public key only", j.Header.JWK)
	}
	if strings.Contains(tok, b64(k.D)[:10]) || k.D == "" {
		t.Errorf("token holds d, or Sign changed the caller's JWK")
	}
}

func TestAppendStringInvalidUTF8(t *testing.T) {
	got := string(jsonstr.Append(nil, "a\xffb"))
	if got != `"a\ufffdb"` {
		t.Errorf("jsonstr.Append(invalid UTF-8) = %s", got)
	}
	var s string
	if err := json.Unmarshal([]byte(got), &s); err != nil || s != "a\uFFFDb" {
		t.Errorf("appendString output does not decode: %q, %v", s, err)
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestParseRefuses(t *testing.T) {
	priv := testKey(t)
	good := Sign(priv, Header{Typ: "JWT"}, []byte("payload"))
	parts := strings.Split(good, ".")
	sig := parts[2]
	withHeader := func(h string) string { return b64(h) + "." + parts[1] + "." + sig }

	// A signature part with non-zero trailing bits: the last character of
	// 64 bytes carries 2 bits of padding.
	last := sig[len(sig)-1]
	flipped := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", last) + 1
	noncanonical := parts[0] + "." + parts[1] + "." + sig[:len(sig)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[flipped%64])

	for _, tt := range []struct {
		name  string
		token string
		want  error
		msg   string
	}{
		{"empty", "", ErrMalformed, "three"},
		{"one part", parts[0], ErrMalformed, "three"},
		{"two parts", parts[0] + "." + parts[1], ErrMalformed, "three"},
		{"four parts", good + ".", ErrMalformed, "three"},
		{"too long", strings.Repeat("a", MaxTokenSize+1), ErrMalformed, "limit"},
		{"padding", parts[0] + "=." + parts[1] + "." + sig, ErrMalformed, "base64url"},
		{"std alphabet", strings.ReplaceAll(strings.ReplaceAll(good, "-", "+"), "_", "/"), ErrMalformed, "base64url"},
		{"newline", parts[0] + "\n." + parts[1] + "." + sig, ErrMalformed, "base64url"},
		{"space", " " + good, ErrMalformed, "base64url"},
		{"non-canonical trailing bits", noncanonical, ErrMalformed, "canonical"},
		{"bad length", parts[0] + "a." + parts[1] + "." + sig, ErrMalformed, ""},
		{"header not JSON", withHeader(`alg=EdDSA`), ErrMalformed, "JSON"},
		{"header array", withHeader(`["EdDSA"]`), ErrMalformed, "object"},
		{"header two objects", withHeader(`{"alg":"EdDSA"}{}`), ErrMalformed, "JSON"},
		{"header trailing comma", withHeader(`{"alg":"EdDSA",}`), ErrMalformed, "JSON"},
		{"header invalid UTF-8", withHeader("{\"alg\":\"EdDSA\",\"x\":\"\xff\"}"), ErrMalformed, "UTF-8"},
		{"duplicate alg", withHeader(`{"alg":"none","alg":"EdDSA"}`), ErrMalformed, "twice"},
		{"duplicate kid", withHeader(`{"alg":"EdDSA","kid":"a","kid":"b"}`), ErrMalformed, "twice"},
		{"alg not a string", withHeader(`{"alg":["EdDSA"]}`), ErrMalformed, "alg must be a string"},
		{"jwk not an object", withHeader(`{"alg":"EdDSA","jwk":"k"}`), ErrMalformed, "object"},
		{"alg none", withHeader(`{"alg":"none"}`) + "", ErrAlgorithm, `"none"`},
		{"alg none no sig", b64(`{"alg":"none"}`) + "." + parts[1] + ".", ErrAlgorithm, `"none"`},
		{"alg HS256", withHeader(`{"alg":"HS256"}`), ErrAlgorithm, `"HS256"`},
		{"alg ES256", withHeader(`{"alg":"ES256"}`), ErrAlgorithm, `"ES256"`},
		{"alg case", withHeader(`{"alg":"eddsa"}`), ErrAlgorithm, `"eddsa"`},
		{"alg Ed25519 lower", withHeader(`{"alg":"ed25519"}`), ErrAlgorithm, `"ed25519"`},
		{"alg Ed448", withHeader(`{"alg":"Ed448"}`), ErrAlgorithm, `"Ed448"`},
		{"alg missing", withHeader(`{"typ":"JWT"}`), ErrAlgorithm, `""`},
		{"alg null", withHeader(`{"alg":null}`), ErrMalformed, "alg must be a string"},
		{"alg name case", withHeader(`{"ALG":"EdDSA"}`), ErrAlgorithm, `""`},
		{"crit", withHeader(`{"alg":"EdDSA","crit":["exp"],"exp":1}`), ErrAlgorithm, "crit"},
		{"crit empty", withHeader(`{"alg":"EdDSA","crit":[]}`), ErrAlgorithm, "crit"},
		{"crit b64", withHeader(`{"alg":"EdDSA","b64":false,"crit":["b64"]}`), ErrAlgorithm, "crit"},
		{"empty signature", parts[0] + "." + parts[1] + ".", ErrMalformed, "64 bytes"},
		{"short signature", parts[0] + "." + parts[1] + "." + sig[:84], ErrMalformed, "64 bytes"},
		{"long signature", parts[0] + "." + parts[1] + "." + sig + "AAAA", ErrMalformed, "64 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			j, err := Parse(tt.token)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse() = %v, %v; want %v", j, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
		})
	}
}

func TestParseAcceptsUnknownHeaderMembers(t *testing.T) {
	priv := testKey(t)
	hdr := b64(`{ "alg" : "EdDSA", "x-extra": {"nested": [1, 2, {"alg": "none"}]}, "kid": "k\u0031" }`)
	input := hdr + "." + b64("p")
	tok := input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(input)))
	j, err := Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if j.Header.Kid != "k1" {
		t.Errorf("kid = %q, want k1", j.Header.Kid)
	}
	if err := j.Verify(priv.Public().(ed25519.PublicKey)); err != nil {
		t.Error(err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	priv := testKey(t)
	pub := priv.Public().(ed25519.PublicKey)
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, 32)).Public().(ed25519.PublicKey)
	tok := Sign(priv, Header{}, []byte("payload"))

	j, _ := Parse(tok)
	if err := j.Verify(other); !errors.Is(err, ErrSignature) {
		t.Errorf("Verify(other key) = %v, want ErrSignature", err)
	}
	if err := j.Verify(pub[:31]); !errors.Is(err, ErrSignature) {
		t.Errorf("Verify(31-byte key) = %v, want ErrSignature", err)
	}
	if err := j.Verify(nil); !errors.Is(err, ErrSignature) {
		t.Errorf("Verify(nil) = %v, want ErrSignature", err)
	}
	if err := (&JWS{Header: Header{Alg: "EdDSA"}, Signature: make([]byte, 64)}).Verify(pub); !errors.Is(err, ErrSignature) {
		t.Errorf("Verify(unparsed JWS) = %v, want ErrSignature", err)
	}
	if err := (&JWS{}).Verify(pub); !errors.Is(err, ErrAlgorithm) {
		t.Errorf("Verify(zero JWS) = %v, want ErrAlgorithm", err)
	}

	// Changing the payload or the header breaks the signature.
	parts := strings.Split(tok, ".")
	for _, bad := range []string{
		parts[0] + "." + b64("payloaD") + "." + parts[2],
		b64(`{"alg":"EdDSA","typ":"JWT"}`) + "." + parts[1] + "." + parts[2],
	} {
		j, err := Parse(bad)
		if err != nil {
			t.Fatal(err)
		}
		if err := j.Verify(pub); !errors.Is(err, ErrSignature) {
			t.Errorf("Verify(%s) = %v, want ErrSignature", bad, err)
		}
	}
}

func TestJWKPublicKeyRefuses(t *testing.T) {
	priv := testKey(t)
	good := NewPublicJWK(priv.Public().(ed25519.PublicKey))
	mod := func(f func(*JWK)) JWK { k := good; f(&k); return k }
	for _, tt := range []struct {
		name string
		k    JWK
		msg  string
	}{
		{"kty", mod(func(k *JWK) { k.Kty = "EC" }), "kty"},
		{"crv", mod(func(k *JWK) { k.Crv = "Ed448" }), "crv"},
		{"crv X25519", mod(func(k *JWK) { k.Crv = "X25519" }), "crv"},
		{"alg", mod(func(k *JWK) { k.Alg = "ES256" }), "alg"},
		{"use", mod(func(k *JWK) { k.Use = "enc" }), "use"},
		{"x missing", mod(func(k *JWK) { k.X = "" }), "x is missing"},
		{"x short", mod(func(k *JWK) { k.X = k.X[:42] }), "43"},
		{"x padded", mod(func(k *JWK) { k.X = k.X[:42] + "=" }), "base64url"},
		{"x std alphabet", mod(func(k *JWK) { k.X = k.X[:42] + "+" }), "base64url"},
		{"x trailing bits", mod(func(k *JWK) { k.X = k.X[:42] + "B" }), "canonical"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.k.PublicKey()
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("PublicKey() error = %v, want ErrMalformed mentioning %q", err, tt.msg)
			}
		})
	}
	if _, err := good.PublicKey(); err != nil {
		t.Errorf("PublicKey() of a good key: %v", err)
	}
	if _, err := mod(func(k *JWK) { k.Alg = "EdDSA"; k.Use = "sig" }).PublicKey(); err != nil {
		t.Errorf("PublicKey() with alg EdDSA and use sig: %v", err)
	}
}

func TestJWKPrivateKeyRefuses(t *testing.T) {
	priv := testKey(t)
	good := NewPrivateJWK(priv)
	other := NewPrivateJWK(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32)))
	for _, tt := range []struct {
		name string
		k    JWK
		msg  string
	}{
		{"x from another key", JWK{Kty: "OKP", Crv: "Ed25519", X: other.X, D: good.D}, "does not match"},
		{"d short", JWK{Kty: "OKP", Crv: "Ed25519", X: good.X, D: good.D[:40]}, "43"},
		{"d with padding", JWK{Kty: "OKP", Crv: "Ed25519", X: good.X, D: good.D[:42] + "="}, "base64url"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.k.PrivateKey()
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("PrivateKey() error = %v, want ErrMalformed mentioning %q", err, tt.msg)
			}
			if strings.Contains(err.Error(), good.D[:20]) {
				t.Errorf("error shows the private key: %v", err)
			}
		})
	}
	got, err := good.PrivateKey()
	if err != nil || !got.Equal(priv) {
		t.Errorf("PrivateKey() = %v; want the original key", err)
	}
}

func TestParseJWK(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   string
		want JWK
		msg  string // "" if it must parse
	}{
		{"public", `{"kty":"OKP","crv":"Ed25519","x":"abc"}`, JWK{Kty: "OKP", Crv: "Ed25519", X: "abc"}, ""},
		{"unknown members", `{"kty":"OKP","key_ops":["verify"],"x5c":[],"ext":true,"X":"upper"}`, JWK{Kty: "OKP"}, ""},
		{"whitespace", " \n{ \"kty\" : \"OKP\" }\n", JWK{Kty: "OKP"}, ""},
		{"escapes", `{"kty":"O\u004bP"}`, JWK{Kty: "OKP"}, ""},
		{"no kty", `{"crv":"Ed25519"}`, JWK{}, "kty is missing"},
		{"empty", ``, JWK{}, "JSON"},
		{"array", `[{"kty":"OKP"}]`, JWK{}, "object"},
		{"two objects", `{"kty":"OKP"} {"kty":"OKP"}`, JWK{}, "JSON"},
		{"trailing garbage", `{"kty":"OKP"}x`, JWK{}, "JSON"},
		{"duplicate", `{"kty":"OKP","x":"a","x":"b"}`, JWK{}, "twice"},
		{"duplicate unknown", `{"kty":"OKP","foo":1,"foo":2}`, JWK{}, "twice"},
		{"number", `{"kty":"OKP","x":1}`, JWK{}, "x must be a string"},
		{"null", `{"kty":null}`, JWK{}, "kty must be a string"},
		{"invalid UTF-8", "{\"kty\":\"OKP\",\"kid\":\"\xc3\"}", JWK{}, "UTF-8"},
		{"too large", `{"kty":"OKP","pad":"` + strings.Repeat("a", MaxJWKSize) + `"}`, JWK{}, "limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseJWK([]byte(tt.in))
			if tt.msg == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Errorf("ParseJWK() = %#v, want %#v", got, tt.want)
				}
				return
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("ParseJWK() = %v, %v; want ErrMalformed mentioning %q", got, err, tt.msg)
			}
		})
	}

	// Many members switch duplicate detection to a map; it must still work.
	var b strings.Builder
	b.WriteString(`{"kty":"OKP"`)
	for i := range 40 {
		fmt.Fprintf(&b, `,"m%d":%d`, i, i)
	}
	if _, err := ParseJWK([]byte(b.String() + `}`)); err != nil {
		t.Errorf("40 distinct members: %v", err)
	}
	if _, err := ParseJWK([]byte(b.String() + `,"m3":0}`)); err == nil {
		t.Errorf("40 members and a duplicate: parsed")
	}
}

func TestJWKNeverShowsD(t *testing.T) {
	k := NewPrivateJWK(testKey(t))
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("key", "jwk", k)
	for _, s := range []string{
		fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k), fmt.Sprint(&k), logged.String(),
	} {
		if strings.Contains(s, k.D) {
			t.Errorf("output shows d: %s", s)
		}
	}
	if !strings.Contains(logged.String(), k.Kid) {
		t.Errorf("log does not name the kid: %s", logged.String())
	}
}

func TestErrorsDoNotEchoLongInput(t *testing.T) {
	_, err := Parse(b64(`{"alg":"`+strings.Repeat("A", 1000)+`"}`) + ".." + strings.Repeat("A", 86))
	if err == nil || len(err.Error()) > 200 {
		t.Errorf("error = %v; want a short error", err)
	}
}

// RFC 9864's fully-specified "Ed25519" is accepted as a name for EdDSA over
// Ed25519, as jose v6 emits it.
func TestParseAcceptsFullySpecifiedEd25519(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	input := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"Ed25519"}`)) + "." + base64.RawURLEncoding.EncodeToString([]byte(`{}`))
	tok := input + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(priv, []byte(input)))
	j, err := Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Verify(priv.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
}

// Keys that anyone can sign for are refused: small-order points (the
// identity among them) and non-canonical encodings.
func TestPublicKeyRefusesWeakKeys(t *testing.T) {
	for name, x := range map[string]string{
		"identity":              "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"order 2 (y = -1)":      "7P___________________________________________3w",
		"order 4 (y = 0)":       "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"order 8":               "JuwTHIfn2b3DfMCUFjbRJF6R-6kDpyvPwbmcvs0FR4U",
		"non-canonical y = p+1": "7v___________________________________________38",
		"not on the curve":      "AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
	} {
		if _, err := (JWK{Kty: "OKP", Crv: "Ed25519", X: x}).PublicKey(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: PublicKey() error = %v, want ErrMalformed", name, err)
		}
	}
	// The forgery the check prevents: under the identity key, R = identity,
	// S = 0 verifies for any message.
	id, _ := base64.RawURLEncoding.DecodeString("AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	sig := append(append([]byte{}, id...), make([]byte, 32)...)
	if !ed25519.Verify(ed25519.PublicKey(id), []byte("anything"), sig) {
		t.Log("crypto/ed25519 no longer accepts the identity forgery; the check stays as defence in depth")
	}
}

// A header value quoted in an error, cut to its first bytes, has its
// secrets masked before the cut: no part of one is left.
func TestErrorsMaskSecretsBeforeTheCut(t *testing.T) {
	_, err := Parse(b64(`{"alg":"`+strings.Repeat("x", 20)+` AKIAIOSFODNN7EXAMPLE"}`) + ".." + strings.Repeat("A", 86))
	if err == nil || strings.Contains(err.Error(), "AKIAIOSF") || !strings.Contains(err.Error(), "[secret") {
		t.Errorf("error = %v", err)
	}
}
