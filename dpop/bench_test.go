package dpop

import (
	"testing"
	"time"
)

func BenchmarkCheck(b *testing.B) {
	proof := NewProof(testPriv, "POST", testURL, testToken, t0)
	req := Requirements{Method: "POST", URL: testURL, AccessToken: testToken, Now: t0.Add(time.Second)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Check(proof, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewProof(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		NewProof(testPriv, "POST", testURL, testToken, t0)
	}
}
