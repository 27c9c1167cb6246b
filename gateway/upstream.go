package gateway

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"
)

// What the gateway does when an upstream fails a request (issue 16, item
// 7; docs/gateway.md, "When the upstream fails"): it is down, answers
// what is not an answer, cuts its answer short, or falls silent. The
// client always gets an answer it can read, in the protocol it speaks (a
// JSON-RPC error with its request's id on an MCP route, 502 or 504 on an
// HTTP route) within Config.UpstreamTimeout of silence and
// Config.CallTimeout in all; the call's tool.result says it failed, with
// a reason of the gateway's own words (the log has the cause).

// answerBounds bounds an upstream's answers over any transport (base,
// http.DefaultTransport if nil): silence is the longest the upstream may
// say nothing (before its headers, then between two reads of its body),
// whole the longest one answer may take from when it is sent. A request
// marked asStream (a session's GET stream, which answers no request and
// may idle for hours) has only its headers bound.
type answerBounds struct {
	base           http.RoundTripper
	silence, whole time.Duration
}

type streamKey struct{}

// asStream marks ctx as that of a request whose answer is a stream of the
// server's own messages, which may be silent for as long as it likes.
func asStream(ctx context.Context) context.Context {
	return context.WithValue(ctx, streamKey{}, true)
}

func (a *answerBounds) RoundTrip(r *http.Request) (*http.Response, error) {
	base := a.base
	if base == nil {
		base = http.DefaultTransport
	}
	ctx, cancel := context.WithCancelCause(r.Context())
	stream, _ := r.Context().Value(streamKey{}).(bool)
	headers := time.AfterFunc(a.silence, func() { cancel(&stallError{phase: stallHeaders, d: a.silence}) })
	var whole *time.Timer
	if !stream {
		whole = time.AfterFunc(a.whole, func() { cancel(&stallError{phase: stallWhole, d: a.whole}) })
	}
	stop := func() {
		headers.Stop()
		if whole != nil {
			whole.Stop()
		}
	}
	resp, err := base.RoundTrip(r.WithContext(ctx))
	headers.Stop()
	var se *stallError
	if errors.As(context.Cause(ctx), &se) {
		// A bound passed: whatever came is not waited for.
		if err == nil {
			resp.Body.Close()
		}
		stop()
		cancel(nil)
		return nil, se
	}
	if err != nil {
		stop()
		cancel(nil)
		return nil, err
	}
	b := &boundedBody{ReadCloser: resp.Body, ctx: ctx, cancel: cancel, stop: stop}
	if !stream {
		b.silence = a.silence
		b.idle = time.AfterFunc(a.silence, func() { cancel(&stallError{phase: stallSilent, d: a.silence}) })
	}
	resp.Body = b
	return resp, nil
}

// boundedBody is an answer's body whose reads end with a *stallError once
// a bound passed (the request's context is cancelled then, which ends a
// read waiting for the connection), and that ends its request's context
// when closed.
type boundedBody struct {
	io.ReadCloser
	ctx     context.Context
	cancel  context.CancelCauseFunc
	stop    func()      // stops the timers of the whole answer
	idle    *time.Timer // nil for a stream
	silence time.Duration
}

func (b *boundedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 && b.idle != nil {
		b.idle.Reset(b.silence)
	}
	if err != nil && err != io.EOF {
		if se := (*stallError)(nil); errors.As(context.Cause(b.ctx), &se) {
			err = se
		}
	}
	return n, err
}

func (b *boundedBody) Close() error {
	err := b.ReadCloser.Close()
	b.stop()
	if b.idle != nil {
		b.idle.Stop()
	}
	b.cancel(nil)
	return err
}

// stallError is an upstream that took longer than a bound.
type stallError struct {
	phase int // stallHeaders, stallSilent or stallWhole
	d     time.Duration
}

const (
	stallHeaders = iota // no headers within UpstreamTimeout
	stallSilent         // nothing more of the body within UpstreamTimeout
	stallWhole          // the answer not whole within CallTimeout
)

func (e *stallError) Error() string {
	switch e.phase {
	case stallHeaders:
		return "did not start answering within " + e.d.String()
	case stallSilent:
		return "fell silent for " + e.d.String() + " in the middle of its answer"
	default:
		return "did not finish its answer within " + e.d.String()
	}
}

// sendError is a request forward could not get an answer to; sent says
// it was written whole to the upstream (which may have acted on it).
type sendError struct {
	err  error
	sent bool
}

func (e *sendError) Error() string { return e.err.Error() }
func (e *sendError) Unwrap() error { return e.err }

// errTooLarge is an answer, or an SSE event of one, over MaxResponse.
var errTooLarge = errors.New("an answer of the upstream is over MaxResponse")

// upstreamName is how the client is told which upstream failed.
func upstreamName(rt *route) string {
	switch {
	case rt.kind == "http":
		return "the HTTP upstream " + rt.Name
	case rt.auth != "":
		return "the stdio server " + rt.Name
	}
	return "the MCP server " + rt.Name
}

// noAnswer is what the client of a request that got no answer at all
// (err from forward) is told, with the JSON-RPC code: CodeUnavailable if
// nothing reached the upstream (it is down: the client may try again),
// CodeBadAnswer if the request did (it may have taken effect).
func noAnswer(rt *route, err error) (code int, why string) {
	var se *sendError
	sent := errors.As(err, &se) && se.sent
	var stall *stallError
	switch {
	case !sent:
		return CodeUnavailable, upstreamName(rt) + " cannot be reached: nothing was forwarded; try again later"
	case errors.As(err, &stall):
		return CodeBadAnswer, upstreamName(rt) + " " + stall.Error() + ": the request reached it, and may have taken effect"
	}
	return CodeBadAnswer, upstreamName(rt) + " closed the connection before answering: the request reached it, and may have taken effect"
}

// readFailure says how reading an upstream's answer failed (err from the
// body), in the gateway's words.
func readFailure(rt *route, err error, limit int64) string {
	var stall *stallError
	switch {
	case errors.As(err, &stall):
		return upstreamName(rt) + " " + stall.Error()
	case errors.Is(err, errTooLarge):
		return upstreamName(rt) + " sent an answer over the gateway's limit of " + strconv.FormatInt(limit, 10) + " bytes"
	}
	return upstreamName(rt) + " cut its answer short: the connection closed before it was whole"
}
