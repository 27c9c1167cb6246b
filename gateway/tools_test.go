package gateway

import (
	"strings"
	"testing"

	"github.com/mandatehq/mandate/internal/secret"
)

// Each secret detector finds its own format (the samples are the
// providers' documented examples or made-up values of the same shape),
// and ordinary text finds nothing.
func TestFindSecrets(t *testing.T) {
	for want, sample := range map[string]string{
		"private_key":            `{"note":"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"}`,
		"aws_access_key_id":      `{"key":"AKIAIOSFODNN7EXAMPLE"}`,
		"aws_secret_access_key":  `{"env":"AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}`,
		"github_token":           `{"t":"ghp_` + strings.Repeat("a1B2", 9) + `"}`,
		"gitlab_token":           `{"t":"glpat-` + strings.Repeat("x", 20) + `"}`,
		"slack_token":            `{"t":"xoxb-1234567890-abcdefghij"}`,
		"google_api_key":         `{"k":"AIza` + strings.Repeat("Z", 35) + `"}`,
		"stripe_secret_key":      `{"k":"sk_live_` + strings.Repeat("4", 24) + `"}`,
		"llm_api_key":            `{"k":"sk-ant-` + strings.Repeat("q", 40) + `"}`,
		"jwt":                    `{"auth":"eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.` + strings.Repeat("s", 43) + `"}`,
		"mandate_approver_token": `{"t":"mapr_` + strings.Repeat("A", 43) + `"}`,
	} {
		got := secret.Find([]byte(sample))
		if got[want] != 1 || len(got) != 1 {
			t.Errorf("%s: found %v in %s", want, got, sample)
		}
	}
	// What the upstream decodes is what is scanned: a JSON escape does
	// not hide a secret from the detectors (the gateway forwards the
	// arguments' bytes as they came, escapes included).
	for _, sample := range []string{
		`{"key":"\u0041KIAIOSFODNN7EXAMPLE"}`,
		`{"key":"AKIA\u0049OSFODNN7EXAMPLE"}`,
		`{"k\u0065y":["x","\u0041\u004bIAIOSFODNN7EXAMPLE"]}`,
	} {
		if got := secret.Find([]byte(sample)); got["aws_access_key_id"] != 1 || len(got) != 1 {
			t.Errorf("escaped: found %v in %s", got, sample)
		}
	}
	if got := secret.Find([]byte(`{"pem":"-----BEGIN RSA PRIVATE KEY\u002d----\nMIIE"}`)); got["private_key"] != 1 {
		t.Errorf("an escaped PEM header: found %v", got)
	}
	// Not JSON (an HTTP body in another format): its bytes are scanned.
	if got := secret.Find([]byte("key=AKIAIOSFODNN7EXAMPLE&x=1")); got["aws_access_key_id"] != 1 {
		t.Errorf("a form body: found %v", got)
	}
	if got := secret.Find([]byte(`{"query":"customers in Paris","limit":10,"id":"m_01JD9Z5T3Y8Q4W2E6R0T1Y2U3I"}`)); got != nil {
		t.Errorf("ordinary arguments: %v", got)
	}
	if l := secretLabels(map[string]any{"jwt": 1, "aws_access_key_id": 2}); strings.Join(l, " ") != "secret_in_args secret:aws_access_key_id secret:jwt" {
		t.Errorf("labels %v", l)
	}
}
