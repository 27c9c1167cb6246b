package mandate

import (
	"strings"
	"testing"
)

// scopeSeeds are valid and invalid scopes to start the fuzzers from.
var scopeSeeds = []string{
	"mcp:github:create_issue", "mcp:git*:*", "mcp:*:*", "mcp:a:b:c", "mcp::x", "mcp:a:*x", "mcp:a:**",
	"MCP:a:b", " mcp:a:b", "mcp:gіthub:x", "mcp:a:b\x00",
	"http:crm:GET:/contacts/*", "http:u:*:/a/**", "http:u:G*:/", "http:u:GET:/**", "http:u:GET:/*/**",
	"http:u:GET:contacts", "http:u:get:/x", "http:u:GET:/a/../b", "http:u:GET:/a/**/b", "http:u:GET:/a%2f",
	"http:u:GET:/a%2F:b", "http:u:GET:/%41", "http:u:GET://", "http:u:GET:/.*", "http:u:GET:/a/bc*",
	"mcp:s:prompt:review", "mcp:s:prompt:*", "mcp:s:prompt:a:b", "mcp:s:resource:file:///a/**", "mcp:s:resource:**",
	"mcp:s:resource:*/**", "mcp:s:resource:", "mcp:s:resource:db://t?x=1#f", "mcp:s:resource:a/../b", "mcp:s:tool:x",
}

func FuzzParseScope(f *testing.F) {
	for _, s := range scopeSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseScope(in)
		if err != nil {
			if ErrorCode(err) != EINVALID {
				t.Fatalf("ParseScope(%q): error code %q, want %q", in, ErrorCode(err), EINVALID)
			}
			return
		}
		if s.String() != in {
			t.Fatalf("ParseScope(%q).String() = %q", in, s.String())
		}
		again, err := ParseScope(s.String())
		if err != nil || again != s {
			t.Fatalf("ParseScope(%q) reparses to %v, %v", in, again, err)
		}
		if !s.Covers(s) {
			t.Fatalf("%v does not cover itself", s)
		}
		if s.IsConcrete() != !strings.Contains(in, "*") {
			t.Fatalf("%v: IsConcrete() = %v", s, s.IsConcrete())
		}
		if s.IsConcrete() && !s.Matches(in) {
			t.Fatalf("concrete %v does not match itself", s)
		}
		if k := s.Kind(); k != "mcp" && k != "http" {
			t.Fatalf("%v: Kind() = %q", s, k)
		}
	})
}

func FuzzScopeCovers(f *testing.F) {
	for i, a := range scopeSeeds {
		f.Add(a, scopeSeeds[(i+1)%len(scopeSeeds)])
	}
	f.Add("mcp:git*:*", "mcp:github:x")
	f.Add("http:u:*:/a/**", "http:u:GET:/a")
	f.Add("http:u:GET:/a/b*", "http:u:GET:/a/bc*")
	f.Add("http:u:GET:/**", "http:u:GET:/x/y/z")
	f.Add("mcp:s:resource:file:///a/**", "mcp:s:resource:file:///a/b")
	f.Add("mcp:s:*", "mcp:s:prompt:x")
	f.Add("mcp:s:reso*", "mcp:s:resource:x")
	f.Fuzz(func(t *testing.T, as, bs string) {
		a, err := ParseScope(as)
		if err != nil {
			return
		}
		b, err := ParseScope(bs)
		if err != nil {
			return
		}
		covers := a.Covers(b)
		if covers && b.IsConcrete() && !a.Matches(b.String()) {
			t.Fatalf("%v covers concrete %v but does not match it", a, b)
		}
		if b.IsConcrete() && a.Matches(bs) != refMatch(as, bs) {
			t.Fatalf("%v.Matches(%q) = %v, but the reference matcher says %v", a, bs, a.Matches(bs), !a.Matches(bs))
		}
		// One spelling per pattern: mutual cover means the same pattern.
		if covers && b.Covers(a) && a != b {
			t.Fatalf("%v and %v cover each other", a, b)
		}
		if covers && a.Kind() != b.Kind() {
			t.Fatalf("%v covers %v of another kind", a, b)
		}
	})
}

func FuzzParseScopeSet(f *testing.F) {
	f.Add("")
	f.Add("mcp:a:b http:u:GET:/x mcp:a:b")
	f.Add("mcp:a:b  mcp:c:d")
	f.Add("mcp:a:b\tmcp:c:d")
	f.Fuzz(func(t *testing.T, in string) {
		set, err := ParseScopeSet(in)
		if err != nil {
			if ErrorCode(err) != EINVALID {
				t.Fatalf("ParseScopeSet(%q): error code %q", in, ErrorCode(err))
			}
			return
		}
		again, err := ParseScopeSet(set.String())
		if err != nil || again.String() != set.String() {
			t.Fatalf("ParseScopeSet(%q) reparses to %v, %v", in, again, err)
		}
		if !set.Covers(set) || len(set.Uncovered(set)) != 0 {
			t.Fatalf("%v does not cover itself", set)
		}
	})
}
