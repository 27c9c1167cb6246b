package gateway

import (
	"context"
	"errors"
	"net/http/httptrace"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mandatehq/mandate"
)

// Requests in flight, and how a revocation waits them out (issue 15,
// item 10; docs/gateway.md, "Revocation takes effect at once").
//
// Every request the gateway sends an upstream on behalf of a mandate
// registers here, then checks the mandate once more (begin): at the
// moment of effect, after the call's write-ahead record is durable. It
// leaves the registry once it has been written whole to the upstream
// (net/http/httptrace's WroteRequest; for a stdio server, once the bridge
// wrote it to the process), or once its sending ended otherwise.
//
// A revoker calls Settle once its change is in force (the store updates
// its revocation set, and its agents, before any event that follows the
// change's is reported durable). Settle takes the requests registered at
// that moment whose mandate no longer passes the check, and waits until
// each is sent or, past Config.SettleTimeout, cuts it off. A request
// registered after that moment checks after the change, and is refused.
// One registered before it either checked before the change, and Settle
// waits for it, or after, and is refused. So once the revoker answers,
// nothing more of what it stopped reaches an upstream, as an RCU grace
// period waits out the readers that began before it.

// flights is the registry.
type flights struct {
	mu   sync.Mutex
	next uint64
	m    map[uint64]*flight
}

// flight is one request in flight.
type flight struct {
	id     uint64
	reg    *flights
	claims *mandate.Claims
	cancel context.CancelCauseFunc
	wrote  atomic.Bool   // it was written whole
	done   chan struct{} // closed when it left the registry
	// admitted: a stdio bridge is writing it to its process; cut: Settle
	// cut it off. Under reg.mu.
	admitted, cut bool
}

// errStopped is the cause of a request cut off by Settle.
var errStopped = errors.New("the mandate was revoked while the request was being sent: it was cut off")

// stopWait bounds how long Settle waits, after cutting requests off, for
// them to confirm it (a closed connection returns at once).
const stopWait = time.Second

// flightHeader carries a request's flight to a stdio bridge, which admits
// it (flights.admit) before writing it to its process.
const flightHeader = "Mandate-Flight"

func (fs *flights) add(f *flight) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.m == nil {
		fs.m = map[uint64]*flight{}
	}
	fs.next++
	f.id, f.reg = fs.next, fs
	fs.m[f.id] = f
}

// leave takes f out of the registry; wrote says it was written whole.
func (f *flight) leave(wrote bool) {
	if wrote {
		f.wrote.Store(true)
	}
	f.reg.mu.Lock()
	defer f.reg.mu.Unlock()
	if _, ok := f.reg.m[f.id]; ok {
		delete(f.reg.m, f.id)
		close(f.done)
	}
}

// finish ends f's exchange: call it once the answer is read.
func (f *flight) finish() {
	f.leave(false)
	f.cancel(nil)
}

func (fs *flights) snapshot() []*flight {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	out := make([]*flight, 0, len(fs.m))
	for _, f := range fs.m {
		out = append(out, f)
	}
	return out
}

// admit is a stdio bridge's word that it is about to write the request of
// flight id to its process: false if that flight is unknown or was cut
// off (then nothing may be written). sent, once the write is done, lets
// it leave.
func (fs *flights) admit(id string) (sent func(), ok bool) {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return nil, false
	}
	fs.mu.Lock()
	f := fs.m[n]
	if f == nil || f.cut {
		fs.mu.Unlock()
		return nil, false
	}
	f.admitted = true
	fs.mu.Unlock()
	return func() { f.leave(true) }, true
}

// begin registers a request that is about to be sent to rt on behalf of c,
// then checks c once more (stillValid): a revocation, or a disabled agent,
// that came into force while the call was being recorded stops it here.
// The request must be sent with the returned context; finish the flight
// once its answer is read.
func (g *Gateway) begin(ctx context.Context, rt *route, c *mandate.Claims) (context.Context, *flight, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	f := &flight{claims: c, cancel: cancel, done: make(chan struct{})}
	g.flights.add(f)
	if err := g.stillValid(ctx, c); err != nil {
		f.finish()
		return nil, nil, &notValidError{err}
	}
	if rt.auth == "" { // a stdio bridge admits the request itself
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				f.leave(true)
			}
		}})
	}
	return ctx, f, nil
}

// notValidError is the refusal of a request whose mandate was no longer
// valid at the moment of effect.
type notValidError struct{ err error }

func (e *notValidError) Error() string { return e.err.Error() }

// stillValid checks again a mandate verified earlier: unexpired, neither
// it nor an ancestor revoked, no agent of its chain disabled
// (Config.Revoked).
func (g *Gateway) stillValid(ctx context.Context, c *mandate.Claims) error {
	if !g.cfg.Now().Before(c.Expiry.Time) {
		return errors.New("mandate " + c.ID + " expired")
	}
	return g.revoked(ctx, c)
}

// Settle implements mandate.Settler: it returns once every request in
// flight whose mandate no longer passes the gateway's check (revoked, an
// ancestor revoked, an agent of its chain disabled, expired) has been
// written whole to its upstream or cut off. It waits up to
// Config.SettleTimeout for them, then cuts off those still being sent:
// their connections are closed, so their upstreams never get them whole.
// Call it once the change is in force, and answer after it returns.
func (g *Gateway) Settle(ctx context.Context) mandate.Settled {
	var out mandate.Settled
	var wait []*flight
	for _, f := range g.flights.snapshot() {
		if g.stillValid(ctx, f.claims) != nil {
			wait = append(wait, f)
		}
	}
	if len(wait) == 0 {
		return out
	}
	if g.settling != nil {
		g.settling(len(wait))
	}
	bound := time.NewTimer(g.cfg.SettleTimeout)
	defer bound.Stop()
	var late []*flight
waiting:
	for i, f := range wait {
		select {
		case <-f.done:
			continue
		case <-bound.C:
		case <-ctx.Done():
		}
		late = wait[i:]
		break waiting
	}
	cut := map[*flight]bool{}
	g.flights.mu.Lock()
	for _, f := range late {
		if _, ok := g.flights.m[f.id]; ok {
			f.cut, cut[f] = true, true
		}
	}
	g.flights.mu.Unlock()
	for f := range cut {
		f.cancel(errStopped)
	}
	stop := time.NewTimer(stopWait)
	defer stop.Stop()
	expired := false
	for _, f := range wait {
		if cut[f] && !expired {
			select {
			case <-f.done:
			case <-stop.C:
				expired = true
			}
		}
		select {
		case <-f.done:
			switch {
			case f.wrote.Load():
				out.Sent++
			case cut[f]:
				out.Stopped++
			}
		default:
			out.Unconfirmed++
		}
	}
	if out.Stopped+out.Unconfirmed > 0 {
		g.cfg.Logger.Warn("gateway: requests of revoked mandates were still being sent past the bound: cut off",
			"stopped", out.Stopped, "unconfirmed", out.Unconfirmed, "bound", g.cfg.SettleTimeout)
	}
	return out
}
