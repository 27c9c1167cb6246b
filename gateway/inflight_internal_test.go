package gateway

import (
	"context"
	"strconv"
	"testing"
)

// A stdio bridge writes a request to its process only if the gateway's
// flight for it is still on, and the flight is sent once written: one cut
// off by Settle, or one of no flight, is not written.
func TestStdioBridgeAdmitsOnlyLiveFlights(t *testing.T) {
	var fs flights
	newFlight := func() *flight {
		_, cancel := context.WithCancelCause(context.Background())
		f := &flight{cancel: cancel, done: make(chan struct{})}
		fs.add(f)
		return f
	}
	if _, ok := fs.admit(""); ok {
		t.Error("a request of no flight was admitted")
	}
	if _, ok := fs.admit("99"); ok {
		t.Error("a request of an unknown flight was admitted")
	}
	cut := newFlight()
	fs.mu.Lock()
	cut.cut = true
	fs.mu.Unlock()
	if _, ok := fs.admit(strconv.FormatUint(cut.id, 10)); ok {
		t.Error("a request cut off was admitted")
	}
	live := newFlight()
	sent, ok := fs.admit(strconv.FormatUint(live.id, 10))
	if !ok {
		t.Fatal("a live flight was not admitted")
	}
	sent()
	select {
	case <-live.done:
	default:
		t.Error("a flight written to its process is still in flight")
	}
	if !live.wrote.Load() {
		t.Error("a flight written to its process does not count as sent")
	}
}
