package gateway

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// scanResult is what the scan finds in a tool's definition.
type scanResult struct {
	Score   int
	Reasons []string
}

func (r scanResult) findings() []string { return r.Reasons }

// scanTool scans a decoded tool definition.
func scanTool(tool map[string]any) scanResult {
	c, _ := json.Marshal(tool)
	f := scanDefinition(c)
	return scanResult{Score: len(f), Reasons: f}
}

// The scan of tool definitions: markers that a description addresses the
// model rather than describes the tool, hides text, or reaches for
// secrets (docs/gateway.md, "Tool integrity"). A finding is a hint for an
// operator, not proof: the point is that nobody approved it.
var scanRules = []struct {
	what string
	re   *regexp.Regexp
}{
	{"tells the model to ignore or override its instructions", regexp.MustCompile(`(?i)\b(ignore|disregard|forget|override)\b.{0,40}\b(previous|prior|above|earlier|all|system|other)\b.{0,20}\b(instructions?|prompts?|rules|messages?)\b`)},
	{"addresses the model with hidden or urgent directives", regexp.MustCompile(`(?i)<\s*(important|system|instructions?|secret|hidden)\s*>|\b(do not|don't|never)\s+(tell|mention|reveal|inform|show)\b.{0,30}\b(user|human|anyone)\b`)},
	{"asks for secrets or credentials", regexp.MustCompile(`(?i)\b(read|include|send|pass|provide|attach|append|add|paste|put|give)\b.{0,40}\b(private[ _-]?keys?|api[ _-]?keys?|secret[ _-]?keys?|access[ _-]?tokens?|passwords?|credentials?|mnemonic|seed phrase)\b`)},
	{"names files outside a tool's purpose", regexp.MustCompile(`(?i)(~/\.ssh|id_rsa|id_ed25519|\.aws/credentials|\.env\b|/etc/(passwd|shadow)|\.netrc|\.npmrc|\.git-credentials|kubeconfig)`)},
	{"tells the model to send data elsewhere", regexp.MustCompile(`(?i)\b(send|forward|upload|post|exfiltrate|copy)\b.{0,40}\b(to|into)\b.{0,20}(https?://|\b[\w.-]+@[\w.-]+\.\w+)`)},
}

// scanDefinition returns what the scan finds in a tool's canonical
// definition (its description, and the descriptions in its schema).
func scanDefinition(canonical []byte) []string {
	var text string
	var walk func(v any)
	var sb strings.Builder
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			sb.WriteString(x)
			sb.WriteByte('\n')
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for k, e := range x {
				sb.WriteString(k)
				sb.WriteByte('\n')
				walk(e)
			}
		}
	}
	var v any
	if json.Unmarshal(canonical, &v) == nil {
		walk(v)
	}
	text = sb.String()
	var found []string
	if hidden := hiddenRunes(text); hidden != "" {
		found = append(found, "holds invisible characters ("+hidden+")")
	}
	for _, r := range scanRules {
		if r.re.MatchString(text) {
			found = append(found, r.what)
		}
	}
	return found
}

// hiddenRunes names the invisible or direction-changing characters in s:
// zero-width characters, bidirectional controls and Unicode tag
// characters, with which a description can say to a model what a person
// reading it does not see.
func hiddenRunes(s string) string {
	var names []string
	seen := map[string]bool{}
	for _, r := range s {
		var n string
		switch {
		case r >= 0xE0000 && r <= 0xE007F:
			n = "tag characters"
		case r == 0x200B || r == 0x200C || r == 0x200D || r == 0x2060 || r == 0xFEFF:
			n = "zero-width characters"
		case (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069) || r == 0x200E || r == 0x200F:
			n = "bidirectional controls"
		case unicode.Is(unicode.Cf, r) && r != 0xAD:
			n = fmt.Sprintf("format character U+%04X", r)
		}
		if n != "" && !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}
