package mandate

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/mandatehq/mandate/internal/secret"
)

// Scope grammar (documented in docs/scopes.md):
//
//	scope     = mcp-scope / http-scope
//	mcp-scope = "mcp:" name ":" name               ; server, tool
//	          / "mcp:" name ":prompt:" name        ; server, prompt
//	          / "mcp:" name ":resource:" uri       ; server, resource URI
//	http-scope= "http:" name ":" method ":" path    ; upstream, HTTP method, path
//
// A name is 1-128 of [A-Za-z0-9_.-], optionally ending in a single "*"
// ("*" alone is allowed). A method is an upper-case token [A-Z]{1,16} or "*".
// A path starts with "/" and is a list of segments separated by "/"; a segment
// is 0-256 of the RFC 3986 pchar set minus "*" and "%" (percent-encoding
// allowed as %XX with upper-case hex), optionally ending in a single "*", and
// the last segment may be exactly "**". "." and ".." segments are refused.
// A uri is written as a path without its leading "/" (so file:///a is the
// segments "file:", "", "" and "a"), whose segments may also hold "?" and
// "#" as characters; "**" alone is any URI.
// A tool name never holds a ":", so the four-part forms are never a tool's.
//
// Meaning: a trailing "*" in a name, method or path segment matches any
// string (possibly empty) beginning with what precedes it, within that one
// segment. A final "**" path segment matches zero or more further segments.
//
// Covers(a, b) is true exactly when every concrete request that b matches,
// a matches too.
//
// Details the summary above leaves open, fixed here so that every pattern has
// exactly one spelling and Covers is exact:
//
//   - Length limits count the trailing "*": a name is at most 128 bytes, a
//     method at most 16, a path segment at most 256 (an escape counts 3), the
//     whole scope at most [MaxScopeLen]. So "p*" always matches at least two
//     requests, p and p followed by one more character.
//   - A method, like a name, may end in "*" ("G*" matches GET); "*" alone is
//     any method.
//   - Percent-encoding an unreserved character (ALPHA DIGIT - . _ ~) is
//     refused: %41 and A, or %2E%2E and .., would be two spellings of one
//     path. Other escapes (%2F, %2A, %3F, ...) are literal and distinct.
//   - A path always has at least one segment ("/" is one empty segment), so
//     "/*/**" means the same as "/**"; it is refused in favour of "/**".
//   - Tools, prompts and resources are three sorts: a scope of one sort never
//     matches a request of another (mcp:s:* is every tool of s, not its
//     prompts or resources; mcp:s:reso* is tools only).
//   - A uri, like a path, always has at least one segment ("" is one empty
//     segment, a URI no request names), so "*/**" means the same as "**"
//     and is refused in its favour.

// Limits of the scope language.
const (
	MaxScopeLen     = 1024 // bytes in one scope
	MaxScopeSetSize = 64   // scopes in one set

	maxNameLen    = 128
	maxMethodLen  = 16
	maxSegmentLen = 256
)

// scopeHint is the hint given when a scope's overall shape is wrong.
const scopeHint = "hint: use mcp:<server>:<tool>, mcp:<server>:prompt:<name>, mcp:<server>:resource:<uri> or http:<upstream>:<METHOD>:<path>"

// mcpHint is the hint given when an mcp scope's shape is wrong.
const mcpHint = "hint: use mcp:<server>:<tool>, mcp:<server>:prompt:<name> or mcp:<server>:resource:<uri>"

// Scope is one parsed scope pattern, such as mcp:github:create_issue or
// http:crm:GET:/contacts/*. Obtain one with [ParseScope]. Scopes are
// comparable: two Scopes are == exactly when they are the same pattern,
// because each pattern has exactly one spelling. The zero Scope is not a
// valid scope: it matches nothing and covers nothing.
type Scope struct{ raw string }

// ScopeSet is a set of scopes, as in a ceiling or a scope claim. A set from
// [ParseScopeSet] or JSON holds no duplicates and keeps first-seen order.
type ScopeSet []Scope

// ParseScope parses one scope pattern. It returns an EINVALID error naming
// the scope and the rule it breaks if s is not in the grammar above.
func ParseScope(s string) (Scope, error) {
	if s == "" {
		return Scope{}, Errorf(EINVALID, "empty scope; %s", scopeHint)
	}
	if len(s) > MaxScopeLen {
		return Scope{}, Errorf(EINVALID, "scope %s is %d bytes long, over the limit of %d bytes", quoteShort(s), len(s), MaxScopeLen)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ':
			return Scope{}, Errorf(EINVALID, "scope %q contains a space at byte %d; a scope has no spaces, and a list of scopes separates them with single spaces", s, i)
		case c < 0x20 || c == 0x7f:
			return Scope{}, Errorf(EINVALID, "scope %q contains control character %#02x at byte %d; remove it", s, c, i)
		case c >= 0x80:
			return Scope{}, Errorf(EINVALID, "scope %q contains a non-ASCII byte at byte %d; scopes are plain ASCII, so look for a look-alike character", s, i)
		}
	}
	kind, rest, ok := strings.Cut(s, ":")
	if !ok {
		return Scope{}, Errorf(EINVALID, "scope %q has no kind; %s", s, scopeHint)
	}
	switch kind {
	case "mcp":
		server, sort, target := mcpParts(rest)
		if !strings.Contains(rest, ":") {
			return Scope{}, Errorf(EINVALID, "mcp scope %q needs a server and a tool; %s", s, mcpHint)
		}
		if sort == "" {
			return Scope{}, Errorf(EINVALID, "mcp scope %q has more than three parts, and its third is neither prompt nor resource; %s", s, mcpHint)
		}
		if err := checkName(s, "server", server); err != nil {
			return Scope{}, err
		}
		var err error
		switch sort {
		case "tool", "prompt":
			err = checkName(s, sort, target)
		case "resource":
			err = checkURI(s, target)
		}
		if err != nil {
			return Scope{}, err
		}
	case "http":
		// The path may contain ":", so split on the first three colons only.
		upstream, rest, ok1 := strings.Cut(rest, ":")
		method, path, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 {
			return Scope{}, Errorf(EINVALID, "http scope %q needs an upstream, a method and a path; hint: use http:<upstream>:<METHOD>:<path>", s)
		}
		if err := checkName(s, "upstream", upstream); err != nil {
			return Scope{}, err
		}
		if err := checkMethod(s, method); err != nil {
			return Scope{}, err
		}
		if err := checkPath(s, path); err != nil {
			return Scope{}, err
		}
	default:
		return Scope{}, Errorf(EINVALID, "scope %q has unknown kind %q; %s", s, kind, scopeHint)
	}
	return Scope{raw: s}, nil
}

// checkName checks a server, tool or upstream name n of scope s.
func checkName(s, what, n string) error {
	if n == "" {
		return Errorf(EINVALID, "scope %q has an empty %s name; give a name, or \"*\" for any", s, what)
	}
	if len(n) > maxNameLen {
		return Errorf(EINVALID, "scope %q has a %s name of %d bytes, over the limit of %d", s, what, len(n), maxNameLen)
	}
	body := strings.TrimSuffix(n, "*")
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c == '*':
			return Errorf(EINVALID, "scope %q has %s name %q with a \"*\" before its end; a \"*\" may only be the last character of a name", s, what, n)
		case !isNameChar(c):
			return Errorf(EINVALID, "scope %q has %s name %q containing %q; use letters, digits, '_', '.' and '-'", s, what, n, c)
		}
	}
	return nil
}

func isNameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-'
}

// checkMethod checks the HTTP method m of scope s.
func checkMethod(s, m string) error {
	if m == "" {
		return Errorf(EINVALID, "scope %q has an empty method; give one such as GET, or \"*\" for any", s)
	}
	if len(m) > maxMethodLen {
		return Errorf(EINVALID, "scope %q has a method of %d bytes, over the limit of %d", s, len(m), maxMethodLen)
	}
	body := strings.TrimSuffix(m, "*")
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case 'A' <= c && c <= 'Z':
		case 'a' <= c && c <= 'z':
			return Errorf(EINVALID, "scope %q has method %q; methods are upper case, like GET", s, m)
		case c == '*':
			return Errorf(EINVALID, "scope %q has method %q with a \"*\" before its end; a \"*\" may only be the last character of a method", s, m)
		default:
			return Errorf(EINVALID, "scope %q has method %q containing %q; use upper-case letters, or \"*\" for any method", s, m, c)
		}
	}
	return nil
}

// checkPath checks the path p of scope s.
func checkPath(s, p string) error {
	if !strings.HasPrefix(p, "/") {
		return Errorf(EINVALID, "scope %q has path %q, which does not start with \"/\"; write an absolute path such as /contacts", s, p)
	}
	if err := checkSegments(s, "path", p, p[1:], false); err != nil {
		return err
	}
	if p == "/*/**" {
		return Errorf(EINVALID, "scope %q has path \"/*/**\", which means the same as \"/**\"; write \"/**\"", s)
	}
	return nil
}

// checkURI checks the resource URI u of scope s: a path without its
// leading "/", with "?" and "#" characters of its segments.
func checkURI(s, u string) error {
	if err := checkSegments(s, "resource URI", u, u, true); err != nil {
		return err
	}
	if u == "*/**" {
		return Errorf(EINVALID, "scope %q has resource URI \"*/**\", which means the same as \"**\"; write \"**\"", s)
	}
	return nil
}

// checkSegments checks the segments of segs, the path or URI whole of
// scope s ("?" and "#" are characters of a uri's segments).
func checkSegments(s, what, whole, segs string, uri bool) error {
	for i, seg := range strings.Split(segs, "/") {
		if seg == "**" {
			if i != strings.Count(segs, "/") {
				return Errorf(EINVALID, "scope %q has %s %q with \"**\" before its end; \"**\" may only be the whole last segment", s, what, whole)
			}
			continue
		}
		if seg == "." || seg == ".." {
			return Errorf(EINVALID, "scope %q has %s %q with a %q segment; write the %s without \".\" and \"..\" segments", s, what, whole, seg, what)
		}
		if len(seg) > maxSegmentLen {
			return Errorf(EINVALID, "scope %q has a %s segment of %d bytes, over the limit of %d", s, what, len(seg), maxSegmentLen)
		}
		body := strings.TrimSuffix(seg, "*")
		for j := 0; j < len(body); j++ {
			switch c := body[j]; {
			case c == '*':
				return Errorf(EINVALID, "scope %q has %s segment %q with a \"*\" before its end; a \"*\" may only end a segment, and \"**\" may only be the whole last segment", s, what, seg)
			case c == '%':
				if j+2 >= len(body) || !isUpperHex(body[j+1]) || !isUpperHex(body[j+2]) {
					return Errorf(EINVALID, "scope %q has %s segment %q with a \"%%\" not followed by two upper-case hex digits; write escapes like %%2F", s, what, seg)
				}
				if d := unhex(body[j+1])<<4 | unhex(body[j+2]); isUnreserved(d) {
					return Errorf(EINVALID, "scope %q has %s segment %q escaping the unreserved character %q; write it unescaped", s, what, seg, d)
				}
				j += 2
			case !isPchar(c) && !(uri && (c == '?' || c == '#')):
				return Errorf(EINVALID, "scope %q has %s segment %q containing %q; percent-encode it", s, what, seg, c)
			}
		}
	}
	return nil
}

// isUnreserved reports whether c is in RFC 3986's unreserved set.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0
}

// isPchar reports whether c is an RFC 3986 pchar other than "%" and "*".
func isPchar(c byte) bool {
	return isUnreserved(c) || strings.IndexByte("!$&'()+,;=:@", c) >= 0
}

func isUpperHex(c byte) bool { return '0' <= c && c <= '9' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	if c <= '9' {
		return c - '0'
	}
	return c - 'A' + 10
}

// quoteShort quotes s, cut to its first 64 bytes if longer, for messages
// about inputs too long to repeat in full. Its secrets are masked before
// the cut: cut first, half a secret would be left that no detector finds.
func quoteShort(s string) string {
	s = secret.Mask(s)
	if len(s) <= 64 {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:64]) + "..."
}

// String returns the scope's text, which is its only spelling.
func (s Scope) String() string { return s.raw }

// Kind returns "mcp" or "http", or "" for the zero Scope.
func (s Scope) Kind() string {
	kind, _, _ := strings.Cut(s.raw, ":")
	return kind
}

// IsConcrete reports whether s has no wildcard, so that it names one request.
// The zero Scope is not concrete.
func (s Scope) IsConcrete() bool {
	// A "*" is always a wildcard: a literal one in a path is written %2A.
	return s.raw != "" && !strings.Contains(s.raw, "*")
}

// Covers reports whether every concrete request that b matches, a matches
// too; b may itself be a pattern. Scopes of different kinds never cover each
// other, and the zero Scope neither covers nor is covered.
//
// Part by part: a literal covers only the identical literal; "p*" covers "q"
// and "q*" exactly when q begins with p. Paths are compared segment by
// segment: without "**", b must have as many segments as a and no "**"; an a
// ending in "**" after i segments covers any b whose first i segments are
// covered, whether b is longer or itself ends in "**".
func (a Scope) Covers(b Scope) bool {
	ak, ar, _ := strings.Cut(a.raw, ":")
	bk, br, _ := strings.Cut(b.raw, ":")
	if ak != bk {
		return false
	}
	switch ak {
	case "mcp":
		as, asort, at := mcpParts(ar)
		bs, bsort, bt := mcpParts(br)
		if asort != bsort || !partCovers(as, bs) {
			return false
		}
		if asort == "resource" {
			return pathCovers("/"+at, "/"+bt)
		}
		return partCovers(at, bt)
	case "http":
		au, ar, _ := strings.Cut(ar, ":")
		am, ap, _ := strings.Cut(ar, ":")
		bu, br, _ := strings.Cut(br, ":")
		bm, bp, _ := strings.Cut(br, ":")
		return partCovers(au, bu) && partCovers(am, bm) && pathCovers(ap, bp)
	}
	return false // the zero Scope
}

// mcpParts splits what follows "mcp:" in a scope into its server, its sort
// ("tool", "prompt" or "resource"; "" if it is none of them) and the
// tool, prompt or URI.
func mcpParts(rest string) (server, sort, target string) {
	server, rest, _ = strings.Cut(rest, ":")
	sort, target, ok := strings.Cut(rest, ":")
	switch {
	case !ok:
		return server, "tool", rest
	case sort == "prompt", sort == "resource":
		return server, sort, target
	}
	return server, "", ""
}

// Sort returns what an mcp scope names: "tool", "prompt" or "resource";
// "" for an http scope and for the zero Scope.
func (s Scope) Sort() string {
	kind, rest, _ := strings.Cut(s.raw, ":")
	if kind != "mcp" {
		return ""
	}
	_, sort, _ := mcpParts(rest)
	return sort
}

// partCovers applies Covers to one name, method or path segment other
// than "**".
func partCovers(a, b string) bool {
	if p, ok := strings.CutSuffix(a, "*"); ok {
		return strings.HasPrefix(strings.TrimSuffix(b, "*"), p)
	}
	return a == b
}

// pathCovers applies Covers to two valid paths.
func pathCovers(a, b string) bool {
	as := strings.Split(a[1:], "/")
	bs := strings.Split(b[1:], "/")
	aAny := as[len(as)-1] == "**"
	bAny := bs[len(bs)-1] == "**"
	if aAny {
		as = as[:len(as)-1]
	}
	if bAny {
		bs = bs[:len(bs)-1]
	}
	if !aAny && (bAny || len(bs) != len(as)) {
		return false
	}
	if len(bs) < len(as) {
		return false
	}
	for i := range as {
		if !partCovers(as[i], bs[i]) {
			return false
		}
	}
	return true
}

// Matches reports whether the concrete request, such as
// mcp:github:create_issue or http:crm:GET:/contacts/42, is allowed by s. It
// is false if request is not a valid scope or has a wildcard.
func (s Scope) Matches(request string) bool {
	r, err := ParseScope(request)
	return err == nil && r.IsConcrete() && s.Covers(r)
}

// ParseScopeSet parses a list of scopes separated by single spaces, as in an
// OAuth scope parameter (RFC 6749 §3.3). It refuses other whitespace, leading,
// trailing and doubled spaces, and more than [MaxScopeSetSize] scopes, and
// drops exact duplicates, keeping the first. The empty string is the empty
// set. Errors are EINVALID.
func ParseScopeSet(s string) (ScopeSet, error) {
	if s == "" {
		return nil, nil
	}
	if n := strings.Count(s, " ") + 1; n > MaxScopeSetSize {
		return nil, Errorf(EINVALID, "scope list %s has %d scopes, over the limit of %d", quoteShort(s), n, MaxScopeSetSize)
	}
	if i := strings.IndexAny(s, "\t\n\r\v\f"); i >= 0 {
		return nil, Errorf(EINVALID, "scope list %s contains %q at byte %d; separate scopes with single spaces", quoteShort(s), s[i], i)
	}
	words := strings.Split(s, " ")
	for i, w := range words {
		if w != "" {
			continue
		}
		switch {
		case i == 0:
			return nil, Errorf(EINVALID, "scope list %s starts with a space; remove it", quoteShort(s))
		case i == len(words)-1:
			return nil, Errorf(EINVALID, "scope list %s ends with a space; remove it", quoteShort(s))
		default:
			return nil, Errorf(EINVALID, "scope list %s has two spaces in a row; separate scopes with single spaces", quoteShort(s))
		}
	}
	return newScopeSet(words)
}

// newScopeSet parses each of words and drops duplicates.
func newScopeSet(words []string) (ScopeSet, error) {
	if len(words) > MaxScopeSetSize {
		return nil, Errorf(EINVALID, "scope list has %d scopes, over the limit of %d", len(words), MaxScopeSetSize)
	}
	set := make(ScopeSet, 0, len(words))
	for _, w := range words {
		sc, err := ParseScope(w)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(set, sc) {
			set = append(set, sc)
		}
	}
	return set, nil
}

// String returns the scopes separated by single spaces, the form of an OAuth
// scope parameter and of a mandate's scope claim.
func (set ScopeSet) String() string { return strings.Join(set.Strings(), " ") }

// Strings returns the text of each scope, in order; never nil.
func (set ScopeSet) Strings() []string {
	out := make([]string, len(set))
	for i, s := range set {
		out[i] = s.raw
	}
	return out
}

// Covers reports whether every scope of b is covered by some single scope of
// a. This is conservative: a scope of b that only the union of several scopes
// of a covers is refused. For example, {http:u:GET:/a, http:u:GET:/a/*/**}
// together allow everything http:u:GET:/a/** allows, yet neither alone covers
// it, so Covers is false; ask for the narrower scopes instead.
func (a ScopeSet) Covers(b ScopeSet) bool { return len(a.Uncovered(b)) == 0 }

// Uncovered returns the scopes of b, in order, that no single scope of a
// covers; nil if there are none.
func (a ScopeSet) Uncovered(b ScopeSet) ScopeSet {
	var out ScopeSet
	for _, sb := range b {
		if !slices.ContainsFunc(a, func(sa Scope) bool { return sa.Covers(sb) }) {
			out = append(out, sb)
		}
	}
	return out
}

// Allows reports whether some scope of a matches the concrete request.
func (a ScopeSet) Allows(request string) bool {
	r, err := ParseScope(request)
	if err != nil || !r.IsConcrete() {
		return false
	}
	return slices.ContainsFunc(a, func(sa Scope) bool { return sa.Covers(r) })
}

// MarshalJSON encodes the set as a JSON array of strings; an empty or nil set
// is [].
func (set ScopeSet) MarshalJSON() ([]byte, error) { return json.Marshal(set.Strings()) }

// UnmarshalJSON decodes a JSON array of strings, parsing each as a scope
// under the rules of [ParseScopeSet]; null gives a nil set. Errors are
// EINVALID.
func (set *ScopeSet) UnmarshalJSON(data []byte) error {
	var words []string
	if err := json.Unmarshal(data, &words); err != nil {
		return Errorf(EINVALID, "scopes must be a JSON array of strings: %v", err)
	}
	if words == nil {
		*set = nil
		return nil
	}
	s, err := newScopeSet(words)
	if err != nil {
		return err
	}
	*set = s
	return nil
}

// Overlaps reports whether some concrete request is matched by both a and
// b: whether granting b grants anything that a names. It is symmetric.
func (a Scope) Overlaps(b Scope) bool {
	ak, ar, _ := strings.Cut(a.raw, ":")
	bk, br, _ := strings.Cut(b.raw, ":")
	if ak != bk {
		return false
	}
	switch ak {
	case "mcp":
		as, asort, at := mcpParts(ar)
		bs, bsort, bt := mcpParts(br)
		if asort != bsort || !partOverlaps(as, bs) {
			return false
		}
		if asort == "resource" {
			return pathOverlaps("/"+at, "/"+bt)
		}
		return partOverlaps(at, bt)
	case "http":
		au, ar, _ := strings.Cut(ar, ":")
		am, ap, _ := strings.Cut(ar, ":")
		bu, br, _ := strings.Cut(br, ":")
		bm, bp, _ := strings.Cut(br, ":")
		return partOverlaps(au, bu) && partOverlaps(am, bm) && pathOverlaps(ap, bp)
	}
	return false
}

// partOverlaps reports whether two name, method or segment patterns match
// a common string: two prefixes do when one begins with the other.
func partOverlaps(a, b string) bool {
	ap, aw := strings.CutSuffix(a, "*")
	bp, bw := strings.CutSuffix(b, "*")
	switch {
	case aw && bw:
		return strings.HasPrefix(ap, bp) || strings.HasPrefix(bp, ap)
	case aw:
		return strings.HasPrefix(b, ap)
	case bw:
		return strings.HasPrefix(a, bp)
	}
	return a == b
}

// pathOverlaps reports whether two valid paths match a common path.
func pathOverlaps(a, b string) bool {
	as := strings.Split(a[1:], "/")
	bs := strings.Split(b[1:], "/")
	aAny := as[len(as)-1] == "**"
	bAny := bs[len(bs)-1] == "**"
	if aAny {
		as = as[:len(as)-1]
	}
	if bAny {
		bs = bs[:len(bs)-1]
	}
	switch {
	case !aAny && !bAny && len(as) != len(bs):
		return false
	case aAny && !bAny && len(bs) < len(as):
		return false
	case bAny && !aAny && len(as) < len(bs):
		return false
	}
	for i := 0; i < len(as) && i < len(bs); i++ {
		if !partOverlaps(as[i], bs[i]) {
			return false
		}
	}
	return true
}

// Overlapping returns the scopes of b that overlap some scope of a.
func (a ScopeSet) Overlapping(b ScopeSet) ScopeSet {
	var out ScopeSet
	for _, s := range b {
		for _, p := range a {
			if p.Overlaps(s) {
				out = append(out, s)
				break
			}
		}
	}
	return out
}
