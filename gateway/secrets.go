package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// secretDetectors find credentials in tool arguments and results
// (docs/gateway.md, "Inspection"). Each is a pattern of a credential's own
// format, so that it finds few false positives; none finds every secret.
var secretDetectors = []struct {
	name string
	re   *regexp.Regexp
}{
	{"private_key", regexp.MustCompile(`-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----`)},
	{"aws_access_key_id", regexp.MustCompile(`\b(?:AKIA|ASIA)[0-9A-Z]{16}\b`)},
	{"aws_secret_access_key", regexp.MustCompile(`(?i)aws.{0,20}secret.{0,20}[=:"' ]\s*"?[A-Za-z0-9/+]{40}\b`)},
	{"github_token", regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b`)},
	{"gitlab_token", regexp.MustCompile(`\bglpat-[A-Za-z0-9_-]{20,}\b`)},
	{"slack_token", regexp.MustCompile(`\bxox[abposr]-[A-Za-z0-9-]{10,}\b`)},
	{"google_api_key", regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}\b`)},
	{"stripe_secret_key", regexp.MustCompile(`\b[rs]k_live_[0-9A-Za-z]{24,}\b`)},
	{"llm_api_key", regexp.MustCompile(`\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{32,}\b`)},
	{"jwt", regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}`)},
	{"mandate_approver_token", regexp.MustCompile(`\bmapr_[A-Za-z0-9_-]{43}\b`)},
}

// maxSecretMatches bounds the matches counted per detector.
const maxSecretMatches = 100

// findSecrets counts what each detector finds in b, as whoever decodes it
// reads it: JSON (tool arguments and results, most HTTP bodies) is scanned
// in the gateway's own encoding of its values, so that an escape the
// receiver decodes ("\u0041KIA…" is "AKIA…") hides nothing; other bytes
// (a form, plain text) are scanned as they are. (The gateway forwards the
// client's arguments with their escapes: it must scan what they mean.)
func findSecrets(b []byte) map[string]any {
	found := scanSecrets(nil, b)
	if bytes.IndexByte(b, '\\') >= 0 {
		if plain, ok := unescapedJSON(b); ok {
			found = scanSecrets(found, plain)
		}
	}
	return found
}

// scanSecrets adds to found what each detector finds in b, keeping the
// higher count where found has one already (the same text scanned in two
// encodings is one secret, not two). It scans as maskSecrets does
// (eachSecret), so that what is counted is what an approver's view masks.
func scanSecrets(found map[string]any, b []byte) map[string]any {
	var counts map[string]int
	eachSecret(b, maxSecretMatches, func(name string, _, _ int) {
		if counts == nil {
			counts = map[string]int{}
		}
		counts[name]++
	})
	for name, n := range counts {
		if found == nil {
			found = map[string]any{}
		}
		if prev, _ := found[name].(int); n > prev {
			found[name] = n
		}
	}
	return found
}

// unescapedJSON re-encodes a JSON text with no escapes but those JSON
// requires (quotes, backslashes, control characters): its strings read as
// their receiver decodes them. It reports false for what is not JSON.
func unescapedJSON(b []byte) ([]byte, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil || dec.More() {
		return nil, false
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	if enc.Encode(v) != nil {
		return nil, false
	}
	return out.Bytes(), true
}

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

// addSecrets adds to found the counts of part, which was scanned apart
// (another part of what is sent), and returns it.
func addSecrets(found, part map[string]any) map[string]any {
	for k, v := range part {
		if found == nil {
			found = map[string]any{}
		}
		prev, _ := found[k].(int)
		found[k] = min(prev+v.(int), maxSecretMatches)
	}
	return found
}

// findCallSecrets counts the secrets in what a JSON-RPC request sends its
// server: its params (findSecrets), and its id, which the server reads
// too (in the gateway's spelling: its escapes decoded).
func findCallSecrets(m *message) map[string]any {
	return addSecrets(findSecrets(m.Params), scanSecrets(nil, m.ID))
}

// maskText returns s with each secret the detectors find replaced by
// "[secret:<detector>]": for the text of an audit event (a resource, a
// reason, an id) that holds what a caller sent, so that a refusal of a
// secret does not write it to the log, which the public may read.
func maskText(s string) string {
	type cut struct {
		start, end int
		name       string
	}
	var cuts []cut
	eachSecret([]byte(s), -1, func(name string, start, end int) { cuts = append(cuts, cut{start, end, name}) })
	if len(cuts) == 0 {
		return s
	}
	slices.SortStableFunc(cuts, func(x, y cut) int { return x.start - y.start })
	var b strings.Builder
	at := 0
	for _, c := range cuts {
		if c.end <= at {
			continue // within the last one masked
		}
		b.WriteString(s[at:max(at, c.start)])
		b.WriteString("[secret:" + c.name + "]")
		at = c.end
	}
	b.WriteString(s[at:])
	// (A byte that is not UTF-8 is replaced, not dropped: dropped, it
	// could join two halves into a match.)
	return strings.ToValidUTF8(b.String(), "\uFFFD")
}

// findRequestSecrets counts the secrets in what an HTTP request sends its
// upstream: the body (as findSecrets reads it, and percent-decoded, as a
// form is), the path and the query, percent-decoded, and the headers the
// gateway forwards. Each part is counted once however it is spelt.
func findRequestSecrets(r *http.Request, path string, body []byte) map[string]any {
	var found map[string]any
	add := func(part map[string]any) { found = addSecrets(found, part) }
	decoded := func(s string, unescape func(string) (string, error)) map[string]any {
		part := scanSecrets(nil, []byte(s))
		if strings.ContainsAny(s, "%+") {
			if d, err := unescape(s); err == nil {
				part = scanSecrets(part, []byte(d))
			}
		}
		return part
	}
	part := findSecrets(body)
	if bytes.ContainsAny(body, "%+") {
		if d, err := url.QueryUnescape(string(body)); err == nil {
			part = scanSecrets(part, []byte(d))
		}
	}
	add(part)
	add(decoded(path, url.PathUnescape))
	add(decoded(r.URL.RawQuery, url.QueryUnescape))
	for _, k := range forwardedHeaders {
		for _, v := range r.Header.Values(k) {
			add(scanSecrets(nil, []byte(v)))
		}
	}
	return found
}
