package dpop

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// normalizeURL returns u without query and fragment, normalized as RFC
// 3986 §6.2.2 and §6.2.3 say, for comparing htu with the request URL
// (RFC 9449 §4.3 step 9):
//
//   - scheme and host in lower case;
//   - percent-encodings of unreserved characters decoded, and the hex
//     digits of the others in upper case;
//   - "." and ".." path segments removed;
//   - the default port of http and https (and an empty port) removed;
//   - an empty path made "/".
//
// u must be an absolute URL with an authority (scheme://host...), in
// ASCII with no spaces or control characters.
func normalizeURL(u string) (string, error) {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	for i := 0; i < len(u); i++ {
		if u[i] <= ' ' || u[i] >= 0x7f {
			return "", fmt.Errorf("url has byte 0x%02x at offset %d, want printable ASCII", u[i], i)
		}
	}
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok || !validScheme(scheme) {
		return "", errors.New("url must be absolute, scheme://host/path")
	}
	scheme = strings.ToLower(scheme)
	authority, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		authority, path = rest[:i], rest[i:]
	}

	var b strings.Builder
	b.Grow(len(u) + 1)
	b.WriteString(scheme)
	b.WriteString("://")
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		if !allIn(authority[:i], ":") {
			return "", errors.New("url userinfo has a character RFC 3986 does not allow there")
		}
		userinfo, err := normalizePercent(authority[:i])
		if err != nil {
			return "", fmt.Errorf("url userinfo: %w", err)
		}
		b.WriteString(userinfo)
		b.WriteByte('@')
		authority = authority[i+1:]
	}
	host, port := authority, ""
	if i := strings.LastIndexByte(authority, ':'); i >= 0 && !strings.Contains(authority[i:], "]") {
		host, port = authority[:i], authority[i+1:]
	}
	if host == "" {
		return "", errors.New("url has no host")
	}
	if !validHost(host) {
		return "", fmt.Errorf("url host %s is not a name or an IP address", quote(host))
	}
	host, err := normalizePercent(host)
	if err != nil {
		return "", fmt.Errorf("url host: %w", err)
	}
	host = lowerHost(host)
	b.WriteString(host)
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return "", fmt.Errorf("url port %s is not a number from 0 to 65535", quote(port))
		}
		if !(scheme == "http" && n == 80 || scheme == "https" && n == 443) {
			b.WriteByte(':')
			b.WriteString(strconv.FormatUint(n, 10))
		}
	}
	if !allIn(path, ":@/") {
		return "", errors.New("url path has a character RFC 3986 does not allow there")
	}
	path, err = normalizePercent(path)
	if err != nil {
		return "", fmt.Errorf("url path: %w", err)
	}
	path = removeDotSegments(path)
	if path == "" {
		path = "/"
	}
	b.WriteString(path)
	return b.String(), nil
}

// validScheme reports whether s is ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func validScheme(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20 // lower case, for letters
		switch {
		case 'a' <= c && c <= 'z':
		case i > 0 && ('0' <= s[i] && s[i] <= '9' || s[i] == '+' || s[i] == '-' || s[i] == '.'):
		default:
			return false
		}
	}
	return true
}

// lowerHost lower-cases host, but not the hex digits of its
// percent-encodings, which normalizePercent made upper case.
func lowerHost(host string) string {
	b := []byte(host)
	for i := 0; i < len(b); i++ {
		if b[i] == '%' {
			i += 2
		} else if 'A' <= b[i] && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}

// validHost reports whether host is an IP literal in brackets or a
// reg-name (RFC 3986 §3.2.2), which also covers IPv4 addresses.
func validHost(host string) bool {
	if strings.HasPrefix(host, "[") {
		if len(host) < 3 || host[len(host)-1] != ']' {
			return false
		}
		for i := 1; i < len(host)-1; i++ {
			if c := host[i]; unhex(c) < 0 && c != ':' && c != '.' {
				return false
			}
		}
		return true
	}
	return allIn(host, "")
}

// allIn reports whether s has only unreserved characters, sub-delims,
// percent signs (checked later) and the bytes in extra.
func allIn(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isUnreserved(c) && !strings.ContainsRune("%!$&'()*+,;=", rune(c)) && !strings.ContainsRune(extra, rune(c)) {
			return false
		}
	}
	return true
}

// normalizePercent decodes percent-encoded unreserved characters and
// upper-cases the hex digits of the rest (RFC 3986 §6.2.2.1, §6.2.2.2).
func normalizePercent(s string) (string, error) {
	if strings.IndexByte(s, '%') < 0 {
		return s, nil
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) || unhex(s[i+1]) < 0 || unhex(s[i+2]) < 0 {
			return "", errors.New("bad percent-encoding")
		}
		c := byte(unhex(s[i+1])<<4 | unhex(s[i+2]))
		if isUnreserved(c) {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// removeDotSegments is the algorithm of RFC 3986 §5.2.4.
func removeDotSegments(in string) string {
	if !strings.Contains(in, ".") {
		return in
	}
	var out []string // output segments, each with its leading "/"
	for in != "" {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in = in[3:]
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case in == "/..":
			in = "/"
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		case in == "." || in == "..":
			in = ""
		default:
			// Move the first segment, with its leading "/" if any, to out.
			i := strings.IndexByte(in[1:], '/')
			if i < 0 {
				i = len(in)
			} else {
				i++
			}
			out = append(out, in[:i])
			in = in[i:]
		}
	}
	return strings.Join(out, "")
}
