package secret

import (
	"strings"
	"testing"
)

// What masking costs on the texts it is mostly given: a refusal's message
// with no secret in it, and one with a secret.
func BenchmarkMask(b *testing.B) {
	for name, s := range map[string]string{
		"clean":  `client assertion: unknown agent "spiffe://example.org/agent/report-writer": register it with ` + "`mandate agent add`",
		"secret": `client_id "spiffe://example.org/agent/ghp_` + strings.Repeat("a1B2", 9) + `" does not match the assertion's sub`,
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				Mask(s)
			}
		})
	}
}
