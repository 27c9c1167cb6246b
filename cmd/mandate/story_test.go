package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate/gateway"
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

// serve --demo plays the scenario in a loop, a line per round, each round
// with every outcome as expected.
func TestServeDemoLoop(t *testing.T) {
	m := NewMain()
	m.Addr, m.DataDir, m.Demo, m.DemoPace = "127.0.0.1:0", t.TempDir(), true, 10*time.Millisecond
	out := &lockedWriter{w: &strings.Builder{}}
	m.Stdout, m.Stderr = out, testWriter{t}
	_, stop, err := m.prepareDemo()
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if err := m.Open(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.demoLoop(ctx, m.DemoPace) }()
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(out.String(), "demo round 2:"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no second round:\n%s", out.String())
		}
	}
	cancel()
	<-done
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "demo round") && !strings.Contains(line, "11 of 11 outcomes as expected") {
			t.Errorf("%s", line)
		}
	}
}

// serve --demo does not play its scenario (which deletes records and sends
// mail) against an operator's own servers of the same names.
func TestDemoRefusesRealRoutes(t *testing.T) {
	m := NewMain()
	m.DataDir = t.TempDir()
	m.MCPUpstreams = []gateway.Route{{Name: "crm", URL: "http://crm.internal.example/mcp"}}
	if _, _, err := m.prepareDemo(); err == nil || !strings.Contains(err.Error(), "configured already") {
		t.Fatalf("prepareDemo with a real crm route: %v", err)
	}
}
