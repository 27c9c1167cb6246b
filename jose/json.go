package jose

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/mandatehq/mandate/internal/jsonstr"
	"unicode/utf8"
)

// DecodeObject reads b, which must be exactly one JSON object in valid
// UTF-8, calling fn with each member's name (unescaped) and raw JSON value,
// in order. A member name that appears twice is refused. It is the strict
// reader Parse uses for headers, for callers that read a JWS payload such
// as JWT claims: unlike json.Unmarshal into a struct, it neither folds the
// case of names nor lets a later duplicate win.
//
// Errors from reading b wrap ErrMalformed; an error from fn is returned
// as it is, and stops the reading.
func DecodeObject(b []byte, fn func(name string, value []byte) error) error {
	var fnErr error
	err := decodeObject(b, func(name string, value []byte) error {
		fnErr = fn(name, value)
		return fnErr
	})
	if err != nil && err != fnErr {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return err
}

// decodeObject decodes b, which must be exactly one JSON object in valid
// UTF-8, calling fn with each member's name and raw value in order. A
// member name that appears twice is refused: parsers that keep the first
// and parsers that keep the last would otherwise read different tokens.
// Names are compared exactly after unescaping, unlike json.Unmarshal into a
// struct, which folds case.
//
// json.Valid checks the syntax first; the scan below then only has to find
// where members begin and end, which keeps Parse free of encoding/json's
// per-token allocations.
func decodeObject(b []byte, fn func(name string, value []byte) error) error {
	if !utf8.Valid(b) {
		return errors.New("must be valid UTF-8")
	}
	if !json.Valid(b) {
		return errors.New("must be valid JSON")
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return errors.New("must be a JSON object")
	}
	i = skipSpace(b, i+1)
	if b[i] == '}' {
		return nil
	}
	var seen []string // objects here are small; a map only pays off for large ones
	var seenSet map[string]bool
	for {
		end := endOfString(b, i)
		name, err := stringMember("member name", b[i:end])
		if err != nil {
			return err
		}
		if seenSet != nil {
			if seenSet[name] {
				return fmt.Errorf("member %s appears twice", quote(name))
			}
			seenSet[name] = true
		} else {
			for _, s := range seen {
				if s == name {
					return fmt.Errorf("member %s appears twice", quote(name))
				}
			}
			seen = append(seen, name)
			if len(seen) > 16 {
				seenSet = make(map[string]bool, 2*len(seen))
				for _, s := range seen {
					seenSet[s] = true
				}
			}
		}
		i = skipSpace(b, skipSpace(b, end)+1) // past the colon
		end = endOfValue(b, i)
		if err := fn(name, b[i:end]); err != nil {
			return err
		}
		i = skipSpace(b, end)
		if b[i] == '}' {
			return nil // json.Valid saw nothing but space after it
		}
		i = skipSpace(b, i+1) // past the comma
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// endOfString returns the index just past the JSON string at b[i].
func endOfString(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++
		}
	}
	return i + 1
}

// endOfValue returns the index just past the JSON value at b[i].
func endOfValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return endOfString(b, i)
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch b[i] {
			case '"':
				i = endOfString(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return i
			}
			i++
		}
		return i
	}
}

// stringMember decodes the raw value of member name as a JSON string.
func stringMember(name string, v []byte) (string, error) {
	if len(v) < 2 || v[0] != '"' {
		return "", fmt.Errorf("%s must be a string", name)
	}
	if s := v[1 : len(v)-1]; bytes.IndexByte(s, '\\') < 0 {
		return string(s), nil // no escapes: the common case
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("%s must be a string", name)
	}
	return s, nil
}

// appendHeader appends h as JSON, members in struct order, empty ones left
// out: what json.Marshal gives, without its reflection and HTML escaping.
func appendHeader(b []byte, h *Header) []byte {
	b = append(b, `{"alg":`...)
	b = jsonstr.Append(b, h.Alg)
	if h.Typ != "" {
		b = append(b, `,"typ":`...)
		b = jsonstr.Append(b, h.Typ)
	}
	if h.Kid != "" {
		b = append(b, `,"kid":`...)
		b = jsonstr.Append(b, h.Kid)
	}
	if h.JWK != nil {
		b = append(b, `,"jwk":`...)
		b = appendJWK(b, h.JWK)
	}
	if len(h.Crit) > 0 {
		b = append(b, `,"crit":[`...)
		for i, s := range h.Crit {
			if i > 0 {
				b = append(b, ',')
			}
			b = jsonstr.Append(b, s)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendJWK appends k as JSON, members in struct order, empty ones left out.
func appendJWK(b []byte, k *JWK) []byte {
	b = append(b, '{')
	first := true
	member := func(name, v string) {
		if v == "" {
			return
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = jsonstr.Append(b, v)
	}
	member("kty", k.Kty)
	member("crv", k.Crv)
	member("x", k.X)
	member("y", k.Y)
	member("n", k.N)
	member("e", k.E)
	member("d", k.D)
	member("kid", k.Kid)
	member("use", k.Use)
	member("alg", k.Alg)
	return append(b, '}')
}
