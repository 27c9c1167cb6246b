package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// mandate demo plays the whole story and its JSON summary says, outcome by
// outcome, that each expected thing happened; a second run on the same
// data directory does too.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	for run := range 2 {
		var out, story strings.Builder
		err := dispatch(context.Background(), []string{"demo", "--pace", "0", "--json", "--data", dir}, strings.NewReader(""), &out, &story)
		var sum StorySummary
		if jerr := json.Unmarshal([]byte(out.String()), &sum); jerr != nil {
			t.Fatalf("run %d: %v, summary %q: %v\n%s", run, err, out.String(), jerr, story.String())
		}
		for _, o := range sum.Outcomes {
			if !o.OK {
				t.Errorf("run %d: %s: %s did not happen (%s)", run, o.Step, o.Want, o.Detail)
			}
		}
		if err != nil || !sum.OK || len(sum.Outcomes) != 11 || sum.ExfiltratedMails != 0 || !sum.AuditVerified ||
			sum.TimeToContainMS <= 0 || sum.MandatesIssued != 5 || sum.CallsAllowed != 3 {
			t.Errorf("run %d: %v, summary %+v\n%s", run, err, sum, story.String())
		}
		if !strings.Contains(story.String(), "mandate.revoked [exfiltration]") {
			t.Errorf("run %d: the story does not show the revocation:\n%s", run, story.String())
		}
	}
}
