package gateway

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/secret"
)

// Secrets in a held call's arguments are masked in what its approver
// sees, by the detectors that count them, whatever their spelling: in a
// string among other words, as a number, split over a key and its value,
// hidden behind escapes, and a private key's whole body.
func TestApprovalArgumentsMasked(t *testing.T) {
	const pem = `-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----`
	tests := []struct {
		name, args string
		want       string
		secrets    []string
	}{
		{"none", `{"name": "ada", "n": 1}`, `{"name":"ada","n":1}`, nil},
		{"order kept", `{"z":1,"a":2}`, `{"z":1,"a":2}`, nil},
		{"in a sentence", `{"body":"key AKIAIOSFODNN7EXAMPLE, thanks"}`, `{"body":"key [secret:aws_access_key_id], thanks"}`, []string{"aws_access_key_id"}},
		{"two in one string", `{"b":"ghp_` + strings.Repeat("a", 36) + ` and AKIAIOSFODNN7EXAMPLE"}`,
			`{"b":"[secret:github_token] and [secret:aws_access_key_id]"}`, []string{"aws_access_key_id", "github_token"}},
		{"key and value", `{"aws_secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}`, `{"aws_secret":"[secret:aws_secret_access_key]"}`, []string{"aws_secret_access_key"}},
		{"a number", `{"aws secret": 1234567890123456789012345678901234567890}`, `{"aws secret":"[secret:aws_secret_access_key]"}`, []string{"aws_secret_access_key"}},
		{"escaped", `{"k":"\u0041KIAIOSFODNN7EXAMPLE"}`, `{"k":"[secret:aws_access_key_id]"}`, []string{"aws_access_key_id"}},
		{"escaped slash", `{"t":"xoxb-1234567890\/abc"}`, `{"t":"[secret:slack_token]/abc"}`, []string{"slack_token"}},
		{"private key", `{"key":"` + pem + `","next":"shown"}`, `{"key":"[secret:private_key]","next":"shown"}`, []string{"private_key"}},
		{"far apart when sent", `{"aws` + strings.Repeat(" ", 30) + `secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}`,
			`{"aws` + strings.Repeat(" ", 30) + `secret":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}`, nil},
		{"null", `null`, ``, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, short, secrets := approvalArguments([]byte(tt.args))
			if string(got) != tt.want || short || !slices.Equal(secrets, tt.secrets) {
				t.Errorf("got %s %v %v\nwant %s %v", got, short, secrets, tt.want, tt.secrets)
			}
			if len(got) > 0 && secret.Find(got) != nil {
				t.Errorf("the approver sees a secret: %s", got)
			}
		})
	}
}

// The arguments an approver sees are bounded, and a huge first member
// hides neither the members after it nor that something was cut.
func TestApprovalArgumentsShortened(t *testing.T) {
	body := strings.Repeat("lorem ipsum ", 80_000) // ~1 MB, the body limit
	args := fmt.Sprintf(`{"body":%q,"list":[%s],"to":"drop@evil.example","bcc":"ceo@example.org"}`, body,
		strings.TrimSuffix(strings.Repeat(`"x",`, 50_000), ","))
	got, short, _ := approvalArguments([]byte(args))
	if !short || len(got) > mandate.MaxApprovalArguments || !json.Valid(got) {
		t.Fatalf("%d bytes, shortened %v, valid %v", len(got), short, json.Valid(got))
	}
	for _, want := range []string{`"to":"drop@evil.example"`, `"bcc":"ceo@example.org"`, `more items not shown]"`, `bytes]"`} {
		if !strings.Contains(string(got), want) {
			t.Errorf("the approver does not see %s:\n%.400s…", want, got)
		}
	}
	// Many members: the first ones are shown, the rest counted.
	var b strings.Builder
	b.WriteString("{")
	for i := range 5000 {
		fmt.Fprintf(&b, `"k%05d":"%s",`, i, strings.Repeat("v", 20))
	}
	b.WriteString(`"last":1}`)
	got, short, _ = approvalArguments([]byte(b.String()))
	if !short || len(got) > mandate.MaxApprovalArguments || !strings.Contains(string(got), `"[not shown]":"`) || !strings.Contains(string(got), `"k00000"`) {
		t.Errorf("5000 members: %d bytes, shortened %v: %.200s", len(got), short, got)
	}
	// Deep nesting is cut at a depth.
	deep := strings.Repeat(`{"a":`, 50) + "1" + strings.Repeat("}", 50)
	if got, short, _ := approvalArguments([]byte(deep)); !short || !strings.Contains(string(got), "not shown") {
		t.Errorf("deep: %s %v", got, short)
	}
}

// What an approver sees is always valid JSON within the bound, holds no
// text any detector flags, and is the same for the same arguments.
func FuzzApprovalArguments(f *testing.F) {
	for _, s := range []string{`{"a":"AKIAIOSFODNN7EXAMPLE"}`, `{"aws secret":"` + strings.Repeat("A", 40) + `"}`,
		`[1,2,"ghp_` + strings.Repeat("x", 40) + `"]`, `{"k":"-----BEGIN RSA PRIVATE KEY-----\nabc"}`, `"\u2028"`, `{"a":{"b":[[[]]]}}`,
		`{"x":"` + strings.Repeat("é", 3000) + `"}`, `12345678901234567890123456789012345678901234567890123456789012345678901234567890`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		got, _, _ := approvalArguments(raw)
		if got == nil {
			return
		}
		if !json.Valid(got) || len(got) > mandate.MaxApprovalArguments {
			t.Fatalf("%q: %d bytes, valid %v: %q", raw, len(got), json.Valid(got), got)
		}
		if found := secret.Find(got); found != nil {
			t.Fatalf("%q: the approver sees %v in %q", raw, found, got)
		}
		if again, _, _ := approvalArguments(raw); string(again) != string(got) {
			t.Fatalf("%q: not deterministic", raw)
		}
	})
}

// The arguments an approver sees fit their audit event however they are
// spelt: the text is at most 16 KiB, and quoting it as a string at most
// doubles it.
func TestApprovalArgumentsFitTheEvent(t *testing.T) {
	for name, args := range map[string]string{
		"quotes":    `{"q":"` + strings.Repeat(`\"`, 1<<18) + `"}`,
		"backslash": `["` + strings.Repeat(`\\`, 1<<18) + `"]`,
		"controls":  `{"c":"` + strings.Repeat(`\u0001`, 1<<16) + `"}`,
		"members":   `{` + strings.TrimSuffix(strings.Repeat(`"\"":"\"",`, 1<<14), ",") + `}`,
	} {
		got, _, _ := approvalArguments([]byte(args))
		ev := &mandate.Event{V: mandate.EventVersion, Time: 1, Type: mandate.EventApprovalRequested, Task: "t_1",
			Reason: strings.Repeat("r", mandate.MaxReason), Details: map[string]any{"arguments": string(got)}}
		b, err := mandate.MarshalEvent(ev)
		if err != nil || len(b) > 2*mandate.MaxApprovalArguments+2048 {
			t.Errorf("%s: %d bytes of arguments make an event of %d bytes: %v", name, len(got), len(b), err)
		}
	}
}

// secret.Mask masks every secret of a plain text (an event's resource or
// reason), and leaves the rest as it was.
func TestMaskText(t *testing.T) {
	for in, want := range map[string]string{
		"mcp:crm:list":                                    "mcp:crm:list",
		"mcp:crm:AKIAIOSFODNN7EXAMPLE":                    "mcp:crm:[secret:aws_access_key_id]",
		"http:files:GET:/a/AKIAIOSFODNN7EXAMPLE/b":        "http:files:GET:/a/[secret:aws_access_key_id]/b",
		"two AKIAIOSFODNN7EXAMPLE ASIAIOSFODNN7EXAMPLE .": "two [secret:aws_access_key_id] [secret:aws_access_key_id] .",
		"k -----BEGIN PRIVATE KEY-----abc":                "k [secret:private_key]",
		"ü AKIAIOSFODNN7EXAMPLE ü":                        "ü [secret:aws_access_key_id] ü",
	} {
		if got := secret.Mask(in); got != want {
			t.Errorf("secret.Mask(%q) = %q, want %q", in, got, want)
		}
	}
}

// What secret.Mask leaves holds nothing a detector finds.
func FuzzMaskText(f *testing.F) {
	for _, s := range []string{"AKIAIOSFODNN7EXAMPLE", "-----BEGIN RSA PRIVATE KEY-----x AKIAIOSFODNN7EXAMPLE", "ghp_" + strings.Repeat("a1B2", 9) + " xoxb-1234567890-abcdefghij"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := secret.Mask(s)
		secret.Each([]byte(out), -1, func(name string, start, end int) {
			t.Errorf("secret.Mask(%q) = %q: %s at %d", s, out, name, start)
		})
	})
}
