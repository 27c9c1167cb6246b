package mandate

import (
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"
)

func TestParseScopeValid(t *testing.T) {
	long := "http:u:GET:/" + strings.Repeat("a/", (MaxScopeLen-len("http:u:GET:/**"))/2) + "**"
	tests := []struct {
		in       string
		kind     string
		concrete bool
	}{
		{"mcp:github:create_issue", "mcp", true},
		{"mcp:github:*", "mcp", false},
		{"mcp:*:*", "mcp", false},
		{"mcp:git*:create_*", "mcp", false},
		{"mcp:A-Z.0_9:x", "mcp", true},
		{"mcp:..:.", "mcp", true}, // names are not paths
		{"mcp:" + strings.Repeat("s", maxNameLen) + ":t", "mcp", true},
		{"mcp:" + strings.Repeat("s", maxNameLen-1) + "*:t", "mcp", false},
		{"http:crm:GET:/contacts", "http", true},
		{"http:crm:GET:/", "http", true},
		{"http:crm:GET://", "http", true},
		{"http:crm:GET:/a/", "http", true},
		{"http:crm:*:/contacts/*", "http", false},
		{"http:crm:G*:/contacts", "http", false},
		{"http:crm:ABCDEFGHIJKLMNOP:/", "http", true},
		{"http:crm:GET:/**", "http", false},
		{"http:crm:GET:/a/**", "http", false},
		{"http:crm:GET:/a*/b*/**", "http", false},
		{"http:crm:GET:/*", "http", false},
		{"http:crm:GET:/*/*/**", "http", false},
		{"http:crm:GET:/a:b/c:d", "http", true},     // a path may contain ":"
		{"http:crm:GET:/a%2F%2Ab%3F", "http", true}, // reserved characters stay escaped
		{"http:crm:GET:/a%00", "http", true},
		{"http:crm:GET:/-._~!$&'()+,;=:@", "http", true},
		{"http:crm:GET:/...", "http", true},
		{"http:crm:GET:/.a/..b", "http", true},
		{"http:crm:GET:/.*", "http", false},
		{"http:crm:GET:/" + strings.Repeat("x", maxSegmentLen), "http", true},
		{long, "http", false},
		{"mcp:github:prompt:review", "mcp", true},
		{"mcp:github:prompt:review_*", "mcp", false},
		{"mcp:*:prompt:*", "mcp", false},
		{"mcp:files:resource:file:///srv/docs/readme.md", "mcp", true},
		{"mcp:files:resource:file:///srv/docs/**", "mcp", false},
		{"mcp:files:resource:**", "mcp", false},
		{"mcp:files:resource:*", "mcp", false},
		{"mcp:db:resource:postgres://db/table?limit=10#x", "mcp", true}, // "?" and "#" are characters of a uri
		{"mcp:db:resource:a%2Fb%3F", "mcp", true},
		{"mcp:x:resource:urn:isbn:0451450523", "mcp", true},
		{"mcp:x:resource:/", "mcp", true},
		{"mcp:x:resource:", "mcp", true}, // the empty URI, which no request names
		{"mcp:x:resource:test://static/resource/1", "mcp", true},
		{"mcp:x:prompt", "mcp", true},   // a tool named prompt
		{"mcp:x:resource", "mcp", true}, // a tool named resource
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s, err := ParseScope(tt.in)
			if err != nil {
				t.Fatalf("ParseScope(%q): %v", tt.in, err)
			}
			if got := s.String(); got != tt.in {
				t.Errorf("String() = %q, want %q", got, tt.in)
			}
			if got := s.Kind(); got != tt.kind {
				t.Errorf("Kind() = %q, want %q", got, tt.kind)
			}
			if got := s.IsConcrete(); got != tt.concrete {
				t.Errorf("IsConcrete() = %v, want %v", got, tt.concrete)
			}
			if !s.Covers(s) {
				t.Errorf("%v does not cover itself", s)
			}
		})
	}
	if len(long) != MaxScopeLen {
		t.Fatalf("test bug: long scope is %d bytes, want %d", len(long), MaxScopeLen)
	}
}

func TestParseScopeInvalid(t *testing.T) {
	tests := []struct {
		in   string
		want string // part of the message
	}{
		{"", "empty scope"},
		{"mcp", "has no kind"},
		{"github", "has no kind"},
		{"mcp:*", "needs a server and a tool"},
		{"mcp:a", "needs a server and a tool"},
		{"mcp:a:b:c", "more than three parts"},
		{"mcp::x", "empty server name"},
		{"mcp:x:", "empty tool name"},
		{"mcp:a:*x", `"*" before its end`},
		{"mcp:a:**", `"*" before its end`},
		{"mcp:*a*:b", `"*" before its end`},
		{"mcp:a/b:c", "containing '/'"},
		{"mcp:" + strings.Repeat("s", maxNameLen+1) + ":t", "over the limit of 128"},
		{"mcp:" + strings.Repeat("s", maxNameLen) + "*:t", "over the limit of 128"},
		{"MCP:a:b", `unknown kind "MCP"`},
		{"https:u:GET:/", `unknown kind "https"`},
		{"grpc:a:b", "use mcp:<server>:<tool>, mcp:<server>:prompt:<name>, mcp:<server>:resource:<uri> or http:<upstream>:<METHOD>:<path>"},
		{":a:b", `unknown kind ""`},
		{" mcp:a:b", "contains a space"},
		{"mcp:a:b ", "contains a space"},
		{"mcp:a b:c", "contains a space"},
		{"mcp:a:b\x00", "control character 0x00"},
		{"mcp:a\x00:b", "control character"},
		{"mcp:a:b\n", "control character 0x0a"},
		{"mcp:a:b\t", "control character 0x09"},
		{"mcp:a:b\x7f", "control character 0x7f"},
		{"mcp:gіthub:x", "non-ASCII"},       // Cyrillic і
		{"mcp:github:x\u200b", "non-ASCII"}, // zero-width space
		{"mcp:ｇithub:x", "non-ASCII"},       // fullwidth g
		{"mcp:a:" + strings.Repeat("b", MaxScopeLen), "over the limit of 1024 bytes"},
		{strings.Repeat("x", 1<<20), "over the limit of 1024 bytes"},
		{"http:u:GET", "needs an upstream, a method and a path"},
		{"http:u", "needs an upstream, a method and a path"},
		{"http::GET:/", "empty upstream name"},
		{"http:u::/", "empty method"},
		{"http:u:GET:", "does not start with \"/\""},
		{"http:u:GET:contacts", "does not start with \"/\""},
		{"http:u:GET:*", "does not start with \"/\""},
		{"http:u:get:/x", "methods are upper case"},
		{"http:u:Get:/x", "methods are upper case"},
		{"http:u:*GET:/x", `"*" before its end`},
		{"http:u:**:/x", `"*" before its end`},
		{"http:u:GE-T:/x", "containing '-'"},
		{"http:u:ABCDEFGHIJKLMNOPQ:/", "over the limit of 16"},
		{"http:u:ABCDEFGHIJKLMNOP*:/", "over the limit of 16"},
		{"http:u:GET:/a/../b", `".." segment`},
		{"http:u:GET:/a/./b", `"." segment`},
		{"http:u:GET:/..", `".." segment`},
		{"http:u:GET:/a/..", `".." segment`},
		{"http:u:GET:/a/**/b", `"**" before its end`},
		{"http:u:GET:/**/", `"**" before its end`},
		{"http:u:GET:/a**", `"*" before its end`},
		{"http:u:GET:/a/***", `"*" before its end`},
		{"http:u:GET:/*a", `"*" before its end`},
		{"http:u:GET:/a%2f", "two upper-case hex digits"},
		{"http:u:GET:/a%", "two upper-case hex digits"},
		{"http:u:GET:/a%2", "two upper-case hex digits"},
		{"http:u:GET:/a%2*", "two upper-case hex digits"},
		{"http:u:GET:/a%G0", "two upper-case hex digits"},
		{"http:u:GET:/%41", "unreserved character 'A'"},
		{"http:u:GET:/%2E%2E", "unreserved character '.'"},
		{"http:u:GET:/%7E", "unreserved character '~'"},
		{"http:u:GET:/a?b=1", "containing '?'"},
		{"http:u:GET:/a#b", "containing '#'"},
		{"http:u:GET:/a[0]", "containing '['"},
		{`http:u:GET:/a\b`, "containing '\\\\'"},
		{`http:u:GET:/a"b`, "containing '\"'"},
		{"http:u:GET:/" + strings.Repeat("x", maxSegmentLen+1), "over the limit of 256"},
		{"http:u:GET:/*/**", `write "/**"`},
		{"mcp:a:tool:x", "its third is neither prompt nor resource"},
		{"mcp:a:*:x", "its third is neither prompt nor resource"},
		{"mcp:a:prompts:x", "its third is neither prompt nor resource"},
		{"mcp:a:Resource:x", "its third is neither prompt nor resource"},
		{"mcp:a:prompt:", "empty prompt name"},
		{"mcp:a:prompt:x:y", "containing ':'"},
		{"mcp:a:prompt:x/y", "containing '/'"},
		{"mcp:a:prompt:**", `"*" before its end`},
		{"mcp::prompt:x", "empty server name"},
		{"mcp:a:resource:file:///*.md", `"*" before its end`},
		{"mcp:a:resource:file:///a/../b", `".." segment`},
		{"mcp:a:resource:./x", `"." segment`},
		{"mcp:a:resource:file:///a/**/b", `"**" before its end`},
		{"mcp:a:resource:file:///a%2e", "two upper-case hex digits"},
		{"mcp:a:resource:file:///%2E%2E", "unreserved character '.'"},
		{"mcp:a:resource:file:///a b", "contains a space"},
		{"mcp:a:resource:file:///{path}", "containing '{'"},
		{`mcp:a:resource:file:///a\b`, "containing '\\\\'"},
		{"mcp:a:resource:*/**", `write "**"`},
		{"mcp:a:resource:*a", `"*" before its end`},
		{"mcp:a:resource:" + strings.Repeat("x", maxSegmentLen+1), "over the limit of 256"},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			s, err := ParseScope(tt.in)
			if err == nil {
				t.Fatalf("ParseScope(%q) = %v, want error", tt.in, s)
			}
			if got := ErrorCode(err); got != EINVALID {
				t.Errorf("ErrorCode = %q, want %q", got, EINVALID)
			}
			msg := ErrorMessage(err)
			if !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not contain %q", msg, tt.want)
			}
			if tt.in != "" && !strings.Contains(msg, quoteShort(tt.in)[:min(len(quoteShort(tt.in)), 60)]) {
				t.Errorf("message %q does not name the scope", msg)
			}
			if len(msg) > 2*MaxScopeLen {
				t.Errorf("message is %d bytes long", len(msg))
			}
			if s != (Scope{}) {
				t.Errorf("ParseScope returned %#v with its error, want the zero Scope", s)
			}
		})
	}
}

func TestScopeCovers(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"mcp:github:x", "mcp:github:x", true},
		{"mcp:github:x", "mcp:github:y", false},
		{"mcp:git*:*", "mcp:github:x", true},
		{"mcp:git*:*", "mcp:git:x", true}, // "*" may match the empty string
		{"mcp:git*:*", "mcp:gitlab*:create_*", true},
		{"mcp:git*:*", "mcp:gi*:x", false},
		{"mcp:a:*", "mcp:ab:x", false},
		{"mcp:a*:*", "mcp:ab:x", true},
		{"mcp:*:*", "mcp:*:*", true},
		{"mcp:github:*", "mcp:*:x", false},
		{"mcp:github:create_issue", "mcp:github:create_*", false},
		{"mcp:github:create_*", "mcp:github:create_issue", true},
		{"mcp:github:create*", "mcp:github:create_*", true},
		{"mcp:github:create_*", "mcp:github:create*", false},
		{"mcp:*:*", "http:u:GET:/", false},
		{"http:*:*:/**", "mcp:a:b", false},
		{"http:u:GET:/a", "http:u:GET:/a", true},
		{"http:u:GET:/a", "http:u:POST:/a", false},
		{"http:u:*:/a", "http:u:POST:/a", true},
		{"http:u:G*:/a", "http:u:GET:/a", true},
		{"http:u:G*:/a", "http:u:*:/a", false},
		{"http:u:*:/a/**", "http:u:GET:/a", true}, // "**" matches zero segments
		{"http:u:*:/a/**", "http:u:GET:/a/", true},
		{"http:u:*:/a/**", "http:u:GET:/a/b/c", true},
		{"http:u:*:/a/**", "http:u:GET:/ab", false},
		{"http:u:*:/a/**", "http:u:GET:/a*", false},
		{"http:u:*:/a/**", "http:u:GET:/a/**", true},
		{"http:u:*:/a/**", "http:u:GET:/a/b*/**", true},
		{"http:u:GET:/a/**", "http:u:*:/a/**", false},
		{"http:u:GET:/a/*", "http:u:GET:/a/b/c", false},
		{"http:u:GET:/a/*", "http:u:GET:/a/", true},
		{"http:u:GET:/a/*", "http:u:GET:/a", false},
		{"http:u:GET:/a/*", "http:u:GET:/a/**", false},
		{"http:u:GET:/a/*/**", "http:u:GET:/a/**", false},
		{"http:u:GET:/a/**", "http:u:GET:/a/*/**", true},
		{"http:u:GET:/a/b*", "http:u:GET:/a/bc*", true},
		{"http:u:GET:/a/bc*", "http:u:GET:/a/b*", false},
		{"http:u:GET:/a/b*", "http:u:GET:/a/b", true},
		{"http:u:GET:/**", "http:u:GET:/", true},
		{"http:u:GET:/**", "http:u:GET:/*/*/**", true},
		{"http:u:GET:/*", "http:u:GET:/", true},
		{"http:u:GET:/*", "http:u:GET:/**", false},
		{"http:u:GET:/a/**", "http:u:GET:/**", false},
		{"http:u:GET:/a%2Fb", "http:u:GET:/a/b", false},
		{"http:u:GET:/a*", "http:u:GET:/a%2Fb", true}, // an escaped "/" is part of the segment
		{"http:u:GET:/a:b", "http:u:GET:/a:b", true},
		{"http:u*:GET:/", "http:up:GET:/", true},
		{"http:u*:GET:/", "http:v:GET:/", false},
		{"mcp:s:*", "mcp:s:prompt:x", false}, // tools, prompts and resources are three sorts
		{"mcp:s:*", "mcp:s:resource:x", false},
		{"mcp:s:reso*", "mcp:s:resource:x", false},
		{"mcp:s:p*", "mcp:s:prompt:x", false},
		{"mcp:s:prompt:*", "mcp:s:prompt", false},
		{"mcp:s:resource:**", "mcp:s:resource", false},
		{"mcp:s:prompt:*", "mcp:s:resource:x", false},
		{"mcp:s:resource:**", "mcp:s:prompt:x", false},
		{"mcp:*:*", "mcp:s:prompt:x", false},
		{"mcp:s:prompt:*", "mcp:s:prompt:x", true},
		{"mcp:s*:prompt:x*", "mcp:st:prompt:xy", true},
		{"mcp:s:prompt:x", "mcp:t:prompt:x", false},
		{"mcp:s:resource:**", "mcp:s:resource:file:///a/b", true},
		{"mcp:s:resource:file:///a/**", "mcp:s:resource:file:///a", true},
		{"mcp:s:resource:file:///a/**", "mcp:s:resource:file:///a/b/c", true},
		{"mcp:s:resource:file:///a/**", "mcp:s:resource:file:///ab", false},
		{"mcp:s:resource:file:///a/*", "mcp:s:resource:file:///a/b/c", false},
		{"mcp:s:resource:file:///a/*", "mcp:s:resource:file:///a/b?x=1", true},
		{"mcp:s:resource:file:*", "mcp:s:resource:file:///a", false}, // "*" does not cross "/"
		{"mcp:s:resource:file:*/**", "mcp:s:resource:file:///a", true},
		{"mcp:s:resource:*", "mcp:s:resource:urn:isbn:1", true},
		{"mcp:s:resource:file:///a%2Fb", "mcp:s:resource:file:///a/b", false},
		{"mcp:s:resource:file:///a", "mcp:s:resource:file:///a/", false},
		{"http:s:*:/**", "mcp:s:resource:x", false},
	}
	for _, tt := range tests {
		t.Run(tt.a+" "+tt.b, func(t *testing.T) {
			a, b := mustParseScope(t, tt.a), mustParseScope(t, tt.b)
			if got := a.Covers(b); got != tt.want {
				t.Errorf("%v.Covers(%v) = %v, want %v", a, b, got, tt.want)
			}
			if b.IsConcrete() {
				if got := a.Matches(tt.b); got != tt.want {
					t.Errorf("%v.Matches(%q) = %v, want %v", a, tt.b, got, tt.want)
				}
			}
		})
	}
}

func TestScopeZero(t *testing.T) {
	var z Scope
	all := mustParseScope(t, "mcp:*:*")
	if z.Covers(z) || z.Covers(all) || all.Covers(z) {
		t.Error("the zero Scope covers or is covered")
	}
	if z.IsConcrete() || z.Kind() != "" || z.String() != "" || z.Matches("") {
		t.Error("the zero Scope is not empty")
	}
}

func TestScopeMatches(t *testing.T) {
	s := mustParseScope(t, "http:crm:*:/contacts/**")
	tests := []struct {
		req  string
		want bool
	}{
		{"http:crm:GET:/contacts", true},
		{"http:crm:DELETE:/contacts/42/notes", true},
		{"http:crm:GET:/contacts/*", false}, // a pattern is not a request
		{"http:crm:GET:/contacts/**", false},
		{"http:crm:GET:/contacts/../admin", false},
		{"http:crm:GET:/contacts/%2E%2E/admin", false},
		{"http:crm:get:/contacts", false},
		{"http:crm:GET:/contacts ", false},
		{"http:crm:GET:/contactsx", false},
		{"http:crm:GET:contacts", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := s.Matches(tt.req); got != tt.want {
			t.Errorf("%v.Matches(%q) = %v, want %v", s, tt.req, got, tt.want)
		}
	}
}

// TestScopeCoversExhaustive checks Covers against its definition: for every
// pair of patterns over a small alphabet, a covers b exactly when every
// request of a universe that b matches, a matches too. Matching is decided by
// refMatch, which does not use Covers. The universe is checked to be rich
// enough to tell every two patterns apart, so the test is not vacuous.
func TestScopeCoversExhaustive(t *testing.T) {
	abc := stringsOver("abc", 3) // the 39 non-empty strings over {a,b,c} of length 1-3

	t.Run("mcp", func(t *testing.T) {
		names := []string{"a", "b", "ab", "a*", "b*", "ab*", "*"}
		var patterns, universe []string
		for _, s := range names {
			for _, n := range names {
				patterns = append(patterns, "mcp:"+s+":"+n)
			}
		}
		for _, s := range abc {
			for _, n := range abc {
				universe = append(universe, "mcp:"+s+":"+n)
			}
		}
		checkCoversExhaustive(t, patterns, universe)
	})

	t.Run("http", func(t *testing.T) {
		var patterns, universe []string
		for _, u := range []string{"a", "ab", "a*", "*"} {
			for _, m := range []string{"GET", "POST", "G*", "*"} {
				for _, p := range []string{"/", "/a", "/a*", "/*", "/**", "/a/", "/a/*", "/a/**", "/a*/**"} {
					patterns = append(patterns, "http:"+u+":"+m+":"+p)
				}
			}
		}
		for _, u := range []string{"a", "ab", "abc", "b"} {
			for _, m := range []string{"GET", "G", "GETS", "POST", "P", "X"} {
				for _, p := range []string{"/", "/a", "/ab", "/b", "/a/", "/a/b", "/ab/b", "/b/a", "/a/b/c"} {
					universe = append(universe, "http:"+u+":"+m+":"+p)
				}
			}
		}
		checkCoversExhaustive(t, patterns, universe)
	})

	t.Run("sorts", func(t *testing.T) {
		// Tools, prompts and resources of two servers, with tool names
		// that spell the other sorts.
		var patterns, universe []string
		for _, srv := range []string{"s", "s*", "*"} {
			for _, n := range []string{"a", "prompt", "resource", "p*", "r*", "*"} {
				patterns = append(patterns, "mcp:"+srv+":"+n, "mcp:"+srv+":prompt:"+n)
			}
			for _, u := range []string{"a", "a/b", "a/**", "a*", "*", "**", "prompt:a"} {
				patterns = append(patterns, "mcp:"+srv+":resource:"+u)
			}
		}
		for _, srv := range []string{"s", "st", "t"} {
			for _, n := range []string{"a", "ab", "prompt", "resource", "p", "r", "x"} {
				universe = append(universe, "mcp:"+srv+":"+n, "mcp:"+srv+":prompt:"+n)
			}
			for _, u := range []string{"a", "ab", "b", "a/b", "a/b/c", "", "x", "prompt:a", "p"} {
				if u != "" {
					universe = append(universe, "mcp:"+srv+":resource:"+u)
				}
			}
		}
		checkCoversExhaustive(t, patterns, universe)
	})

	t.Run("uri", func(t *testing.T) {
		// URIs of 1-3 segments over these, each with or without a final
		// "**", and "**"; requests of 1-4 segments.
		var patterns, universe []string
		for _, p := range pathsOver([]string{"", "a", "a:", "a?", "a*", "*"}, 3) {
			patterns = append(patterns, "mcp:s:resource:"+p[1:], "mcp:s:resource:"+p[1:]+"/**")
		}
		patterns = slices.DeleteFunc(patterns, func(p string) bool { return strings.HasSuffix(p, ":*/**") }) // spelled **
		patterns = append(patterns, "mcp:s:resource:**")
		for _, p := range pathsOver([]string{"", "a", "a:", "a?", "a:b", "b", "c"}, 4) {
			universe = append(universe, "mcp:s:resource:"+p[1:])
		}
		checkCoversExhaustive(t, patterns, universe)
	})

	t.Run("path", func(t *testing.T) {
		// Paths of 1-3 segments over these, each with or without a final
		// "**", and "/**"; requests of 1-4 segments.
		var patterns, universe []string
		for _, p := range pathsOver([]string{"", "a", "b", "ab", "a*", "*"}, 3) {
			patterns = append(patterns, "http:u:GET:"+p, "http:u:GET:"+p+"/**")
		}
		patterns = slices.DeleteFunc(patterns, func(p string) bool { return strings.HasSuffix(p, ":/*/**") }) // spelled /**
		patterns = append(patterns, "http:u:GET:/**")
		for _, p := range pathsOver([]string{"", "a", "b", "ab", "ac", "c"}, 4) {
			universe = append(universe, "http:u:GET:"+p)
		}
		checkCoversExhaustive(t, patterns, universe)
	})
}

// checkCoversExhaustive checks Covers for every pair of patterns against
// inclusion of the sets of universe requests they match, and that Covers is
// reflexive and transitive.
func checkCoversExhaustive(t *testing.T, patterns, universe []string) {
	t.Helper()
	ps := make([]Scope, len(patterns))
	for i, p := range patterns {
		ps[i] = mustParseScope(t, p)
	}
	for _, u := range universe {
		if !mustParseScope(t, u).IsConcrete() {
			t.Fatalf("test bug: %q is not concrete", u)
		}
	}
	// matched[i] is the set of requests pattern i matches, by refMatch.
	matched := make([]bitset, len(ps))
	for i, p := range patterns {
		matched[i] = newBitset(len(universe))
		for j, u := range universe {
			if refMatch(p, u) {
				matched[i].set(j)
			}
		}
	}
	// Spot-check Matches against refMatch; the pairs below check the rest
	// through Covers.
	for i, p := range ps {
		j := (i * 7919) % len(universe)
		if got, want := p.Matches(universe[j]), matched[i].has(j); got != want {
			t.Errorf("%v.Matches(%q) = %v, want %v", p, universe[j], got, want)
		}
	}
	seen := make(map[string]string)
	for i, m := range matched {
		if other, ok := seen[m.key()]; ok {
			t.Fatalf("test bug: the universe does not tell %q from %q", patterns[i], other)
		}
		seen[m.key()] = patterns[i]
	}
	covered := make([]bitset, len(ps)) // covered[i] is the set of patterns ps[i] covers
	var pairs, yes int
	for i, a := range ps {
		covered[i] = newBitset(len(ps))
		for j, b := range ps {
			got := a.Covers(b)
			want := matched[j].subsetOf(matched[i])
			if got != want {
				t.Errorf("%v.Covers(%v) = %v, want %v", a, b, got, want)
			}
			if got {
				covered[i].set(j)
				yes++
			}
			pairs++
		}
		if !covered[i].has(i) {
			t.Errorf("%v does not cover itself", a)
		}
	}
	for i := range ps {
		for j := range ps {
			if covered[i].has(j) && !covered[j].subsetOf(covered[i]) {
				t.Errorf("Covers is not transitive through %v and %v", ps[i], ps[j])
			}
		}
	}
	t.Logf("%d patterns, %d requests, %d of %d pairs covered", len(ps), len(universe), yes, pairs)
}

// refMatch reports whether the concrete request matches pattern, both valid
// scopes, straight from the meaning in the grammar and with path.Match doing
// the matching of "*"; it shares no code with Covers.
func refMatch(pattern, request string) bool {
	pp := strings.SplitN(pattern, ":", 4)
	rp := strings.SplitN(request, ":", 4)
	if len(pp) != len(rp) || pp[0] != rp[0] {
		return false
	}
	if pp[0] == "mcp" {
		// mcp:server:tool, or mcp:server:prompt|resource:target, whose
		// third part is a word, never a pattern.
		if len(pp) == 4 && pp[2] != rp[2] {
			return false
		}
		if !globMatch(pp[1], rp[1]) {
			return false
		}
		if len(pp) == 4 && pp[2] == "resource" {
			return refPathMatch("/"+pp[3], "/"+rp[3])
		}
		return globMatch(pp[len(pp)-1], rp[len(rp)-1])
	}
	return globMatch(pp[1], rp[1]) && globMatch(pp[2], rp[2]) && refPathMatch(pp[3], rp[3])
}

// globMatch is path.Match, with "?" (a character of URIs) taken literally.
func globMatch(pattern, s string) bool {
	ok, _ := path.Match(strings.ReplaceAll(pattern, "?", `\?`), s)
	return ok
}

// refPathMatch matches a request path against a path pattern.
func refPathMatch(pattern, request string) bool {
	base, ok := strings.CutSuffix(pattern, "/**")
	if !ok {
		return globMatch(pattern, request)
	}
	// "**" matches zero or more further segments: match base against the
	// request's first segments, as many as base has.
	if base == "" {
		return true
	}
	n := strings.Count(base, "/")
	segs := strings.Split(request, "/") // segs[0] is "", before the leading "/"
	if len(segs)-1 < n {
		return false
	}
	return globMatch(base, strings.Join(segs[:n+1], "/"))
}

func TestRefMatch(t *testing.T) {
	tests := []struct {
		pattern, request string
		want             bool
	}{
		{"mcp:a*:b", "mcp:abc:b", true},
		{"mcp:a*:b", "mcp:b:b", false},
		{"mcp:*:*", "http:a:GET:/", false},
		{"http:*:G*:/**", "http:a:GET:/x/y", true},
		{"http:*:G*:/**", "http:a:POST:/x/y", false},
		{"http:u:GET:/a/**", "http:u:GET:/a", true},
		{"http:u:GET:/a/**", "http:u:GET:/ab", false},
		{"http:u:GET:/a/*", "http:u:GET:/a/b/c", false},
		{"http:u:GET:/a:*", "http:u:GET:/a:b", true},
		{"mcp:s:*", "mcp:s:prompt:x", false},
		{"mcp:s:prompt:*", "mcp:s:prompt:x", true},
		{"mcp:s:prompt:*", "mcp:s:resource:x", false},
		{"mcp:s:resource:a/**", "mcp:s:resource:a/b/c", true},
		{"mcp:s:resource:a?/*", "mcp:s:resource:ab/c", false},
		{"mcp:s:resource:a?/*", "mcp:s:resource:a?/c", true},
	}
	for _, tt := range tests {
		if got := refMatch(tt.pattern, tt.request); got != tt.want {
			t.Errorf("refMatch(%q, %q) = %v, want %v", tt.pattern, tt.request, got, tt.want)
		}
	}
}

// stringsOver returns the strings of length 1 to n over the letters of alpha.
func stringsOver(alpha string, n int) []string {
	out := []string{""}
	var all []string
	for range n {
		var next []string
		for _, s := range out {
			for _, c := range alpha {
				next = append(next, s+string(c))
			}
		}
		all = append(all, next...)
		out = next
	}
	return all
}

// pathsOver returns the paths of 1 to n segments drawn from segs.
func pathsOver(segs []string, n int) []string {
	out := []string{""}
	var all []string
	for range n {
		var next []string
		for _, p := range out {
			for _, s := range segs {
				next = append(next, p+"/"+s)
			}
		}
		all = append(all, next...)
		out = next
	}
	return all
}

type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }
func (b bitset) set(i int)   { b[i/64] |= 1 << (i % 64) }
func (b bitset) has(i int) bool {
	return b[i/64]&(1<<(i%64)) != 0
}

func (b bitset) subsetOf(c bitset) bool {
	for i := range b {
		if b[i]&^c[i] != 0 {
			return false
		}
	}
	return true
}

func (b bitset) key() string {
	var sb strings.Builder
	for _, w := range b {
		fmt.Fprintf(&sb, "%016x", w)
	}
	return sb.String()
}

func TestParseScopeSet(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", []string{}},
		{"mcp:a:b", []string{"mcp:a:b"}},
		{"mcp:a:b http:u:GET:/x", []string{"mcp:a:b", "http:u:GET:/x"}},
		{"mcp:b:b mcp:a:a mcp:b:b mcp:a:a mcp:c:c", []string{"mcp:b:b", "mcp:a:a", "mcp:c:c"}},
		{"mcp:a:* mcp:a:b", []string{"mcp:a:*", "mcp:a:b"}}, // only exact duplicates go
		{strings.TrimSuffix(strings.Repeat("mcp:a:b ", MaxScopeSetSize), " "), []string{"mcp:a:b"}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			set, err := ParseScopeSet(tt.in)
			if err != nil {
				t.Fatalf("ParseScopeSet(%q): %v", tt.in, err)
			}
			if got := set.Strings(); !slices.Equal(got, tt.want) {
				t.Errorf("Strings() = %q, want %q", got, tt.want)
			}
			if got, want := set.String(), strings.Join(tt.want, " "); got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
		})
	}
}

func TestParseScopeSetInvalid(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{" ", "starts with a space"},
		{" mcp:a:b", "starts with a space"},
		{"mcp:a:b ", "ends with a space"},
		{"mcp:a:b  mcp:c:d", "two spaces in a row"},
		{"mcp:a:b\tmcp:c:d", `contains '\t'`},
		{"mcp:a:b\nmcp:c:d", `contains '\n'`},
		{"mcp:a:b\r\nmcp:c:d", `contains '\r'`},
		{"mcp:a:b mcp:c", `mcp scope "mcp:c" needs a server and a tool`},
		{"mcp:a:b mcp:c:d\x00", "control character"},
		{"mcp:a:b\u00a0mcp:c:d", "non-ASCII"}, // no-break space
		{strings.Repeat("mcp:a:b ", MaxScopeSetSize) + "mcp:a:b", "over the limit of 64"},
		{strings.Repeat(" ", 1<<20), "over the limit of 64"},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			set, err := ParseScopeSet(tt.in)
			if err == nil {
				t.Fatalf("ParseScopeSet(%q) = %v, want error", tt.in, set)
			}
			if got := ErrorCode(err); got != EINVALID {
				t.Errorf("ErrorCode = %q, want %q", got, EINVALID)
			}
			if msg := ErrorMessage(err); !strings.Contains(msg, tt.want) {
				t.Errorf("message %q does not contain %q", msg, tt.want)
			}
		})
	}
}

func TestScopeSetCovers(t *testing.T) {
	tests := []struct {
		a, b      string
		uncovered string
	}{
		{"", "", ""},
		{"mcp:a:b", "", ""},
		{"", "mcp:a:b", "mcp:a:b"},
		{"mcp:github:* http:crm:GET:/contacts/**", "mcp:github:x http:crm:GET:/contacts/42", ""},
		{"mcp:github:*", "mcp:github:x mcp:gitlab:x mcp:github:y*", "mcp:gitlab:x"},
		// Conservative: the union of a covers /a/**, but no single scope does.
		{"http:u:GET:/a http:u:GET:/a/*/**", "http:u:GET:/a/**", "http:u:GET:/a/**"},
		{"http:u:GET:/a http:u:GET:/a/*/**", "http:u:GET:/a http:u:GET:/a/b", ""},
		{"http:u:GET:/** mcp:*:*", "http:u:POST:/ mcp:a:b http:v:GET:/", "http:u:POST:/ http:v:GET:/"},
	}
	for _, tt := range tests {
		t.Run(tt.a+" | "+tt.b, func(t *testing.T) {
			a, b := mustParseScopeSet(t, tt.a), mustParseScopeSet(t, tt.b)
			if got := a.Uncovered(b).String(); got != tt.uncovered {
				t.Errorf("Uncovered = %q, want %q", got, tt.uncovered)
			}
			if got, want := a.Covers(b), tt.uncovered == ""; got != want {
				t.Errorf("Covers = %v, want %v", got, want)
			}
		})
	}
}

func TestScopeSetAllows(t *testing.T) {
	set := mustParseScopeSet(t, "mcp:github:create_* http:crm:GET:/contacts/*")
	tests := []struct {
		req  string
		want bool
	}{
		{"mcp:github:create_issue", true},
		{"mcp:github:delete_repo", false},
		{"http:crm:GET:/contacts/1", true},
		{"http:crm:GET:/contacts/1/notes", false},
		{"http:crm:POST:/contacts/1", false},
		{"mcp:github:create_*", false}, // a pattern is not a request
		{"mcp:github:create_issue mcp:github:create_pr", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := set.Allows(tt.req); got != tt.want {
			t.Errorf("Allows(%q) = %v, want %v", tt.req, got, tt.want)
		}
	}
	if ScopeSet(nil).Allows("mcp:a:b") {
		t.Error("the empty set allows a request")
	}
}

func TestScopeSetJSON(t *testing.T) {
	set := mustParseScopeSet(t, "mcp:a:b http:u:GET:/x/**")
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `["mcp:a:b","http:u:GET:/x/**"]`; got != want {
		t.Errorf("Marshal = %s, want %s", got, want)
	}
	var back ScopeSet
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back, set) {
		t.Errorf("round trip = %v, want %v", back, set)
	}

	for _, empty := range []ScopeSet{nil, {}} {
		b, err := json.Marshal(empty)
		if err != nil || string(b) != "[]" {
			t.Errorf("Marshal(%#v) = %s, %v; want []", empty, b, err)
		}
	}
	// In a struct, as in Agent.Ceiling.
	b, err = json.Marshal(struct{ C ScopeSet }{})
	if err != nil || string(b) != `{"C":[]}` {
		t.Errorf("Marshal(struct) = %s, %v", b, err)
	}

	valid := []struct {
		in   string
		want []string
	}{
		{`[]`, []string{}},
		{`null`, []string{}},
		{`["mcp:a:b","mcp:a:b","mcp:c:d"]`, []string{"mcp:a:b", "mcp:c:d"}},
	}
	for _, tt := range valid {
		var got ScopeSet
		if err := json.Unmarshal([]byte(tt.in), &got); err != nil {
			t.Errorf("Unmarshal(%s): %v", tt.in, err)
			continue
		}
		if !slices.Equal(got.Strings(), tt.want) {
			t.Errorf("Unmarshal(%s) = %q, want %q", tt.in, got.Strings(), tt.want)
		}
	}

	invalid := []struct {
		in   string
		want string
	}{
		{`"mcp:a:b"`, "JSON array of strings"},
		{`[1]`, "JSON array of strings"},
		{`{}`, "JSON array of strings"},
		{`["mcp:a:b", "mcp:a"]`, `"mcp:a"`},
		{`["mcp:a:b mcp:c:d"]`, "contains a space"},
		{`[""]`, "empty scope"},
		{`["mcp:a:\u0000"]`, "control character"},
		{`[` + strings.TrimSuffix(strings.Repeat(`"mcp:a:b",`, MaxScopeSetSize+1), ",") + `]`, "over the limit of 64"},
	}
	for _, tt := range invalid {
		var got ScopeSet
		err := json.Unmarshal([]byte(tt.in), &got)
		if err == nil {
			t.Errorf("Unmarshal(%.40s) = %v, want error", tt.in, got)
			continue
		}
		if ErrorCode(err) != EINVALID || !strings.Contains(ErrorMessage(err), tt.want) {
			t.Errorf("Unmarshal(%.40s): %v (code %s), want an EINVALID error containing %q", tt.in, err, ErrorCode(err), tt.want)
		}
	}
}

func mustParseScope(t testing.TB, s string) Scope {
	t.Helper()
	sc, err := ParseScope(s)
	if err != nil {
		t.Fatalf("ParseScope(%q): %v", s, err)
	}
	return sc
}

func mustParseScopeSet(t testing.TB, s string) ScopeSet {
	t.Helper()
	set, err := ParseScopeSet(s)
	if err != nil {
		t.Fatalf("ParseScopeSet(%q): %v", s, err)
	}
	return set
}

func ExampleScope_Covers() {
	ceiling, _ := ParseScope("http:crm:GET:/contacts/**")
	for _, s := range []string{"http:crm:GET:/contacts/*", "http:crm:GET:/contacts", "http:crm:*:/contacts/*"} {
		want, _ := ParseScope(s)
		fmt.Println(s, ceiling.Covers(want))
	}
	// Output:
	// http:crm:GET:/contacts/* true
	// http:crm:GET:/contacts true
	// http:crm:*:/contacts/* false
}

func ExampleParseScopeSet() {
	ceiling, _ := ParseScopeSet("mcp:github:* http:crm:GET:/contacts/*")
	asked, _ := ParseScopeSet("mcp:github:create_issue mcp:slack:post_message")
	fmt.Println(ceiling.Covers(asked))
	fmt.Println(ceiling.Uncovered(asked))
	fmt.Println(ceiling.Allows("http:crm:GET:/contacts/42"))
	// Output:
	// false
	// mcp:slack:post_message
	// true
}

func ExampleParseScope() {
	_, err := ParseScope("http:crm:GET:/contacts/../admin")
	fmt.Println(err)
	// Output:
	// scope "http:crm:GET:/contacts/../admin" has path "/contacts/../admin" with a ".." segment; write the path without "." and ".." segments
}
