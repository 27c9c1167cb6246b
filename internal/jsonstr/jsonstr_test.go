package jsonstr

import (
	"bytes"
	"encoding/json"
	"testing"
)

// The hand-written encoder agrees with encoding/json (HTML escaping off)
// on every string, so canonical entries are plain JSON that any tool reads
// the same.
func FuzzAppend(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\" back\\slash", "\n\r\t\x00\x1f", "\u2028\u2029", "\xff\xfe", "é🙂", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		enc.Encode(s)
		want := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if got := Append(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("Append(%q) = %s, encoding/json says %s", s, got, want)
		}
	})
}
