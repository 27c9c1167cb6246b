package gateway

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/policy"
)

// serveHTTPRoute enforces a mandate on one request to a plain HTTP API:
// the scope http:<name>:<METHOD>:<path> (the path as sent, escapes
// included, without the query), a policy permit of HttpRequest on
// "METHOD /path", and a tool.call event on disk before it is forwarded.
func (g *Gateway) serveHTTPRoute(w http.ResponseWriter, r *http.Request, rt *route) {
	if rt == nil {
		http.Error(w, "no HTTP upstream of that name behind this gateway", http.StatusNotFound)
		return
	}
	escaped := r.URL.EscapedPath()
	// The proof names the URL as the client sent it, without the query
	// (RFC 9449 §4.2, htu).
	c, ok := g.authenticate(w, r, rt, g.cfg.PublicURL+escaped)
	if !ok {
		return
	}
	path := strings.TrimPrefix(escaped, HTTPPathPrefix+rt.Name)
	if path == "" {
		path = "/"
	}
	if why := unsafePath(path); why != "" {
		http.Error(w, "path "+path+": "+why, http.StatusBadRequest)
		return
	}
	if r.Header.Get("Upgrade") != "" {
		http.Error(w, "the gateway does not pass protocol upgrades (WebSocket, h2c) to HTTP upstreams", http.StatusBadRequest)
		return
	}
	resource := "http:" + rt.Name + ":" + r.Method + ":" + path
	ctx := r.Context()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, "the body is over the gateway's limit of "+itoa(g.cfg.MaxBody)+" bytes", http.StatusRequestEntityTooLarge)
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
		g.refuseHTTP(ctx, w, c, r.Method, resource, "the mandate does not allow "+resource+": its scope is "+c.Scope, nil)
		return
	}
	req, err := g.request(ctx, rt, c)
	if err != nil {
		g.refuseHTTP(ctx, w, c, r.Method, resource, err.Error(), nil)
		return
	}
	req.Action, req.Resource = policy.ActionHTTPRequest, r.Method+" "+path
	secrets := findSecrets(body)
	req.Labels = append(req.Labels, secretLabels(secrets)...)
	d := g.cfg.Policy.Decide(ctx, req)
	if held := g.held(c); d.Allow && !d.NeedsApproval && held != "" {
		g.refuseHTTP(ctx, w, c, r.Method, resource, "denied: "+held+"; a person must approve the rest of this task, and this gateway cannot hold an HTTP request", &d)
		return
	}
	switch {
	case !d.Allow:
		why := strings.Join(d.Reasons, "; ")
		if len(d.Policies) > 0 {
			why = "policy " + strings.Join(d.Policies, ", ") + ": " + why
		}
		g.refuseHTTP(ctx, w, c, r.Method, resource, "denied: "+why, &d)
		return
	case d.NeedsApproval:
		g.refuseHTTP(ctx, w, c, r.Method, resource, "denied: policy "+strings.Join(d.Policies, ", ")+" requires a person's approval, which this gateway cannot wait for yet", &d)
		return
	}
	details := map[string]any{"policy_set": d.SetHash, "policies": d.Policies, "args_bytes": len(body)}
	if secrets != nil {
		details["arg_secrets"] = secrets
	}
	call := g.event(mandate.EventToolCall, c, "http", resource, mandate.OutcomeOK, "", details)
	if err := g.cfg.Events.Append(ctx, call); err != nil {
		g.cfg.Logger.Error("gateway: request not audited, so not forwarded", "upstream", rt.Name, "err", err)
		http.Error(w, "the gateway could not record the request in its audit log, so it was not forwarded: try again later", http.StatusServiceUnavailable)
		return
	}
	g.tasks.record(c.Task, nil, []string{"calls"}, g.cfg.Now())
	g.tasks.add(c.Task, "args_bytes", int64(len(body)), g.cfg.Now())
	g.writing.Add(1)
	defer g.writing.Done()
	// At the moment of effect: the request is in flight for Settle, and
	// the mandate is checked once more, now that the call is on record.
	fctx, f, err := g.begin(ctx, rt, c)
	if err != nil {
		res := *call
		res.Type, res.Outcome, res.Reason = mandate.EventToolResult, mandate.OutcomeDeny, mandate.ClipReason("not forwarded: "+err.Error())
		res.Details = map[string]any{"forwarded": false}
		g.recordResults(ctx, rt, []*mandate.Event{&res})
		http.Error(w, "not forwarded: "+err.Error(), http.StatusForbidden)
		return
	}
	defer f.finish()
	r = r.WithContext(fctx)
	start := g.cfg.Now()
	var status int
	counter := &countingReader{}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(rt.upstream)
			// The upstream gets the path the scope was matched on, escapes
			// as they were: Path decoded, RawPath as sent.
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
			status = resp.StatusCode
			counter.r = resp.Body
			resp.Body = counter
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			f.leave(false)
			status = http.StatusBadGateway
			if cause := context.Cause(fctx); errors.Is(cause, errStopped) {
				g.forwardError(w, rt, cause)
				return
			}
			g.upstreamError(w, rt, err)
		},
		FlushInterval: -1, // streams reach the client as they come
	}
	proxy.ServeHTTP(w, r)
	res := *call
	g.tasks.add(c.Task, "result_bytes", int64(counter.n()), g.cfg.Now())
	res.Type, res.Details = mandate.EventToolResult, map[string]any{"status": status, "result_bytes": counter.n(),
		"ms": g.cfg.Now().Sub(start).Milliseconds()}
	if status >= 400 || status == 0 {
		res.Outcome = mandate.OutcomeError
	}
	g.recordResults(ctx, rt, []*mandate.Event{&res})
}

// refuseHTTP answers 403 with the reason and records the decision event.
func (g *Gateway) refuseHTTP(ctx context.Context, w http.ResponseWriter, c *mandate.Claims, method, resource, why string, d *policy.Decision) {
	g.tasks.record(c.Task, nil, []string{"denials"}, g.cfg.Now())
	details := map[string]any{"http_status": http.StatusForbidden}
	if d != nil {
		details = d.AuditDetails()
		details["http_status"] = http.StatusForbidden
	}
	if err := g.cfg.Events.Append(ctx, g.event(mandate.EventDecision, c, method, resource, mandate.OutcomeDeny, why, details)); err != nil {
		g.cfg.Logger.Error("gateway: denial not audited", "resource", resource, "err", err)
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

// unsafePath says why a request path is refused, or "": a path with an
// empty segment, or a segment that is "." or ".." once decoded (with or
// without ;parameters), which an upstream might resolve to a path the
// scope did not cover.
func unsafePath(escaped string) string {
	for i, seg := range strings.Split(escaped, "/") {
		if i == 0 {
			continue
		}
		if seg == "" && i != len(strings.Split(escaped, "/"))-1 {
			return "an empty segment (//)"
		}
		name, _, _ := strings.Cut(seg, ";")
		dec, err := url.PathUnescape(name)
		if err != nil {
			return "a malformed escape"
		}
		if dec == "." || dec == ".." {
			return "a . or .. segment"
		}
		if strings.ContainsRune(dec, '\\') {
			return "a backslash, which some servers take for a /"
		}
	}
	return ""
}

// joinPath joins an upstream's base path and a request path.
func joinPath(base, path string) string {
	return strings.TrimSuffix(base, "/") + path
}

// countingReader counts the bytes of a response as they pass.
type countingReader struct {
	r     io.ReadCloser
	mu    sync.Mutex
	total int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.mu.Lock()
	c.total += int64(n)
	c.mu.Unlock()
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

func (c *countingReader) n() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}
