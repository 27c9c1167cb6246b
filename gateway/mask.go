package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/secret"
)

// What a person deciding a held call sees of its arguments
// (mandate.Approval.Arguments): the arguments in the order sent, in
// canonical spelling, with every secret the detectors of package secret find
// masked, shortened to mandate.MaxApprovalArguments. The arguments as sent
// are bound by the approval's request hash and never stored.

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
	masked, names := secret.MaskJSON(raw)
	add(names)
	v, err := parseOrdered(masked)
	if err != nil {
		return hidden("the arguments could not be read"), true, found
	}
	p := preview{unlimited: true}
	masked, names = secret.MaskJSON(p.render(nil, v, 0, 0))
	add(names)
	out, short := []byte(nil), false
	for range 3 {
		if v, err = parseOrdered(masked); err != nil {
			break
		}
		p = preview{}
		out = p.render(nil, v, mandate.MaxApprovalArguments, 0)
		short = short || p.shortened
		if masked, names = secret.MaskJSON(out); len(names) == 0 {
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
