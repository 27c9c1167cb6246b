package mandate

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// decodeFast decodes an entry in the canonical encoding (appendEvent)
// into what encoding/json would give (details as map[string]any, []any,
// json.Number, string, bool and nil), several times faster: a start reads
// back hundreds of thousands of entries, and encoding/json's Decoder was
// most of its time. It gives up (ok false) at anything it does not expect
// (whitespace, an unknown field, a value of the wrong kind), and decodes
// an escaped string with encoding/json. ParseEvent re-encodes what it
// returns and compares it with the entry, as it does encoding/json's
// result, and decodes with encoding/json whatever fails here: an entry
// decodes to the same event, or is refused with the same error, either
// way.
func decodeFast(b []byte) (*Event, bool) {
	d := fastDecoder{b: b}
	e, ok := d.event()
	return e, ok && d.i == len(b)
}

type fastDecoder struct {
	b []byte
	i int
}

func (d *fastDecoder) next(c byte) bool {
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

func (d *fastDecoder) event() (*Event, bool) {
	if !d.next('{') {
		return nil, false
	}
	e := &Event{}
	for first := true; !d.next('}'); first = false {
		if !first && !d.next(',') {
			return nil, false
		}
		key, ok := d.str()
		if !ok || !d.next(':') {
			return nil, false
		}
		switch key {
		case "v":
			n, ok := d.int()
			if !ok || int64(int(n)) != n {
				return nil, false
			}
			e.V = int(n)
		case "time":
			if e.Time, ok = d.int(); !ok {
				return nil, false
			}
		case "chain":
			if !d.next('[') {
				return nil, false
			}
			e.Chain = []string{}
			for first := true; !d.next(']'); first = false {
				if !first && !d.next(',') {
					return nil, false
				}
				s, ok := d.str()
				if !ok {
					return nil, false
				}
				e.Chain = append(e.Chain, s)
			}
		case "details":
			if d.i >= len(d.b) || d.b[d.i] != '{' {
				return nil, false
			}
			v, ok := d.value(0)
			if !ok {
				return nil, false
			}
			e.Details = v.(map[string]any)
		default:
			f := e.stringField(key)
			if f == nil {
				return nil, false
			}
			if *f, ok = d.str(); !ok {
				return nil, false
			}
		}
	}
	return e, true
}

func (e *Event) stringField(key string) *string {
	switch key {
	case "type":
		return &e.Type
	case "task":
		return &e.Task
	case "mandate":
		return &e.Mandate
	case "parent":
		return &e.Parent
	case "agent":
		return &e.Agent
	case "sub":
		return &e.Subject
	case "action":
		return &e.Action
	case "resource":
		return &e.Resource
	case "outcome":
		return &e.Outcome
	case "reason":
		return &e.Reason
	case "by":
		return &e.By
	}
	return nil
}

// int reads an integer: an optional minus and digits.
func (d *fastDecoder) int() (int64, bool) {
	start := d.i
	d.next('-')
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	n, err := strconv.ParseInt(string(d.b[start:d.i]), 10, 64)
	return n, err == nil
}

// str reads a string: as it is if it holds no escape, else with
// encoding/json.
func (d *fastDecoder) str() (string, bool) {
	if !d.next('"') {
		return "", false
	}
	start := d.i
	end := bytes.IndexAny(d.b[start:], `"\`)
	if end < 0 {
		return "", false
	}
	if d.b[start+end] == '"' {
		d.i = start + end + 1
		return string(d.b[start : start+end]), true
	}
	// Escaped: find the closing quote, then let encoding/json decode it.
	i := start + end
	for i < len(d.b) && d.b[i] != '"' {
		if d.b[i] == '\\' {
			i++
		}
		i++
	}
	if i >= len(d.b) {
		return "", false
	}
	var s string
	if err := json.Unmarshal(d.b[start-1:i+1], &s); err != nil {
		return "", false
	}
	d.i = i + 1
	return s, true
}

func (d *fastDecoder) value(depth int) (any, bool) {
	if d.i >= len(d.b) || depth > maxDetailDepth {
		return nil, false
	}
	switch c := d.b[d.i]; {
	case c == '{':
		d.i++
		m := map[string]any{}
		for first := true; !d.next('}'); first = false {
			if !first && !d.next(',') {
				return nil, false
			}
			k, ok := d.str()
			if !ok || !d.next(':') {
				return nil, false
			}
			if m[k], ok = d.value(depth + 1); !ok {
				return nil, false
			}
		}
		return m, true
	case c == '[':
		d.i++
		l := []any{}
		for first := true; !d.next(']'); first = false {
			if !first && !d.next(',') {
				return nil, false
			}
			v, ok := d.value(depth + 1)
			if !ok {
				return nil, false
			}
			l = append(l, v)
		}
		return l, true
	case c == '"':
		return d.str()
	case c == '-' || (c >= '0' && c <= '9'):
		start := d.i
		for d.i < len(d.b) && bytes.IndexByte([]byte("+-.eE0123456789"), d.b[d.i]) >= 0 {
			d.i++
		}
		return json.Number(d.b[start:d.i]), true // checked when ParseEvent encodes it again
	}
	for _, lit := range []struct {
		s string
		v any
	}{{"true", true}, {"false", false}, {"null", nil}} {
		if bytes.HasPrefix(d.b[d.i:], []byte(lit.s)) {
			d.i += len(lit.s)
			return lit.v, true
		}
	}
	return nil, false
}
