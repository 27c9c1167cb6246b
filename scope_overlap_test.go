package mandate

import "testing"

func TestOverlaps(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"mcp:github:delete_*", "mcp:github:*", true},
		{"mcp:github:delete_*", "mcp:github:delete_repo", true},
		{"mcp:github:delete_*", "mcp:github:create_issue", false},
		{"mcp:github:delete_*", "mcp:git*:del*", true},
		{"mcp:github:delete_*", "mcp:gitlab:*", false},
		{"mcp:*:*", "http:crm:GET:/a", false},
		{"http:crm:DELETE:/**", "http:crm:*:/contacts/*", true},
		{"http:crm:DELETE:/**", "http:crm:GET:/contacts/*", false},
		{"http:crm:*:/contacts/*", "http:crm:*:/contacts/1/notes", false},
		{"http:crm:*:/contacts/**", "http:crm:*:/contacts/1/notes", true},
		{"http:crm:*:/a/**", "http:crm:*:/b/**", false},
		{"http:crm:*:/a/**", "http:crm:*:/**", true},
		{"http:crm:*:/a/b/**", "http:crm:*:/a*/**", true},
		{"http:crm:*:/a/b", "http:crm:*:/a/b/c", false},
		{"mcp:s:*", "mcp:s:prompt:x", false},
		{"mcp:s:*", "mcp:s:resource:**", false},
		{"mcp:s:prompt:*", "mcp:s:resource:*", false},
		{"mcp:s:prompt:a*", "mcp:*:prompt:ab", true},
		{"mcp:s:resource:file:///a/**", "mcp:s:resource:file:///a/b/*", true},
		{"mcp:s:resource:file:///a/**", "mcp:s:resource:file:///b/**", false},
		{"mcp:s:resource:file:///a/*", "mcp:s:resource:file:///a/b/c", false},
		{"mcp:s:resource:**", "mcp:t:resource:**", false},
	}
	for _, tt := range tests {
		a, b := mustScope(t, tt.a), mustScope(t, tt.b)
		if got := a.Overlaps(b); got != tt.want {
			t.Errorf("%s overlaps %s = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := b.Overlaps(a); got != tt.want {
			t.Errorf("%s overlaps %s = %v, want %v (not symmetric)", tt.b, tt.a, got, tt.want)
		}
	}
}

// TestOverlapsCovers: whatever a scope covers, it overlaps (a concrete
// request covered by both).
func TestOverlapsCovers(t *testing.T) {
	pats := []string{"mcp:github:*", "mcp:github:delete_*", "mcp:*:*", "mcp:github:delete_repo", "mcp:gitlab:x",
		"http:crm:*:/**", "http:crm:GET:/contacts/*", "http:crm:G*:/contacts/**", "http:crm:DELETE:/a",
		"mcp:github:prompt:*", "mcp:git*:prompt:review", "mcp:github:resource:**", "mcp:github:resource:repo://a/*", "mcp:*:resource:repo://a/b"}
	for _, x := range pats {
		for _, y := range pats {
			a, b := mustScope(t, x), mustScope(t, y)
			if a.Covers(b) && !a.Overlaps(b) {
				t.Errorf("%s covers %s but does not overlap it", x, y)
			}
		}
	}
}

func mustScope(t *testing.T, s string) Scope {
	t.Helper()
	sc, err := ParseScope(s)
	if err != nil {
		t.Fatal(err)
	}
	return sc
}
