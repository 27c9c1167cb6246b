package issuer_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/issuer"
)

// A wall clock that jumps 15 minutes forward and is set right again does
// not make the replay set forget an assertion that is good again once it
// is back, nor refuse fresh assertions as expired after it.
func TestReplaySetAfterClockJump(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	used := f.assertion(nil) // good for a minute
	if _, err := f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.ClientAssertion = used })); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(15 * time.Minute)
	// A mint while the clock is ahead, with an assertion made by that clock.
	if _, err := f.is.MintRoot(ctx, f.request(nil)); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(-15 * time.Minute)
	_, err := f.is.MintRoot(ctx, f.request(func(r *issuer.RootRequest) { r.ClientAssertion = used }))
	if err == nil || !strings.Contains(err.Error(), "replay") {
		t.Fatalf("an assertion used before the clock jumped, replayed after it came back: %v, want a refusal as a replay", err)
	}
	if _, err := f.is.MintRoot(ctx, f.request(nil)); err != nil {
		t.Errorf("a fresh assertion after the clock came back: %v", err)
	}
}
