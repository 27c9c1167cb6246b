package gateway

import "testing"

func TestCanonical(t *testing.T) {
	for _, tt := range []struct {
		in    string
		rules pathRules
		want  string // "" for refused
	}{
		{"/a/b", pathRules{}, "/a/b"},
		{"/%61/%7e", pathRules{}, "/a/~"},
		{"/a%3bb/%2a/*", pathRules{}, "/a%3Bb/%2A/%2A"},
		{"/caf\u00e9", pathRules{}, "/caf%C3%A9"},
		{"/a%2Fb", pathRules{}, ""},
		{"/a%2Fb", pathRules{encodedSlashes: true}, "/a%2Fb"},
		{"/a%2F..", pathRules{encodedSlashes: true}, ""},
		{"/a/..;x/b", pathRules{}, ""},
		{"/a/%25%32%65", pathRules{}, ""},
		{"/a/%25zz", pathRules{}, "/a/%25zz"}, // a % that no second decoding reads as an escape
		{"a", pathRules{}, ""},
		{"", pathRules{}, ""},
		{"file:///a/b?x=1#y", pathRules{uri: true}, "file:///a/b?x=1#y"},
		{"file:///a/b%3Fx", pathRules{uri: true}, "file:///a/b%3Fx"},
		{"file:///a/..?x", pathRules{uri: true}, ""},
		{"file:///a/{x}", pathRules{uri: true}, "file:///a/%7Bx%7D"},
		{"file:///a/b", pathRules{}, ""},
	} {
		got, why := canonical(tt.in, tt.rules)
		if got != tt.want || (got == "") != (why != "") {
			t.Errorf("canonical(%q, %+v) = %q (%s), want %q", tt.in, tt.rules, got, why, tt.want)
		}
	}
}

func TestTemplateScope(t *testing.T) {
	for _, tt := range []struct{ template, want string }{
		{"file:///public/{name}", "mcp:s:resource:file:///public/**"},
		{"file:///public/x_{name}.txt", "mcp:s:resource:file:///public/**"},
		{"file:///{+path}", "mcp:s:resource:file:///**"},
		{"db://tables/{t}/rows{?limit}", "mcp:s:resource:db://tables/**"},
		{"{scheme}://x", "mcp:s:resource:**"},
		{"/{x}", "mcp:s:resource:/**"},
		{"file:///a/b.txt", "mcp:s:resource:file:///a/b.txt"},
		{"file:///a/../{x}", ""},
		{"", ""},
	} {
		sc, ok := templateScope("s", tt.template)
		if got := sc.String(); ok != (tt.want != "") || ok && got != tt.want {
			t.Errorf("templateScope(%q) = %q %v, want %q", tt.template, got, ok, tt.want)
		}
	}
}
