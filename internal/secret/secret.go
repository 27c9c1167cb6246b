// Package secret finds credentials in text and masks them: the one set of
// detectors that the gateway scans tool calls with (docs/gateway.md,
// "Inspection"), and that everything Mandate writes where others read it
// (an audit event, a caller's error, a log line) is masked with.
//
// Each detector is a pattern of a credential's own format (an AWS access
// key id, a GitHub token, a PEM private key header, a JWT, …), so that it
// finds few false positives. None finds every secret, and a secret spelt
// otherwise (encoded, split, reversed) is not found: masking keeps a
// credential sent by mistake out of a log; it does not stop a client that
// means to write one there.
//
// A masked secret reads "[secret:<detector>]", which no detector finds,
// so that masking twice is masking once.
package secret

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// detectors find credentials (docs/gateway.md, "Inspection"). Each is a
// pattern of a credential's own format, so that it finds few false
// positives; none finds every secret. need lists literals of which every
// match holds one (ASCII; compared ignoring ASCII case where fold): a test
// far cheaper than the pattern, which skips it on the texts that cannot
// match, almost all of them. (aws_secret_access_key's (?i) folds "s" with
// "ſ", but "a" and "w" only with "A" and "W".)
var detectors = []struct {
	name string
	re   *regexp.Regexp
	need []string
	fold bool
}{
	{"private_key", regexp.MustCompile(`-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----`), []string{"-----BEGIN "}, false},
	{"aws_access_key_id", regexp.MustCompile(`\b(?:AKIA|ASIA)[0-9A-Z]{16}\b`), []string{"AKIA", "ASIA"}, false},
	{"aws_secret_access_key", regexp.MustCompile(`(?i)aws.{0,20}secret.{0,20}[=:"' ]\s*"?[A-Za-z0-9/+]{40}\b`), []string{"aw"}, true},
	{"github_token", regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b`), []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"}, false},
	{"gitlab_token", regexp.MustCompile(`\bglpat-[A-Za-z0-9_-]{20,}\b`), []string{"glpat-"}, false},
	{"slack_token", regexp.MustCompile(`\bxox[abposr]-[A-Za-z0-9-]{10,}\b`), []string{"xox"}, false},
	{"google_api_key", regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}\b`), []string{"AIza"}, false},
	{"stripe_secret_key", regexp.MustCompile(`\b[rs]k_live_[0-9A-Za-z]{24,}\b`), []string{"k_live_"}, false},
	{"llm_api_key", regexp.MustCompile(`\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{32,}\b`), []string{"sk-"}, false},
	{"jwt", regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}`), []string{"eyJ"}, false},
	{"mandate_approver_token", regexp.MustCompile(`\bmapr_[A-Za-z0-9_-]{43}\b`), []string{"mapr_"}, false},
}

// mayHold reports whether b holds one of need (ignoring ASCII case if
// fold).
func mayHold(b []byte, need []string, fold bool) bool {
	for _, n := range need {
		if !fold {
			if bytes.Contains(b, []byte(n)) {
				return true
			}
			continue
		}
		for i := 0; i+len(n) <= len(b); i++ {
			j := 0
			for j < len(n) && b[i+j]|0x20 == n[j] { // n is lower case: only its upper case ORs to it
				j++
			}
			if j == len(n) {
				return true
			}
		}
	}
	return false
}

// MaxMatches bounds the matches counted per detector.
const MaxMatches = 100

// maskExtent extends a detector's match to what must be masked with it:
// a private key's header is what is found, the key is what follows, to
// the end of its JSON string.
var maskExtent = map[string]*regexp.Regexp{
	"private_key": regexp.MustCompile(`^-----BEGIN [^"\\]*?-----(?:[^"\\]|\\.)*`),
}

// Each calls fn for each span of b a detector finds, at most limit per
// detector (limit < 0: all), in the order of the detectors, with the span
// extended by maskExtent. Find counts what it calls; Mask and MaskJSON
// mask it: one scan, so that what is counted is what is masked.
func Each(b []byte, limit int, fn func(name string, start, end int)) {
	for _, d := range detectors {
		if !mayHold(b, d.need, d.fold) {
			continue
		}
		ext := maskExtent[d.name]
		for _, m := range d.re.FindAllIndex(b, limit) {
			end := m[1]
			if ext != nil {
				if e := ext.FindIndex(b[m[0]:]); e != nil {
					end = max(end, m[0]+e[1])
				}
			}
			fn(d.name, m[0], end)
		}
	}
}

// Find counts what each detector finds in b, as whoever decodes it reads
// it: JSON (tool arguments and results, most HTTP bodies) is scanned in
// the gateway's own encoding of its values, so that an escape the
// receiver decodes ("\u0041KIA…" is "AKIA…") hides nothing; other bytes
// (a form, plain text) are scanned as they are. (The gateway forwards the
// client's arguments with their escapes: it must scan what they mean.)
// It returns nil when nothing is found; the counts are ints, at most
// MaxMatches each.
func Find(b []byte) map[string]any {
	found := Scan(nil, b)
	if bytes.IndexByte(b, '\\') >= 0 {
		if plain, ok := unescapedJSON(b); ok {
			found = Scan(found, plain)
		}
	}
	return found
}

// Scan adds to found what each detector finds in b, keeping the higher
// count where found has one already (the same text scanned in two
// encodings is one secret, not two). It scans as MaskJSON does (Each), so
// that what is counted is what an approver's view masks.
func Scan(found map[string]any, b []byte) map[string]any {
	var counts map[string]int
	Each(b, MaxMatches, func(name string, _, _ int) {
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

// Add adds to found the counts of part, which was scanned apart (another
// part of what is sent), and returns it.
func Add(found, part map[string]any) map[string]any {
	for k, v := range part {
		if found == nil {
			found = map[string]any{}
		}
		prev, _ := found[k].(int)
		found[k] = min(prev+v.(int), MaxMatches)
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

// Mask returns s with each secret the detectors find replaced by
// "[secret:<detector>]": for a text that holds what a caller sent (an
// audit event's resource or reason, an id, an error's message), so that a
// refusal of a secret does not write it where others read it.
func Mask(s string) string {
	type cut struct {
		start, end int
		name       string
	}
	var cuts []cut
	Each([]byte(s), -1, func(name string, start, end int) { cuts = append(cuts, cut{start, end, name}) })
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

// span is a stretch of JSON text to mask, and what found it.
type span struct {
	start, end int
	name       string
	value      bool // it overlaps a value (not only object keys)
}

// MaskJSON returns the JSON text b with each secret found replaced by
// "[secret:<detector>]", and the detectors that found one, sorted. A
// secret in a string is replaced in that string; a number that is one
// becomes that string; a match over an object key and its value (a name
// with "secret" in it before 40 characters) masks the value and leaves
// the key. b must be valid JSON.
func MaskJSON(b []byte) ([]byte, []string) {
	var spans []span
	Each(b, -1, func(name string, start, end int) { spans = append(spans, span{start: start, end: end, name: name}) })
	if len(spans) == 0 {
		return b, nil
	}
	slices.SortStableFunc(spans, func(x, y span) int { return x.start - y.start })
	merged := spans[:1]
	for _, s := range spans[1:] {
		if last := &merged[len(merged)-1]; s.start < last.end {
			last.end = max(last.end, s.end)
		} else {
			merged = append(merged, s)
		}
	}
	var names []string
	for _, s := range spans {
		if !slices.Contains(names, s.name) {
			names = append(names, s.name)
		}
	}
	slices.Sort(names)
	toks := jsonTokens(b)
	// Both lists are sorted and the spans do not overlap: sweep them
	// together, so that many secrets in many tokens cost no more than
	// reading them.
	for i, j := 0, 0; i < len(merged); i++ {
		for j < len(toks) && toks[j].end <= merged[i].start {
			j++
		}
		for k := j; k < len(toks) && toks[k].start < merged[i].end; k++ {
			if !toks[k].key {
				merged[i].value = true
				break
			}
		}
	}
	out := make([]byte, 0, len(b))
	at, si := 0, 0
	var hits []span
	for _, t := range toks {
		for si < len(merged) && merged[si].end <= t.start {
			si++
		}
		hits = hits[:0]
		for k := si; k < len(merged) && merged[k].start < t.end; k++ {
			if merged[k].value != t.key { // values are masked; keys only where no value is
				hits = append(hits, merged[k])
			}
		}
		if len(hits) == 0 {
			continue
		}
		out = append(out, b[at:t.start]...)
		at = t.end
		if t.kind == 'n' {
			// (A marker is ASCII that JSON spells as it is.)
			out = append(out, `"[secret:`+hits[0].name+`]"`...)
			continue
		}
		// A string: mask each hit's part of it, in whole escapes and
		// runes, walking forward from the last boundary.
		out = append(out, '"')
		from := t.start + 1
		for _, h := range hits {
			s := boundaryBefore(b, from, max(h.start, from))
			e := boundaryAfter(b, s, min(h.end, t.end-1))
			if e <= s {
				continue
			}
			out = append(out, b[from:s]...)
			out = append(out, "[secret:"+h.name+"]"...)
			from = e
		}
		out = append(out, b[from:t.end-1]...)
		out = append(out, '"')
	}
	return append(out, b[at:]...), names
}

// token is a string (kind 's', a key if key) or a number (kind 'n') of a
// JSON text, [start, end) with a string's quotes.
type token struct {
	start, end int
	kind       byte
	key        bool
}

// jsonTokens returns the strings and numbers of the valid JSON text b.
func jsonTokens(b []byte) []token {
	var toks []token
	for i := 0; i < len(b); {
		switch c := b[i]; {
		case c == '"':
			j := i + 1
			for j < len(b) && b[j] != '"' {
				if b[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(b))
			k := j
			for k < len(b) && (b[k] == ' ' || b[k] == '\t' || b[k] == '\n' || b[k] == '\r') {
				k++
			}
			toks = append(toks, token{start: i, end: j, kind: 's', key: k < len(b) && b[k] == ':'})
			i = j
		case c == '-' || c >= '0' && c <= '9':
			j := i + 1
			for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '.' || b[j] == 'e' || b[j] == 'E' || b[j] == '+' || b[j] == '-') {
				j++
			}
			toks = append(toks, token{start: i, end: j, kind: 'n'})
			i = j
		default:
			i++
		}
	}
	return toks
}

// boundaryBefore returns the start of the character (an escape, or a
// UTF-8 rune) of a JSON string that holds byte k, walking from i, the
// start of a character at or before k.
func boundaryBefore(b []byte, i, k int) int {
	for {
		n := charLen(b, i)
		if i+n > k {
			return i
		}
		i += n
	}
}

// boundaryAfter returns the end of the character that holds byte k-1 (k
// itself if a character starts there), walking from i, the start of a
// character at or before k.
func boundaryAfter(b []byte, i, k int) int {
	for i < k {
		i += charLen(b, i)
	}
	return i
}

// charLen is the length of the character at b[i] inside a JSON string.
func charLen(b []byte, i int) int {
	if i >= len(b) {
		return 1
	}
	if b[i] == '\\' {
		if i+1 < len(b) && b[i+1] == 'u' {
			return 6
		}
		return 2
	}
	if b[i] < utf8.RuneSelf {
		return 1
	}
	_, n := utf8.DecodeRune(b[i:])
	return n
}

// Found returns the detectors that find a secret in s, as Find reads it,
// sorted; nil if none does: for a refusal that names what it found
// without quoting it.
func Found(s string) []string {
	found := Find([]byte(s))
	if found == nil {
		return nil
	}
	names := make([]string, 0, len(found))
	for name := range found {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
