package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/secret"
	"github.com/mandatehq/mandate/policy"
)

// serveHTTPRoute enforces a mandate on one request to a plain HTTP API:
// the scope http:<name>:<METHOD>:<path> (the path in its canonical
// spelling, without the query: see canonical), a policy permit of
// HttpRequest on "METHOD /path", and a tool.call event on disk before it
// is forwarded, with that very path.
func (g *Gateway) serveHTTPRoute(w http.ResponseWriter, r *http.Request, rt *route) {
	escaped := r.URL.EscapedPath()
	sent, ok := "", rt != nil
	if ok {
		// The route's name as sent, not decoded: /http/fil%65s is not files.
		sent, ok = strings.CutPrefix(escaped, HTTPPathPrefix+rt.Name)
		ok = ok && (sent == "" || sent[0] == '/')
	}
	if !ok {
		textError(w, "no HTTP upstream of that name behind this gateway", http.StatusNotFound)
		return
	}
	// The proof names the URL as the client sent it, without the query
	// (RFC 9449 §4.2, htu).
	c, ok := g.authenticate(w, r, rt, g.cfg.PublicURL+escaped)
	if !ok {
		return
	}
	orig := w // MaxBytesReader's: it closes the connection after a body too large
	w = g.boundWrite(w)
	if sent == "" {
		sent = "/"
	}
	path, why := canonical(sent, pathRules{encodedSlashes: rt.encodedSlashes})
	if why != "" {
		msg := "path " + sent + " refused: it holds " + why + "; hint: send the path without dot segments, backslashes or encoded slashes"
		g.refuseRequest(r.Context(), rt, c, r.Method, "path", http.StatusBadRequest, msg)
		textError(w, msg, http.StatusBadRequest)
		return
	}
	if r.Header.Get("Upgrade") != "" {
		g.refuseRequest(r.Context(), rt, c, r.Method, "upgrade", http.StatusBadRequest, "a protocol upgrade")
		textError(w, "the gateway does not pass protocol upgrades (WebSocket, h2c) to HTTP upstreams", http.StatusBadRequest)
		return
	}
	resource := "http:" + rt.Name + ":" + r.Method + ":" + path
	if _, err := mandate.ParseScope(resource); err != nil {
		// Over a scope's limits: no scope can allow it.
		msg := "path " + sent + " refused: " + mandate.ErrorMessage(err)
		g.refuseRequest(r.Context(), rt, c, r.Method, "path", http.StatusBadRequest, msg)
		textError(w, msg, http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	body, err := io.ReadAll(http.MaxBytesReader(orig, r.Body, g.cfg.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			g.refuseRequest(ctx, rt, c, r.Method, "too-large", http.StatusRequestEntityTooLarge, "a body over the limit")
			textError(w, "the body is over the gateway's limit of "+itoa(g.cfg.MaxBody)+" bytes", http.StatusRequestEntityTooLarge)
		}
		return
	}
	if te := g.admitTask(ctx, rt, c, r.Method); te != nil {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(te.status)
		io.WriteString(w, te.msg+"\n")
		return
	}
	scopes, err := c.Scopes()
	if err != nil || !scopes.Allows(resource) {
		g.refuseHTTPWith(ctx, w, c, r.Method, resource, "the mandate does not allow "+resource+": its scope is "+c.Scope, nil, map[string]any{"cause": causeScope})
		return
	}
	req, err := g.request(ctx, rt, c)
	if err != nil {
		g.refuseHTTP(ctx, w, c, r.Method, resource, mandate.ErrorMessage(err), nil)
		return
	}
	// The route's labels are the gateway's word about the API, as a tool's
	// are: an external sink unless configured otherwise.
	req.Action, req.Resource, req.ToolLabels = policy.ActionHTTPRequest, r.Method+" "+path, rt.labels
	secrets := findRequestSecrets(r, path, body)
	own := secretLabels(secrets)
	req.Labels = append(req.Labels, own...)
	d := g.cfg.Policy.Decide(ctx, req)
	// For the monitor: what the request sends and where, refused or not.
	seen := map[string]any{"tool_labels": rt.labels}
	if secrets != nil {
		seen["arg_secrets"] = secrets
	}
	if held := g.held(c); d.Allow && !d.NeedsApproval && held != "" {
		g.refuseHTTPWith(ctx, w, c, r.Method, resource, "denied: "+held+"; a person must approve the rest of this task, and this gateway cannot hold an HTTP request", &d, seen)
		return
	}
	switch {
	case !d.Allow:
		why := strings.Join(d.Reasons, "; ")
		if len(d.Policies) > 0 {
			why = "policy " + strings.Join(d.Policies, ", ") + ": " + why
		}
		seen["cause"] = g.policyCause(ctx, req, own)
		g.refuseHTTPWith(ctx, w, c, r.Method, resource, "denied: "+why, &d, seen)
		return
	case d.NeedsApproval:
		g.refuseHTTPWith(ctx, w, c, r.Method, resource, "denied: policy "+strings.Join(d.Policies, ", ")+" requires a person's approval, which this gateway cannot wait for yet", &d, seen)
		return
	}
	details := map[string]any{"policy_set": d.SetHash, "policies": d.Policies, "args_bytes": len(body)}
	for k, v := range seen {
		details[k] = v
	}
	call := g.event(mandate.EventToolCall, c, "http", resource, mandate.OutcomeOK, "", details)
	if err := g.cfg.Events.Append(ctx, call); err != nil {
		g.logError("gateway: request not audited, so not forwarded", err, "upstream", rt.Name)
		textError(w, "the gateway could not record the request in its audit log, so it was not forwarded: try again later", http.StatusServiceUnavailable)
		return
	}
	g.tasks.record(c.Task, dataLabels(rt.labels), callCounters(rt.labels), g.cfg.Now())
	g.tasks.add(c.Task, "args_bytes", int64(len(body)), g.cfg.Now())
	g.writing.Add(1)
	defer g.writing.Done()
	// At the moment of effect: the request is in flight for Settle, and
	// the mandate is checked once more, now that the call is on record.
	fctx, f, err := g.begin(ctx, rt, c)
	if err != nil {
		g.recordResults(ctx, rt, []*mandate.Event{unsent(call, mandate.OutcomeDeny, "not forwarded: "+err.Error(), true)})
		textError(w, "not forwarded: "+err.Error(), http.StatusForbidden)
		return
	}
	defer f.finish()
	r = r.WithContext(fctx)
	start := g.cfg.Now()
	var status int
	var failure string // why the upstream failed the request, if it did
	unforwarded := false
	counter := &countingReader{}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(rt.upstream)
			// The upstream gets the path the scope was matched on, byte
			// for byte after its base: RawPath is what is sent.
			raw := joinPath(rt.upstream.EscapedPath(), path)
			decoded, _ := url.PathUnescape(raw)
			pr.Out.URL.Path, pr.Out.URL.RawPath = decoded, raw
			pr.Out.URL.RawQuery = r.URL.RawQuery
			// Only plain content headers go on: not the mandate and its
			// proof (the upstream is not their audience), nor cookies,
			// method overrides or forwarded identities, which the
			// upstream might trust.
			pr.Out.Header = forwardable(r.Header)
			pr.Out.Body, pr.Out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		},
		Transport: g.cfg.Client.Transport,
		ModifyResponse: func(resp *http.Response) error {
			f.leave(false) // answered: no longer being sent
			if err := g.relayLocation(rt, resp); err != nil {
				return err
			}
			// The headers go to the client with the first byte of the body:
			// an upstream that cuts its answer, or falls silent, before it
			// is a 502 or 504 the client can read, not a 200 cut short.
			first := bufio.NewReaderSize(resp.Body, 512)
			if _, err := first.Peek(1); err != nil && err != io.EOF {
				resp.Body.Close()
				return &sendError{err: err, sent: true}
			}
			status = resp.StatusCode
			counter.r = struct {
				io.Reader
				io.Closer
			}{first, resp.Body}
			resp.Body = counter
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			f.leave(false)
			if cause := context.Cause(fctx); errors.Is(cause, errStopped) {
				status, failure = http.StatusForbidden, "not forwarded whole: "+errStopped.Error()
				g.forwardError(w, rt, cause)
				return
			}
			se := (*sendError)(nil)
			if !errors.As(err, &se) {
				se = &sendError{err: err, sent: f.wrote.Load()}
			}
			unforwarded = !se.sent
			status, failure = g.upstreamError(w, rt, se)
		},
		FlushInterval: -1, // streams reach the client as they come
		ErrorLog:      slog.NewLogLogger(g.cfg.Logger.Handler(), slog.LevelWarn),
	}
	// An answer that fails once the client has its headers can only be
	// cut short (ReverseProxy panics with http.ErrAbortHandler, so that
	// the client sees it was not whole): its tool.result is recorded all
	// the same.
	defer func() {
		if err := counter.failed(); err != nil && failure == "" {
			failure = readFailure(rt, err, 0)
			g.cfg.Logger.Warn("gateway: the HTTP upstream's answer was not relayed whole", "upstream", rt.Name, "err", err)
		}
		res := *call
		g.tasks.add(c.Task, "result_bytes", int64(counter.n()), g.cfg.Now())
		res.Type, res.Reason, res.Details = mandate.EventToolResult, mandate.ClipReason(failure), map[string]any{"status": status, "result_bytes": counter.n(),
			"ms": g.cfg.Now().Sub(start).Milliseconds()}
		if status >= 400 || status == 0 || failure != "" {
			res.Outcome = mandate.OutcomeError
		}
		if unforwarded {
			res.Details["forwarded"] = false
		}
		g.recordResults(ctx, rt, []*mandate.Event{&res})
	}()
	proxy.ServeHTTP(w, r)
}

// relayLocation rewrites the Location of an upstream's answer to the
// gateway's address of the same place, if it is on the upstream (its
// scheme and host, under its base path). Elsewhere (another host, an
// internal address, outside the base) it is not relayed: a redirect is
// then a 502, so that the upstream cannot send the agent, and its next
// request, to an address of its choosing; on any other answer (201
// Created) the Location is dropped. The gateway itself never follows a
// redirect (the ReverseProxy does not).
func (g *Gateway) relayLocation(rt *route, resp *http.Response) error {
	locs := resp.Header.Values("Location")
	if len(locs) == 0 {
		return nil
	}
	resp.Header.Del("Location")
	base := strings.TrimSuffix(rt.upstream.EscapedPath(), "/")
	var u *url.URL
	var err error
	if len(locs) == 1 {
		u, err = resp.Request.URL.Parse(locs[0])
	}
	if u != nil && err == nil && u.User == nil && u.Scheme == rt.upstream.Scheme && strings.EqualFold(u.Host, rt.upstream.Host) {
		if rest, ok := strings.CutPrefix(u.EscapedPath(), base); ok && (rest == "" || rest[0] == '/') {
			out := g.cfg.PublicURL + HTTPPathPrefix + rt.Name + rest
			if u.RawQuery != "" {
				out += "?" + u.RawQuery
			}
			resp.Header.Set("Location", out)
			return nil
		}
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return &redirectError{status: resp.StatusCode, location: strings.Join(locs, ", ")}
	}
	return nil
}

// refuseHTTP answers 403 with the reason and records the decision event.
func (g *Gateway) refuseHTTP(ctx context.Context, w http.ResponseWriter, c *mandate.Claims, method, resource, why string, d *policy.Decision) {
	g.refuseHTTPWith(ctx, w, c, method, resource, why, d, nil)
}

// refuseHTTPWith is refuseHTTP with more details for the decision event.
func (g *Gateway) refuseHTTPWith(ctx context.Context, w http.ResponseWriter, c *mandate.Claims, method, resource, why string, d *policy.Decision, more map[string]any) {
	why = secret.Mask(why) // it quotes the path, which the client chose
	g.tasks.record(c.Task, nil, []string{"denials"}, g.cfg.Now())
	details := map[string]any{"http_status": http.StatusForbidden}
	if d != nil {
		details = d.AuditDetails()
		details["http_status"] = http.StatusForbidden
	}
	for k, v := range more {
		details[k] = v
	}
	if err := g.cfg.Events.Append(ctx, g.event(mandate.EventDecision, c, method, resource, mandate.OutcomeDeny, why, details)); err != nil {
		g.logError("gateway: denial not audited", err, "resource", resource)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	// RFC 6750 §3.1: a request that needs a scope the mandate lacks.
	w.Header().Set("WWW-Authenticate", `Bearer error="insufficient_scope", error_description="`+strings.NewReplacer(`"`, "'", "\\", "/").Replace(why)+`"`)
	w.WriteHeader(http.StatusForbidden)
	io.WriteString(w, why+"\n")
}

// forwardedHeaders are the request headers an HTTP upstream gets.
var forwardedHeaders = []string{"Accept", "Accept-Language", "Content-Type", "Content-Language",
	"If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since", "If-Range", "Range", "User-Agent"}

func forwardable(h http.Header) http.Header {
	out := http.Header{}
	for _, k := range forwardedHeaders {
		if v := h.Values(k); len(v) > 0 {
			out[k] = v
		}
	}
	return out
}

// joinPath joins an upstream's base path and a request path.
func joinPath(base, path string) string {
	return strings.TrimSuffix(base, "/") + path
}

// countingReader counts the bytes of a response as they pass, and keeps
// the error that ended them, if not the end of the body.
type countingReader struct {
	r     io.ReadCloser
	mu    sync.Mutex
	total int64
	err   error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.mu.Lock()
	c.total += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	return n, err
}

func (c *countingReader) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *countingReader) Close() error { return c.r.Close() }

func (c *countingReader) n() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}
