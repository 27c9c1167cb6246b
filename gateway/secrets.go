package gateway

import (
	"regexp"
	"slices"
)

// secretDetectors find credentials in tool arguments and results
// (docs/gateway.md, "Inspection"). Each is a pattern of a credential's own
// format, so that it finds few false positives; none finds every secret.
var secretDetectors = []struct {
	name string
	re   *regexp.Regexp
}{
	{"private_key", regexp.MustCompile(`-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----`)},
	{"aws_access_key_id", regexp.MustCompile(`\b(?:AKIA|ASIA)[0-9A-Z]{16}\b`)},
	{"aws_secret_access_key", regexp.MustCompile(`(?i)aws.{0,20}secret.{0,20}[=:"' ]\s*"?[A-Za-z0-9/+]{40}\b`)},
	{"github_token", regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b`)},
	{"gitlab_token", regexp.MustCompile(`\bglpat-[A-Za-z0-9_-]{20,}\b`)},
	{"slack_token", regexp.MustCompile(`\bxox[abposr]-[A-Za-z0-9-]{10,}\b`)},
	{"google_api_key", regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}\b`)},
	{"stripe_secret_key", regexp.MustCompile(`\b[rs]k_live_[0-9A-Za-z]{24,}\b`)},
	{"llm_api_key", regexp.MustCompile(`\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{32,}\b`)},
	{"jwt", regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}`)},
	{"mandate_approver_token", regexp.MustCompile(`\bmapr_[A-Za-z0-9_-]{43}\b`)},
}

// maxSecretMatches bounds the matches counted per detector.
const maxSecretMatches = 100

// findSecrets counts what each detector finds in b (raw JSON: escapes such
// as \n inside a PEM block do not hide its header). It scans as
// maskSecrets does (eachSecret), so that what is counted is what an
// approver's view masks.
func findSecrets(b []byte) map[string]any {
	var found map[string]any
	eachSecret(b, maxSecretMatches, func(name string, _, _ int) {
		if found == nil {
			found = map[string]any{}
		}
		n, _ := found[name].(int)
		found[name] = n + 1
	})
	return found
}

// secretLabels are the data labels policy sees for a call whose arguments
// hold secrets: "secret_in_args", and "secret:<detector>" for each kind.
func secretLabels(found map[string]any) []string {
	if len(found) == 0 {
		return nil
	}
	labels := []string{"secret_in_args"}
	for k := range found {
		labels = append(labels, "secret:"+k)
	}
	slices.Sort(labels[1:])
	return labels
}
