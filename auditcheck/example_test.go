package auditcheck_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/mandatehq/mandate/auditcheck"
)

// Verify an exported log with a pinned key, remembering what was seen for
// the next time.
func ExampleVerify() {
	vkey, err := os.ReadFile("mandate.vkey")
	if err != nil {
		log.Fatal(err)
	}
	report, err := auditcheck.Verify(context.Background(), auditcheck.DirSource("audit-copy"), auditcheck.Options{
		VerifierKey: string(vkey),
		State:       "audit-state.json",
	})
	if err != nil {
		log.Fatal(err) // could not verify: unreadable log, bad key or state file
	}
	fmt.Print(report)
	if !report.OK() {
		os.Exit(1)
	}
}
