package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/mandatehq/mandate"
)

// What a person deciding a held call sees of its arguments
// (mandate.Approval.Arguments): the arguments in the order sent, in
// canonical spelling, with every secret the detectors of secrets.go find
// masked, shortened to mandate.MaxApprovalArguments. The arguments as sent
// are bound by the approval's request hash and never stored.

// maskExtent extends a detector's match to what must be masked with it:
// a private key's header is what is found, the key is what follows, to
// the end of its JSON string.
var maskExtent = map[string]*regexp.Regexp{
	"private_key": regexp.MustCompile(`^-----BEGIN [^"\\]*?-----(?:[^"\\]|\\.)*`),
}

// eachSecret calls fn for each span of b a detector finds, at most limit
// per detector (limit < 0: all), in the order of secretDetectors, with the
// span extended by maskExtent. findSecrets counts what it calls;
// maskSecrets masks it: one scan, so that what is counted is what is
// masked.
func eachSecret(b []byte, limit int, fn func(name string, start, end int)) {
	for _, d := range secretDetectors {
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

// span is a stretch of JSON text to mask, and what found it.
type span struct {
	start, end int
	name       string
	value      bool // it overlaps a value (not only object keys)
}

// maskSecrets returns the JSON text b with each secret found replaced by
// "[secret:<detector>]", and the detectors that found one, sorted. A
// secret in a string is replaced in that string; a number that is one
// becomes that string; a match over an object key and its value (a name
// with "secret" in it before 40 characters) masks the value and leaves
// the key. b must be valid JSON.
func maskSecrets(b []byte) ([]byte, []string) {
	var spans []span
	eachSecret(b, -1, func(name string, start, end int) { spans = append(spans, span{start: start, end: end, name: name}) })
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
			out = appendString(out, "[secret:"+hits[0].name+"]")
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

// appendString appends s as a JSON string, spelt as the gateway's
// canonical JSON (marshal) spells it.
func appendString(b []byte, s string) []byte {
	return append(b, marshal(s)...)
}

// Limits of the shortened arguments. render(v, budget) appends at most
// budget bytes when budget >= previewMinBudget.
const (
	previewMinBudget    = 40   // what any marker needs
	previewMinValue     = 96   // the least room a member is given: past it, the rest is a marker
	previewMinContainer = 96   // an array or object given less is a marker
	previewMaxValue     = 2048 // the most bytes of one string shown
	previewMaxKey       = 256  // the most bytes of one object key shown
	previewMaxNumber    = 64   // a longer number is a marker
	previewMaxDepth     = 8    // deeper values are a marker
)

// approvalArguments returns what a person deciding a held call sees of its
// arguments (raw, the JSON as sent): masked, canonical, at most
// mandate.MaxApprovalArguments bytes; whether it was shortened; and the
// detectors that found secrets. The secrets are looked for in the
// arguments as sent, again in their canonical spelling (which can bring
// the parts of a match closer), and in what is shown: arguments whose
// secrets cannot all be masked are not shown at all.
func approvalArguments(raw []byte) (json.RawMessage, bool, []string) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" || !json.Valid(raw) {
		return nil, false, nil
	}
	var found []string
	add := func(names []string) {
		for _, n := range names {
			if !slices.Contains(found, n) {
				found = append(found, n)
			}
		}
	}
	masked, names := maskSecrets(raw)
	add(names)
	v, err := parseOrdered(masked)
	if err != nil {
		return hidden("the arguments could not be read"), true, found
	}
	p := preview{unlimited: true}
	masked, names = maskSecrets(p.render(nil, v, 0, 0))
	add(names)
	out, short := []byte(nil), false
	for range 3 {
		if v, err = parseOrdered(masked); err != nil {
			break
		}
		p = preview{}
		out = p.render(nil, v, mandate.MaxApprovalArguments, 0)
		short = short || p.shortened
		if masked, names = maskSecrets(out); len(names) == 0 {
			slices.Sort(found)
			return out, short, found
		}
		add(names)
	}
	slices.Sort(found)
	return hidden("the arguments hold secrets that could not all be masked"), true, found
}

// hidden is what is shown of arguments that cannot be shown.
func hidden(why string) json.RawMessage {
	return appendString(nil, "[not shown: "+why+"]")
}

// ordered is a JSON value with its objects' members in the order sent.
type ordered struct {
	kind  byte   // 's' string, 'n' number, 'l' true, false or null, 'a' array, 'o' object
	text  string // a string's value, a number's or literal's text
	keys  []string
	elems []*ordered // an array's elements, an object's values
}

// parseOrdered parses one JSON value, keeping the order of members.
func parseOrdered(b []byte) (*ordered, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var root *ordered
	var stack []*ordered
	var key *string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		var v *ordered
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				v = &ordered{kind: 'o'}
			case '[':
				v = &ordered{kind: 'a'}
			default:
				stack = stack[:len(stack)-1]
				continue
			}
		case string:
			if top := len(stack) - 1; top >= 0 && stack[top].kind == 'o' && key == nil {
				key = &t
				continue
			}
			v = &ordered{kind: 's', text: t}
		case json.Number:
			v = &ordered{kind: 'n', text: string(t)}
		case bool:
			v = &ordered{kind: 'l', text: strconv.FormatBool(t)}
		case nil:
			v = &ordered{kind: 'l', text: "null"}
		}
		switch top := len(stack) - 1; {
		case top < 0:
			if root != nil {
				return nil, errors.New("more than one value")
			}
			root = v
		case stack[top].kind == 'o':
			stack[top].keys = append(stack[top].keys, *key)
			stack[top].elems = append(stack[top].elems, v)
			key = nil
		default:
			stack[top].elems = append(stack[top].elems, v)
		}
		if v.kind == 'a' || v.kind == 'o' {
			stack = append(stack, v)
		}
	}
	if root == nil || len(stack) > 0 {
		return nil, errors.New("no whole value")
	}
	return root, nil
}

// preview renders an ordered value in at most a budget of bytes: long
// strings and keys are cut (their end says how much was not shown), deep
// values and the members past what fits become markers. Each member of a
// container gets a fair share of what is left, so that a huge first
// member cannot hide the ones after it.
type preview struct {
	unlimited bool // render everything: the canonical spelling
	shortened bool // something was cut
}

func (p *preview) render(b []byte, v *ordered, budget, depth int) []byte {
	switch v.kind {
	case 's':
		return p.str(b, v.text, min(budget, previewMaxValue))
	case 'n', 'l':
		if p.unlimited || len(v.text) <= min(budget, previewMaxNumber) {
			return append(b, v.text...)
		}
		p.shortened = true
		return appendString(b, "[number of "+strconv.Itoa(len(v.text))+" characters]")
	}
	noun := "items"
	if v.kind == 'o' {
		noun = "members"
	}
	if !p.unlimited && (depth >= previewMaxDepth || budget < previewMinContainer) {
		p.shortened = true
		return appendString(b, "["+strconv.Itoa(len(v.elems))+" "+noun+" not shown]")
	}
	open, end := byte('['), byte(']')
	if v.kind == 'o' {
		open, end = '{', '}'
	}
	start := len(b)
	b = append(b, open)
	for i, e := range v.elems {
		if i > 0 {
			b = append(b, ',')
		}
		if !p.unlimited {
			left := len(v.elems) - i
			room := budget - (len(b) - start) - 1 // the closing bracket
			if left > 1 {
				room -= restMarker
			}
			share := max(room/left, previewMinValue)
			if room < previewMinValue {
				p.shortened = true
				if i > 0 {
					b = b[:len(b)-1]
				}
				b = p.rest(b, v.kind, left, i > 0)
				break
			}
			mark := len(b)
			if v.kind == 'o' {
				b = p.str(b, v.keys[i], min(previewMaxKey, max(share/4, previewMinBudget)))
				b = append(b, ':')
			}
			b = p.render(b, e, share-(len(b)-mark), depth+1)
			continue
		}
		if v.kind == 'o' {
			b = appendString(b, v.keys[i])
			b = append(b, ':')
		}
		b = p.render(b, e, 0, depth+1)
	}
	return append(b, end)
}

// restMarker is room kept for the marker of the members not shown.
const restMarker = 48

// rest appends the marker of the n members not shown.
func (p *preview) rest(b []byte, kind byte, n int, comma bool) []byte {
	if comma {
		b = append(b, ',')
	}
	if kind == 'o' {
		b = appendString(b, "[not shown]")
		b = append(b, ':')
		return appendString(b, strconv.Itoa(n)+" more members")
	}
	return appendString(b, "["+strconv.Itoa(n)+" more items not shown]")
}

// str appends s as a JSON string of at most limit bytes (unless
// unlimited): cut on a rune, its end saying how many bytes were not shown.
func (p *preview) str(b []byte, s string, limit int) []byte {
	enc := appendString(nil, s)
	if p.unlimited || len(enc) <= limit {
		return append(b, enc...)
	}
	p.shortened = true
	marker := "…[+" + strconv.Itoa(len(s)) + " bytes]" // an upper bound of the digits
	room := limit - 2 - len(marker)
	n, used := 0, 0
	for n < len(s) {
		r, size := utf8.DecodeRuneInString(s[n:])
		w := len(appendString(nil, string(r)))
		if r == utf8.RuneError && size == 1 {
			w = 2 + len(`\ufffd`) // how marshal spells a byte that is not UTF-8
		}
		if used+w-2 > room {
			break
		}
		used += w - 2
		n += size
	}
	return appendString(b, s[:n]+"…[+"+strconv.Itoa(len(s)-n)+" bytes]")
}
