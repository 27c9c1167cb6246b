package client

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Source keeps a mandate fresh: it returns the one it holds until a
// quarter of its lifetime is left, then obtains a new one. It is safe for
// concurrent use; concurrent callers share one refresh.
//
// A root mandate's refresh is a new root mandate, so a new task: use a
// long enough lifetime for one task's root, and short ones below it.
type Source struct {
	mu    sync.Mutex
	fetch func(context.Context) (*Mandate, error)
	cur   *Mandate
	now   func() time.Time
}

// RootSource returns a Source of root mandates for req.
func (c *Client) RootSource(req Request) *Source {
	return &Source{now: c.cfg.Now, fetch: func(ctx context.Context) (*Mandate, error) { return c.Root(ctx, req) }}
}

// DelegateSource returns a Source of mandates delegated to actor from the
// mandates of parent: a refresh delegates again from parent's current
// mandate (refreshing it first if it is due).
func (c *Client) DelegateSource(parent *Source, actor Actor, req Request, opts DelegateOptions) *Source {
	return &Source{now: c.cfg.Now, fetch: func(ctx context.Context) (*Mandate, error) {
		p, err := parent.Mandate(ctx)
		if err != nil {
			return nil, err
		}
		return c.Delegate(ctx, p, actor, req, opts)
	}}
}

// Mandate returns a mandate with at least a quarter of its lifetime left.
func (s *Source) Mandate(ctx context.Context) (*Mandate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.cur; m != nil {
		if m.ExpiresIn(s.now()) > m.Lifetime/4 {
			return m, nil
		}
	}
	m, err := s.fetch(ctx)
	if err != nil {
		return nil, err
	}
	s.cur = m
	return m, nil
}

// Transport returns an http.RoundTripper that sends every request with a
// fresh mandate from s (and a DPoP proof when it is bound) over base
// (http.DefaultTransport if nil). A request an http.Client makes to follow
// a redirect gets the mandate only if it goes to the origin (scheme and
// host) the first request went to; to another it fails, so that a server
// cannot have the mandate sent to an address of its choosing.
func (s *Source) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{src: s, base: base}
}

type transport struct {
	src  *Source
	base http.RoundTripper
}

func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	if first := firstRequest(r); first != r && (first.URL.Scheme != r.URL.Scheme || !strings.EqualFold(first.URL.Host, r.URL.Host)) {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, fmt.Errorf("client: %s redirected to another origin, %s://%s: the mandate is not sent there", first.URL.Host, r.URL.Scheme, r.URL.Host)
	}
	m, err := t.src.Mandate(r.Context())
	if err != nil {
		if r.Body != nil {
			r.Body.Close()
		}
		return nil, err
	}
	r = r.Clone(r.Context()) // a RoundTripper must not modify the request
	if err := m.Authorize(r); err != nil {
		return nil, err
	}
	return t.base.RoundTrip(r)
}

// firstRequest is the request that r follows a redirect of (through
// Request.Response, which http.Client sets), or r.
func firstRequest(r *http.Request) *http.Request {
	for r.Response != nil && r.Response.Request != nil {
		r = r.Response.Request
	}
	return r
}
