package gateway

import (
	"bytes"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/mandatehq/mandate/internal/secret"
)

// secretLabels are the data labels policy sees for a call whose arguments
// hold secrets: "secret_in_args", and "secret:<detector>" for each kind.
func secretLabels(found map[string]any) []string {
	if len(found) == 0 {
		return nil
	}
	labels := []string{"secret_in_args"}
	for k := range found {
		labels = append(labels, "secret:"+k)
	}
	slices.Sort(labels[1:])
	return labels
}

// findCallSecrets counts the secrets in what a JSON-RPC request sends its
// server: its params (secret.Find), and its id, which the server reads
// too (in the gateway's spelling: its escapes decoded).
func findCallSecrets(m *message) map[string]any {
	return secret.Add(secret.Find(m.Params), secret.Scan(nil, m.ID))
}

// findRequestSecrets counts the secrets in what an HTTP request sends its
// upstream: the body (as secret.Find reads it, and percent-decoded, as a
// form is), the path and the query, percent-decoded, and the headers the
// gateway forwards. Each part is counted once however it is spelt.
func findRequestSecrets(r *http.Request, path string, body []byte) map[string]any {
	var found map[string]any
	add := func(part map[string]any) { found = secret.Add(found, part) }
	decoded := func(s string, unescape func(string) (string, error)) map[string]any {
		part := secret.Scan(nil, []byte(s))
		if strings.ContainsAny(s, "%+") {
			if d, err := unescape(s); err == nil {
				part = secret.Scan(part, []byte(d))
			}
		}
		return part
	}
	part := secret.Find(body)
	if bytes.ContainsAny(body, "%+") {
		if d, err := url.QueryUnescape(string(body)); err == nil {
			part = secret.Scan(part, []byte(d))
		}
	}
	add(part)
	add(decoded(path, url.PathUnescape))
	add(decoded(r.URL.RawQuery, url.QueryUnescape))
	for _, k := range forwardedHeaders {
		for _, v := range r.Header.Values(k) {
			add(secret.Scan(nil, []byte(v)))
		}
	}
	return found
}
