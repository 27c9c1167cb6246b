package mandate_test

import (
	"go/build"
	"os/exec"
	"strings"
	"testing"
)

// TestArchitecture keeps the arrows pointing one way (DESIGN.md,
// "Components"): the domain depends on nothing of ours, adapters do not
// import each other, and only cmd/mandate wires everything together.
func TestArchitecture(t *testing.T) {
	const mod = "github.com/mandatehq/mandate"
	allowed := map[string][]string{
		"":                    {"internal/jsonstr", "internal/secret"},
		"jose":                {"internal/jsonstr", "internal/secret"},
		"replay":              {},
		"dpop":                {"jose", "internal/secret"},
		"verify":              {"", "jose", "dpop", "replay", "internal/clock", "internal/noredirect", "internal/secret"},
		"issuer":              {"", "jose", "dpop", "replay", "policy", "internal/atomicfile", "internal/bucket", "internal/clock"},
		"internal/bucket":     {},
		"internal/atomicfile": {},
		"internal/jsonstr":    {},
		"sqlite":              {"", "auditlog", "auditlog/layout", "internal/clock", "internal/evindex", "internal/logfile"},
		// A clock for pruners that a wall-clock jump cannot run ahead.
		"internal/clock": {},
		// The audit log's files: entries, offsets, hash tiles.
		"internal/logfile": {"internal/atomicfile"},
		// The audit log's query index, for a store that keeps the log itself.
		"internal/evindex": {""},
		// The audit log's logic and format, and its offline verifier.
		"auditlog":        {"", "auditlog/layout", "internal/atomicfile"},
		"auditlog/layout": {},
		"auditcheck":      {"", "auditlog/layout", "internal/noredirect"},
		"storetest":       {"", "jose"},
		"httpapi":         {"", "jose", "dpop", "verify", "issuer", "auditlog", "auditlog/layout", "internal/bucket", "internal/noredirect"},
		// The Go client for agents speaks OAuth only.
		"client": {"", "jose", "dpop", "internal/noredirect"},
		// Cedar policy decisions; the issuer and the gateway call it.
		"policy": {""},
		// The MCP enforcement point: verifies, decides, audits, forwards.
		"gateway": {"", "verify", "policy", "replay", "internal/bucket", "internal/clock", "internal/noredirect", "internal/secret"},
		// Detectors over the committed events; risk for policy.
		"monitor": {""},
		// The HTTP clients Mandate sends its requests with: no redirects.
		"internal/noredirect": {},
		// The secret detectors, and the masking of what they find.
		"internal/secret": {},
		// One server per data directory: the lock of <data>/LOCK.
		"internal/dirlock": {},
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}", "./...").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, mod), "/")
		if strings.HasPrefix(rel, "cmd/") {
			continue
		}
		ok, known := allowed[rel]
		if !known {
			t.Errorf("package %q has no rule here: add one", pkg)
			continue
		}
		p, err := build.Import(pkg, ".", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range p.Imports {
			if imp != mod && !strings.HasPrefix(imp, mod+"/") {
				continue
			}
			dep := strings.TrimPrefix(strings.TrimPrefix(imp, mod), "/")
			found := false
			for _, a := range ok {
				found = found || a == dep
			}
			if !found {
				t.Errorf("%s imports %s: not allowed (DESIGN.md, Components)", pkg, imp)
			}
		}
	}
}
