// Package noredirect makes the HTTP clients Mandate sends its requests
// with: clients that never follow a redirect. Every request Mandate makes
// (to an MCP or HTTP upstream, to an issuer's JWKS or introspection, to a
// Mandate server's token endpoint or API) goes to the address it was
// configured with, or nowhere: a redirect followed would send the request,
// with its credential and (307, 308) its body, to an address the one
// answering chose, and hand back that address's answer as if it were the
// first one's. A redirect comes back to the caller as the answer (an
// *http.Response with its 3xx status), which callers treat as a failure.
//
// It is not for a client that means to follow redirects: that must be a
// named, documented option of its own.
package noredirect

import "net/http"

// Check is a CheckRedirect that follows nothing: the redirect is the
// answer.
func Check(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Client returns a copy of c that follows no redirect; c itself is not
// changed. A nil c is the zero client (the default transport, no
// timeout).
func Client(c *http.Client) *http.Client {
	var out http.Client
	if c != nil {
		out = *c
	}
	out.CheckRedirect = Check
	return &out
}
