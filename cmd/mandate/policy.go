package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/mandatehq/mandate/policy"
)

// The policy commands work on files, not on a running server: they load
// a policy directory as the server would, so that a set can be checked and
// tested before it is put where the server watches.

func (c *cli) policy(args []string) error {
	if len(args) == 0 {
		return usageError{"policy needs a subcommand: check, test, explain"}
	}
	switch args[0] {
	case "check":
		return c.policyCheck(args[1:])
	case "test":
		return c.policyTest(args[1:])
	case "explain":
		return c.policyExplain(args[1:])
	}
	return usageError{fmt.Sprintf("unknown policy subcommand %q: use check, test or explain", args[0])}
}

// policyFlags returns a flag set with --json only: the policy commands
// need no server.
func (c *cli) policyFlags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("mandate "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&c.json, "json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "usage: mandate %s %s\n", name, synopsis)
		fs.SetOutput(c.stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// diagnosticJSON is a policy.Diagnostic as --json prints it.
type diagnosticJSON struct {
	File    string `json:"file"`
	Line    int    `json:"line,omitempty"`
	Col     int    `json:"col,omitempty"`
	Policy  string `json:"policy,omitempty"`
	Message string `json:"message"`
}

func diagnosticsJSON(ds []policy.Diagnostic) []diagnosticJSON {
	out := make([]diagnosticJSON, len(ds))
	for i, d := range ds {
		out[i] = diagnosticJSON{File: d.File, Line: d.Line, Col: d.Col, Policy: d.Policy, Message: d.Message}
	}
	return out
}

// problemsError says that a command found problems it has printed: the
// exit status is 1, with one line on standard error.
func problemsError(n int, what, hint string) error {
	noun := "problems"
	if n == 1 {
		noun = "problem"
	}
	msg := fmt.Sprintf("%d %s %s", n, noun, what)
	if hint != "" {
		msg += "\nhint: " + hint
	}
	return errors.New(msg)
}

func (c *cli) policyCheck(args []string) error {
	fs := c.policyFlags("policy check", "DIR")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	dir := pos[0]
	diags := policy.Check(dir)
	var set *policy.Set
	if len(diags) == 0 {
		// Check found nothing: the set loads. Load it for its size and hash.
		if set, err = policy.LoadDir(dir); err != nil {
			return err
		}
	}
	if c.json {
		out := struct {
			OK          bool             `json:"ok"`
			Dir         string           `json:"dir"`
			Policies    int              `json:"policies"`
			PolicySet   string           `json:"policy_set,omitempty"`
			Files       []string         `json:"files"`
			IDs         []string         `json:"ids,omitempty"`
			Diagnostics []diagnosticJSON `json:"diagnostics"`
		}{OK: set != nil, Dir: dir, Files: []string{}, Diagnostics: diagnosticsJSON(diags)}
		if set != nil {
			out.Policies, out.PolicySet, out.Files, out.IDs = set.Len(), set.Hash(), set.Files(), set.PolicyIDs()
		}
		if err := c.printJSON(out); err != nil {
			return err
		}
	} else {
		for _, d := range diags {
			fmt.Fprintln(c.stdout, d)
		}
	}
	if len(diags) > 0 {
		return problemsError(len(diags), "in the policy set "+dir, "")
	}
	if !c.json {
		fmt.Fprintf(c.stdout, "ok: %d policies, hash %s\n", set.Len(), set.Hash())
		if set.Len() == 0 {
			fmt.Fprintln(c.stderr, "warning: the set holds no policy: it denies everything")
		}
	}
	return nil
}

// invalidSetText lists every problem of a policy set that does not load,
// with a hint; other errors are returned as they are.
func invalidSetText(err error) error {
	var ie *policy.InvalidSetError
	if !errors.As(err, &ie) {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the policy set in %s is invalid:", ie.Dir)
	for _, d := range ie.Diagnostics {
		fmt.Fprintf(&b, "\n  %s", d)
	}
	fmt.Fprintf(&b, "\nhint: `mandate policy check %s` checks the set alone", ie.Dir)
	return errors.New(b.String())
}

func (c *cli) policyTest(args []string) error {
	fs := c.policyFlags("policy test", "FILE [--policies DIR]")
	dir := fs.String("policies", "", "test this policy directory instead of the one the file names")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	file := pos[0]
	if _, err := os.Stat(file); err != nil {
		return err
	}
	run := file
	if *dir != "" {
		// The file names its directory relative to itself: run a copy that
		// names the one given instead.
		if run, err = withPolicyDir(file, *dir); err != nil {
			return err
		}
		defer os.RemoveAll(filepath.Dir(run))
	}
	res, err := policy.RunTests(run)
	if err != nil {
		if errors.As(err, new(*policy.InvalidSetError)) {
			return invalidSetText(err)
		}
		return fmt.Errorf("%s\nhint: a test file is JSON: {\"policies\": DIR, \"defaults\": {…}, \"cases\": [{\"name\", \"request\", \"expect\"}]} (docs/policy.md)",
			strings.ReplaceAll(errorText(err), run, file))
	}
	res.File = file
	if c.json {
		if err := c.printJSON(testResultsJSON(res)); err != nil {
			return err
		}
	} else {
		fmt.Fprint(c.stdout, res.String())
	}
	if !res.OK() {
		return fmt.Errorf("%d of %d cases failed", res.Failed, len(res.Cases))
	}
	return nil
}

// withPolicyDir writes a copy of the test file with its policies field set
// to dir (made absolute) into a new temporary directory, and returns the
// copy's path.
func withPolicyDir(file, dir string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return "", fmt.Errorf("%s: %v\nhint: a test file is a JSON object (docs/policy.md)", file, err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	m["policies"], _ = json.Marshal(abs)
	out, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp("", "mandate-policy-test-")
	if err != nil {
		return "", err
	}
	run := filepath.Join(tmp, filepath.Base(file))
	if err := os.WriteFile(run, out, 0o600); err != nil {
		os.RemoveAll(tmp)
		return "", err
	}
	return run, nil
}

// decisionJSON is a policy.Decision as --json prints it.
type decisionJSON struct {
	Outcome       string   `json:"outcome"`
	NeedsApproval bool     `json:"needs_approval,omitempty"`
	MaxTTLMillis  int64    `json:"max_ttl_ms,omitempty"`
	Policies      []string `json:"policies"`
	Reasons       []string `json:"reasons"`
	Errors        []string `json:"errors,omitempty"`
	PolicySet     string   `json:"policy_set"`
}

func newDecisionJSON(d policy.Decision) decisionJSON {
	out := decisionJSON{Outcome: d.Outcome(), NeedsApproval: d.NeedsApproval, MaxTTLMillis: d.MaxTTL.Milliseconds(),
		Policies: d.Policies, Reasons: d.Reasons, Errors: d.Errors, PolicySet: d.SetHash}
	if out.Policies == nil {
		out.Policies = []string{}
	}
	if out.Reasons == nil {
		out.Reasons = []string{}
	}
	return out
}

func testResultsJSON(r *policy.Results) any {
	type caseJSON struct {
		Name     string       `json:"name"`
		Pass     bool         `json:"pass"`
		Expect   string       `json:"expect"`
		Got      decisionJSON `json:"got"`
		Problems []string     `json:"problems,omitempty"`
	}
	out := struct {
		File      string     `json:"file"`
		Dir       string     `json:"dir"`
		PolicySet string     `json:"policy_set"`
		Passed    int        `json:"passed"`
		Failed    int        `json:"failed"`
		Cases     []caseJSON `json:"cases"`
	}{File: r.File, Dir: r.Dir, PolicySet: r.SetHash, Passed: r.Passed, Failed: r.Failed, Cases: []caseJSON{}}
	for _, c := range r.Cases {
		out.Cases = append(out.Cases, caseJSON{Name: c.Name, Pass: c.Pass, Expect: c.Want, Got: newDecisionJSON(c.Got), Problems: c.Problems})
	}
	return out
}

// maxRequestSize bounds a request read by policy explain.
const maxRequestSize = 1 << 20

func (c *cli) policyExplain(args []string) error {
	fs := c.policyFlags("policy explain", "[--policies DIR] --request FILE|-")
	dir := fs.String("policies", "", "the policy directory (default: <data>/policies, the server's)")
	data := fs.String("data", DefaultDataDir, "the server's data directory, whose policies/ is the default --policies")
	reqFile := fs.String("request", "", "the request, as JSON (the form of test files' requests); - reads standard input")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if *reqFile == "" {
		return usageError{`policy explain: --request FILE|- is required, e.g. {"action": "MintRoot", "agent": {"id": "spiffe://example.org/agent/a", "owner": "alice@example.org"}}`}
	}
	if *dir == "" {
		*dir = filepath.Join(*data, "policies")
	}
	var b []byte
	var err error
	if *reqFile == "-" {
		b, err = io.ReadAll(io.LimitReader(c.stdin, maxRequestSize+1))
	} else {
		b, err = readLimited(*reqFile, maxRequestSize+1)
	}
	if err != nil {
		return err
	}
	if len(b) > maxRequestSize {
		return fmt.Errorf("the request is larger than %d bytes", maxRequestSize)
	}
	var req policy.Request
	if err := json.Unmarshal(bytes.TrimSpace(b), &req); err != nil {
		return fmt.Errorf("the request does not decode: %v\nhint: give a JSON object with the fields of a test case's request: action, subject, agent {id, name, owner, labels, ephemeral}, chain, task, server, tool, tool_labels, args, risk, time, … (docs/policy.md)", err)
	}
	if req.Action == "" {
		return fmt.Errorf("the request has no action\nhint: give one of %s", strings.Join(policy.Actions(), ", "))
	}
	if fi, err := os.Stat(*dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("no policy directory %s\nhint: give --policies DIR, or the server's --data DIR (its policies/ is the default)", *dir)
	}
	set, err := policy.LoadDir(*dir)
	if err != nil {
		return invalidSetText(err)
	}
	x := set.Explain(req)
	if !c.json {
		fmt.Fprint(c.stdout, x.String())
		return nil
	}
	type traceJSON struct {
		ID           string `json:"id"`
		Effect       string `json:"effect"`
		File         string `json:"file"`
		Line         int    `json:"line"`
		Col          int    `json:"col"`
		Result       string `json:"result"`
		Why          string `json:"why,omitempty"`
		Determining  bool   `json:"determining,omitempty"`
		Approval     bool   `json:"approval,omitempty"`
		MaxTTLMillis int64  `json:"max_ttl_ms,omitempty"`
	}
	out := struct {
		Decision decisionJSON `json:"decision"`
		Summary  string       `json:"summary"`
		Policies []traceJSON  `json:"policies"`
	}{Decision: newDecisionJSON(x.Decision), Summary: x.Summary, Policies: []traceJSON{}}
	for _, t := range x.Policies {
		out.Policies = append(out.Policies, traceJSON{ID: t.ID, Effect: t.Effect, File: t.File, Line: t.Line, Col: t.Col,
			Result: t.Result, Why: t.Why, Determining: t.Determining, Approval: t.Approval, MaxTTLMillis: t.MaxTTL.Milliseconds()})
	}
	return c.printJSON(out)
}

// readLimited reads at most n bytes of the file at path.
func readLimited(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}
