package gateway

import (
	"encoding/json"
	"fmt"
	"net/mail"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/mandatehq/mandate/internal/secret"
)

// An internal rule reads an address list strictly: whatever it takes for
// internal, the standard library's RFC 5322 parser reads as the same
// addresses, all in the internal domains, and no '@' in the value points
// anywhere else. (A value it cannot read plainly is external, which is
// always safe.)
func FuzzInternalAddresses(f *testing.F) {
	for _, s := range []string{"bob@acme.example", "bob@acme.example, carol@eu.acme.example", `"x@evil.example"@acme.example`,
		"bob%evil.example@acme.example", "Eve <eve@evil.example>", "bob@acme.example,", "bob@ACME.example", "b.o+b@acme.example"} {
		f.Add(s)
	}
	r := InternalRule{Recipients: []string{"to"}, Domains: []string{"acme.example", "*.acme.example"}}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := r.internalAddresses(s)
		if !ok {
			return
		}
		list, err := mail.ParseAddressList(s)
		if err != nil || len(list) != n {
			t.Fatalf("%q: internal (%d addresses), but net/mail reads %v (%v)", s, n, list, err)
		}
		for _, a := range list {
			_, domain, _ := strings.Cut(a.Address, "@")
			if d := strings.ToLower(domain); d != "acme.example" && !strings.HasSuffix(d, ".acme.example") {
				t.Fatalf("%q: internal, but net/mail reads an address of %s", s, domain)
			}
		}
		for _, part := range strings.Split(s, "@")[1:] {
			d := strings.ToLower(strings.TrimSpace(strings.SplitN(part, ",", 2)[0]))
			if d != "acme.example" && !strings.HasSuffix(d, ".acme.example") {
				t.Fatalf("%q: internal, but an @ points to %q", s, d)
			}
		}
	})
}

// However a JSON text spells its strings, the secret detectors find the
// same: every character escaped as \uXXXX hides nothing.
func FuzzFindSecretsEscaped(f *testing.F) {
	for _, s := range []string{"AKIAIOSFODNN7EXAMPLE", "-----BEGIN RSA PRIVATE KEY-----", "ghp_" + strings.Repeat("a1B2", 9), "plain text"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		plain, err := json.Marshal(map[string]string{"v": s})
		if err != nil {
			return
		}
		var esc strings.Builder
		esc.WriteString(`{"v":"`)
		for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
			for _, u := range utf16.Encode([]rune{r}) {
				fmt.Fprintf(&esc, `\u%04x`, u)
			}
		}
		esc.WriteString(`"}`)
		if got, want := fmt.Sprint(secret.Find([]byte(esc.String()))), fmt.Sprint(secret.Find(plain)); got != want {
			t.Fatalf("%q: escaped %s, plain %s", s, got, want)
		}
	})
}
