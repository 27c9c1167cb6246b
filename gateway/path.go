package gateway

import (
	"strings"
	"unicode/utf8"
)

// The paths of HTTP routes and the URIs of MCP resources are matched
// against scopes, and forwarded, in one canonical spelling (docs/gateway.md,
// "Paths and URIs"). Upstreams decode escapes, resolve dot segments,
// take a backslash or a ";" for a separator, and some decode twice: a
// check on the spelling as sent would pass what an upstream reads as
// another path. So the gateway decodes every escape once, refuses what
// some upstream could read as a separator, a dot segment or another
// escape, and spells the rest one way, which is both what the scope is
// checked against and what the upstream receives:
//
//   - "%" must start an escape of two hex digits; escapes of unreserved
//     characters (RFC 3986 §2.3: letters, digits, "-._~") are decoded, all
//     other escapes are kept with upper-case digits (§6.2.2.1, §6.2.2.2:
//     an escaped reserved character is not the character); a raw "*" is
//     written %2A, as scopes write a literal star; raw bytes outside the
//     path characters are escaped.
//   - Once decoded, a segment holds no "/" (an encoded slash: at most a
//     route's named opt-in, HTTPRoute.AllowEncodedSlashes), no "\" (which
//     Windows servers and some frameworks take for a "/"), no NUL or other
//     control character, only valid UTF-8, none of the look-alikes that
//     Unicode compatibility mapping or Windows "best fit" turn into ".",
//     "/" or "\", and no "%" followed by two hex digits: decoded once more,
//     as some upstreams do, that would be another character, so refusing
//     it makes a second decoding change nothing.
//   - A segment that is nothing but dots (and spaces, which Windows drops
//     at the end of a name), once decoded and cut at its first ";", "?" or
//     "#" (path parameters, as Tomcat reads "..;x", and what a server may
//     take for a query or fragment), is refused, "." and ".." included.
//   - An empty segment ("//", which nginx and others merge) is refused in
//     a path, except the last (a trailing "/").

// pathRules say which spelling a path or URI is read in.
type pathRules struct {
	// encodedSlashes takes %2F as a "/" within a segment, kept escaped
	// (HTTPRoute.AllowEncodedSlashes); it never hides a dot segment.
	encodedSlashes bool
	// uri reads a resource URI rather than a path: no leading "/", empty
	// segments allowed (file:///x), and "?" and "#" literal characters.
	uri bool
}

// canonical returns the canonical spelling of sent, a path as sent in a
// request line (escapes included) or a resource URI, or why it is
// refused ("" and a reason for a person).
func canonical(sent string, rules pathRules) (string, string) {
	var out strings.Builder
	out.Grow(len(sent) + 8)
	if !rules.uri && !strings.HasPrefix(sent, "/") {
		return "", "no leading /"
	}
	segs := strings.Split(sent, "/")
	for i, seg := range segs {
		if i > 0 {
			out.WriteByte('/')
		}
		if seg == "" && !rules.uri && i > 0 && i < len(segs)-1 {
			return "", "an empty segment (//)"
		}
		dec, esc, why := decodeSegment(seg)
		if why != "" {
			return "", why
		}
		if why := checkDecoded(dec, rules); why != "" {
			return "", why
		}
		for j := 0; j < len(dec); j++ {
			c := dec[j]
			switch {
			case isUnreserved(c), !esc[j] && isSubDelim(c), !esc[j] && rules.uri && (c == '?' || c == '#'):
				out.WriteByte(c)
			default:
				out.WriteByte('%')
				out.WriteByte(upperHex[c>>4])
				out.WriteByte(upperHex[c&15])
			}
		}
	}
	return out.String(), ""
}

const upperHex = "0123456789ABCDEF"

// decodeSegment decodes the escapes of seg once, and says which bytes of
// the result came from an escape.
func decodeSegment(seg string) (string, []bool, string) {
	if !strings.Contains(seg, "%") {
		return seg, make([]bool, len(seg)), ""
	}
	var b strings.Builder
	esc := make([]bool, 0, len(seg))
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if c != '%' {
			b.WriteByte(c)
			esc = append(esc, false)
			continue
		}
		if i+2 >= len(seg) || !isHex(seg[i+1]) || !isHex(seg[i+2]) {
			return "", nil, "a % that does not start an escape of two hex digits"
		}
		b.WriteByte(unhexDigit(seg[i+1])<<4 | unhexDigit(seg[i+2]))
		esc = append(esc, true)
		i += 2
	}
	return b.String(), esc, ""
}

// lookAlikes are characters that Unicode compatibility mapping (NFKC) or
// Windows' "best fit" conversion to a code page turn into ".", "/" or "\".
var lookAlikes = []rune{
	'\uFF0E', '\uFE52', '\u2024', // fullwidth, small, one-dot-leader full stops
	'\uFF0F', '\u2215', '\u2044', '\u29F8', // fullwidth, division, fraction, big solidus
	'\uFF3C', '\u2216', '\uFE68', '\u29F9', // fullwidth, set minus, small, big reverse solidus
	'\u00A5', '\u20A9', // yen and won signs: "\" in Japanese and Korean code pages
}

// checkDecoded says why a decoded segment is refused, or "".
func checkDecoded(dec string, rules pathRules) string {
	for i := 0; i < len(dec); i++ {
		switch c := dec[i]; {
		case c == '/' && !rules.encodedSlashes:
			return "an encoded slash (%2F), which upstreams may take for a separator"
		case c == '\\':
			return "a backslash, which some upstreams take for a /"
		case c == 0:
			return "a NUL"
		case c < 0x20 || c == 0x7f:
			return "a control character"
		case c == '%' && i+2 < len(dec) && isHex(dec[i+1]) && isHex(dec[i+2]):
			return "an escaped %, which an upstream decoding twice would read as another character"
		}
	}
	if !utf8.ValidString(dec) {
		return "bytes that are not UTF-8 once decoded"
	}
	for _, r := range lookAlikes {
		if strings.ContainsRune(dec, r) {
			return "a look-alike of . / or \\, which some upstreams map to it"
		}
	}
	for _, piece := range strings.Split(dec, "/") { // more than one with encodedSlashes only
		if i := strings.IndexAny(piece, ";?#"); i >= 0 {
			piece = piece[:i]
		}
		if strings.Contains(piece, ".") && strings.Trim(piece, ". ") == "" {
			return "a dot segment (. or .., however spelt), which upstreams resolve"
		}
	}
	return ""
}

// isUnreserved reports whether c is in RFC 3986's unreserved set.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// isSubDelim reports whether c is a path character other than an
// unreserved one, "%" and "*": the sub-delims and ":" and "@" (RFC 3986
// §3.3, pchar), as scopes write them.
func isSubDelim(c byte) bool { return strings.IndexByte("!$&'()+,;=:@", c) >= 0 }

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func unhexDigit(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
