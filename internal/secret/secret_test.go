package secret

import (
	"slices"
	"strings"
	"testing"
)

// Each finds what the patterns find: the literals each detector needs
// skip only texts the pattern cannot match, whatever their case or
// encoding (the (?i) of aws_secret_access_key included).
func FuzzEachIsThePatterns(f *testing.F) {
	for _, s := range []string{"AKIAIOSFODNN7EXAMPLE", "aws secret = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
		"AwS_SeCrEt: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "awſ ſecret=" + strings.Repeat("A", 40),
		"ghp_" + strings.Repeat("a1B2", 9), "github_pat_" + strings.Repeat("x", 22), "xoxb-1234567890-abcdefghij",
		"-----BEGIN RSA PRIVATE KEY-----", "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9." + strings.Repeat("s", 16), "plain text"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		type hit struct {
			name       string
			start, end int
		}
		var got, want []hit
		Each(b, -1, func(name string, start, end int) { got = append(got, hit{name, start, end}) })
		for _, d := range detectors {
			ext := maskExtent[d.name]
			for _, m := range d.re.FindAllIndex(b, -1) {
				end := m[1]
				if ext != nil {
					if e := ext.FindIndex(b[m[0]:]); e != nil {
						end = max(end, m[0]+e[1])
					}
				}
				want = append(want, hit{d.name, m[0], end})
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%q: Each finds %v, the patterns %v", b, got, want)
		}
	})
}

// Found names what it finds, sorted, escaped or not, and quotes nothing.
func TestFound(t *testing.T) {
	for in, want := range map[string]string{
		"clean up the test customers":                                             "",
		"deploy with AKIAIOSFODNN7EXAMPLE":                                        "aws_access_key_id",
		`"\u0041KIAIOSFODNN7EXAMPLE"`:                                             "aws_access_key_id",
		"ghp_" + strings.Repeat("a1B2", 9) + " and sk-" + strings.Repeat("q", 32): "github_token llm_api_key",
	} {
		if got := strings.Join(Found(in), " "); got != want {
			t.Errorf("Found(%q) = %q, want %q", in, got, want)
		}
	}
}
