package jose

import (
	"bytes"
	"crypto/ed25519"
	"testing"
)

// A mandate-sized payload: about what the issuer signs.
var benchPayload = []byte(`{"iss":"https://mandate.example","sub":"user:ada@example.com","client_id":"spiffe://example/agent/builder","act":{"sub":"spiffe://example/agent/builder"},"aud":["https://mcp.example/github"],"iat":1764412800.030,"nbf":1764412800.030,"exp":1764412800.530,"jti":"m_01JDQ6Z9YV8W3K5T2N7R4P6M0H","scope":"mcp:github:create_issue","task":"t_01JDQ6Z9YV8W3K5T2N7R4P6M0G","cnf":{"jkt":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"}}`)

func BenchmarkSign(b *testing.B) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	h := Header{Typ: "at+jwt", Kid: Thumbprint(priv.Public().(ed25519.PublicKey))}
	b.ReportAllocs()
	for b.Loop() {
		Sign(priv, h, benchPayload)
	}
}

func BenchmarkParseVerify(b *testing.B) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	tok := Sign(priv, Header{Typ: "at+jwt", Kid: Thumbprint(pub)}, benchPayload)
	b.ReportAllocs()
	for b.Loop() {
		j, err := Parse(tok)
		if err != nil {
			b.Fatal(err)
		}
		if err := j.Verify(pub); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParse is Parse alone, without the Ed25519 verification that
// dominates BenchmarkParseVerify.
func BenchmarkParse(b *testing.B) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	pub := priv.Public().(ed25519.PublicKey)
	tok := Sign(priv, Header{Typ: "at+jwt", Kid: Thumbprint(pub)}, benchPayload)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkThumbprint(b *testing.B) {
	pub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	b.ReportAllocs()
	for b.Loop() {
		Thumbprint(pub)
	}
}

// BenchmarkJWKThumbprint is the general RFC 7638 path, for comparison.
func BenchmarkJWKThumbprint(b *testing.B) {
	k := NewPublicJWK(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)).Public().(ed25519.PublicKey))
	b.ReportAllocs()
	for b.Loop() {
		k.Thumbprint()
	}
}
