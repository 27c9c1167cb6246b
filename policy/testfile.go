package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
)

// requestJSON is the JSON form of a Request, in test files and for mandate
// policy explain (docs/policy.md, "Test files").
type requestJSON struct {
	Action     string           `json:"action"`
	Subject    string           `json:"subject,omitempty"`
	Agent      agentJSON        `json:"agent"`
	Chain      []string         `json:"chain,omitempty"`
	Task       string           `json:"task,omitempty"`
	Purpose    string           `json:"purpose,omitempty"`
	Server     string           `json:"server,omitempty"`
	Tool       string           `json:"tool,omitempty"`
	Resource   string           `json:"resource,omitempty"`
	ToolLabels []string         `json:"tool_labels,omitempty"`
	Args       map[string]any   `json:"args,omitempty"`
	Risk       int              `json:"risk,omitempty"`
	DPoP       bool             `json:"dpop,omitempty"`
	Labels     []string         `json:"labels,omitempty"`
	History    map[string]int64 `json:"history,omitempty"`
	Scopes     []string         `json:"scopes,omitempty"`
	TTLMillis  int64            `json:"ttl_ms,omitempty"`
	Time       string           `json:"time,omitempty"` // RFC 3339
}

type agentJSON struct {
	ID         string   `json:"id"`
	Name       string   `json:"name,omitempty"`
	Owner      string   `json:"owner,omitempty"`
	Labels     []string `json:"labels,omitempty"`
	Ephemeral  bool     `json:"ephemeral,omitempty"`
	Registered string   `json:"registered,omitempty"`
}

// MarshalJSON encodes r in the JSON form that test files use.
func (r Request) MarshalJSON() ([]byte, error) {
	j := requestJSON{
		Action: r.Action, Subject: r.Subject, Chain: r.Chain, Task: r.Task, Purpose: r.Purpose,
		Agent:  agentJSON(r.Agent),
		Server: r.Server, Tool: r.Tool, Resource: r.Resource, ToolLabels: r.ToolLabels, Args: r.Args,
		Risk: r.Risk, DPoP: r.DPoP, Labels: r.Labels, History: r.History, Scopes: r.Scopes,
		TTLMillis: r.TTL.Milliseconds(),
	}
	if !r.Time.IsZero() {
		j.Time = r.Time.Format(time.RFC3339Nano)
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes the JSON form of a request. Unknown fields are an
// error, so that a misspelt field does not silently test something else;
// numbers in args decode as json.Number.
func (r *Request) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	var j requestJSON
	if err := dec.Decode(&j); err != nil {
		return err
	}
	var t time.Time
	if j.Time != "" {
		var err error
		if t, err = time.Parse(time.RFC3339Nano, j.Time); err != nil {
			return fmt.Errorf("time %q: give an RFC 3339 time, e.g. 2026-03-02T09:30:00Z", j.Time)
		}
	}
	*r = Request{
		Action: j.Action, Subject: j.Subject, Agent: AgentInfo(j.Agent), Chain: j.Chain, Task: j.Task, Purpose: j.Purpose,
		Server: j.Server, Tool: j.Tool, Resource: j.Resource, ToolLabels: j.ToolLabels, Args: j.Args,
		Risk: j.Risk, DPoP: j.DPoP, Labels: j.Labels, History: j.History, Scopes: j.Scopes,
		TTL: time.Duration(j.TTLMillis) * time.Millisecond, Time: t,
	}
	return nil
}

// testFile is the format of a policy test file (docs/policy.md).
type testFile struct {
	Policies string                     `json:"policies"` // the policy directory, relative to the file; default "."
	Timezone string                     `json:"timezone"` // for context.time; default UTC
	Defaults map[string]json.RawMessage `json:"defaults"` // request fields every case starts from
	Cases    []testCase                 `json:"cases"`
}

type testCase struct {
	Name     string                     `json:"name"`
	Request  map[string]json.RawMessage `json:"request"`
	Expect   string                     `json:"expect"`             // allow, deny or approval
	Policies *[]string                  `json:"policies,omitempty"` // the determining policies, in any order
	MaxTTLMS *int64                     `json:"max_ttl_ms,omitempty"`
}

// Results are the outcome of a test file.
type Results struct {
	File    string
	Dir     string // the policy directory tested
	SetHash string
	Cases   []CaseResult
	Passed  int
	Failed  int
}

// OK reports whether every case passed.
func (r *Results) OK() bool { return r.Failed == 0 }

// CaseResult is the outcome of one test case.
type CaseResult struct {
	Name     string
	Want     string // allow, deny or approval
	Got      Decision
	Pass     bool
	Problems []string // how the decision differs from what was expected
}

// String prints the results as mandate policy test does: a line per case,
// the differences under each failing case, and a total.
func (r *Results) String() string {
	var b strings.Builder
	for _, c := range r.Cases {
		if c.Pass {
			fmt.Fprintf(&b, "ok   %s\n", c.Name)
			continue
		}
		fmt.Fprintf(&b, "FAIL %s\n", c.Name)
		for _, p := range c.Problems {
			fmt.Fprintf(&b, "     %s\n", p)
		}
		for _, reason := range c.Got.Reasons {
			fmt.Fprintf(&b, "     reason: %s\n", reason)
		}
	}
	fmt.Fprintf(&b, "%d passed, %d failed (%s, policy set %s)\n", r.Passed, r.Failed, r.File, r.SetHash)
	return b.String()
}

// RunTests runs the test cases in file (JSON; docs/policy.md, "Test
// files") against the policy directory it names. The error is for a file
// or policy set that cannot be used (EINVALID; an invalid set wraps an
// [*InvalidSetError]); failing cases are in the Results.
func RunTests(file string) (*Results, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, mandate.Errorf(mandate.EINVALID, "policy test: %v", unwrapPath(err))
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var tf testFile
	if err := dec.Decode(&tf); err != nil {
		return nil, mandate.Errorf(mandate.EINVALID, "policy test: %s: %v", file, err)
	}
	loc := time.UTC
	if tf.Timezone != "" {
		if loc, err = time.LoadLocation(tf.Timezone); err != nil {
			return nil, mandate.Errorf(mandate.EINVALID, "policy test: %s: timezone %q: %v", file, tf.Timezone, err)
		}
	}
	if tf.Policies == "" {
		tf.Policies = "."
	}
	dir := tf.Policies
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(filepath.Dir(file), dir)
	}
	set, err := LoadDir(dir)
	if err != nil {
		return nil, err
	}
	res := &Results{File: file, Dir: dir, SetHash: set.Hash()}
	for i, c := range tf.Cases {
		name := c.Name
		if name == "" {
			name = fmt.Sprintf("case %d", i+1)
		}
		cr := CaseResult{Name: name, Want: c.Expect}
		req, err := caseRequest(tf.Defaults, c.Request)
		switch {
		case err != nil:
			cr.Problems = append(cr.Problems, "request: "+err.Error())
		case c.Expect != OutcomeAllow && c.Expect != OutcomeDeny && c.Expect != OutcomeApproval:
			cr.Problems = append(cr.Problems, fmt.Sprintf("expect is %q: use allow, deny or approval", c.Expect))
		default:
			if req.Time.IsZero() {
				req.Time = time.Now()
			}
			req.Time = req.Time.In(loc)
			cr.Got = set.Decide(req)
			cr.Problems = compareCase(c, cr.Got)
		}
		cr.Pass = len(cr.Problems) == 0
		if cr.Pass {
			res.Passed++
		} else {
			res.Failed++
		}
		res.Cases = append(res.Cases, cr)
	}
	return res, nil
}

func caseRequest(defaults, fields map[string]json.RawMessage) (Request, error) {
	m := make(map[string]json.RawMessage, len(defaults)+len(fields))
	for k, v := range defaults {
		m[k] = v
	}
	for k, v := range fields {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		return Request{}, err
	}
	var r Request
	err = r.UnmarshalJSON(b)
	return r, err
}

func compareCase(c testCase, got Decision) []string {
	var probs []string
	if got.Outcome() != c.Expect {
		probs = append(probs, fmt.Sprintf("got %s, want %s", got.Outcome(), c.Expect))
	}
	if c.Policies != nil {
		want := slices.Sorted(slices.Values(*c.Policies))
		have := slices.Sorted(slices.Values(got.Policies))
		if !slices.Equal(want, have) {
			probs = append(probs, fmt.Sprintf("determining policies %v, want %v", have, want))
		}
	}
	if c.MaxTTLMS != nil && got.MaxTTL.Milliseconds() != *c.MaxTTLMS {
		probs = append(probs, fmt.Sprintf("max_ttl_ms %d, want %d", got.MaxTTL.Milliseconds(), *c.MaxTTLMS))
	}
	return probs
}
