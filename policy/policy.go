// Package policy decides, with Cedar policies, whether an agent may do what
// it asks: mint a root mandate, delegate, call a tool, list tools, read a
// resource, get a prompt or send an HTTP request. It is the policy decision
// point that the issuer and the gateway call; it is not the enforcement
// point (the caller acts on the [Decision]) and it keeps no state between
// decisions (the monitor's counters and risk come in with the [Request]).
//
// # Policies
//
// A policy set is every *.cedar file of one directory, validated against the
// schema in schema.cedarschema (see [Schema]) when it is loaded. The
// [Engine] holds the set in force, swaps in a new one atomically when the
// directory changes, and refuses a set that does not parse or validate,
// keeping the old one. docs/policy.md documents the schema, how a [Request]
// becomes Cedar entities and context, the annotations Mandate reads and the
// default set.
//
// # Decisions
//
// Every decision is default deny: nothing is allowed unless a permit policy
// matches and no forbid policy does. A policy that fails to evaluate denies
// (policy error → deny). A permit annotated @approval("required") among
// those that allowed makes the allow conditional on a person's approval
// ([Decision.NeedsApproval]). Every [Decision] names the policies that
// determined it and the hash of the policy set, for the audit log.
//
// # Tools
//
// [Check] reports problems in a directory with file:line:col, [RunTests]
// runs a file of test cases against a directory, and [Set.Explain] says, for
// one request, which policies matched and why the decision came out as it
// did: the commands mandate policy check, test and explain.
package policy

import (
	"slices"
	"time"
	"unicode/utf8"
)

// Actions, as Cedar names them: Action::"CallTool".
const (
	ActionMintRoot     = "MintRoot"
	ActionDelegate     = "Delegate"
	ActionCallTool     = "CallTool"
	ActionListTools    = "ListTools"
	ActionReadResource = "ReadResource"
	ActionGetPrompt    = "GetPrompt"
	ActionHTTPRequest  = "HttpRequest"
)

var actions = [...]string{ActionMintRoot, ActionDelegate, ActionCallTool, ActionListTools, ActionReadResource, ActionGetPrompt, ActionHTTPRequest}

// Actions lists every action of the schema.
func Actions() []string { return slices.Clone(actions[:]) }

var historyCounters = [...]string{"args_bytes", "calls", "denials", "reads_sensitive", "result_bytes", "sinks", "spawns", "writes"}

// HistoryCounters lists the task counters that policies see as
// context.history; a counter missing from [Request.History] is 0, and keys
// not listed are ignored (the schema declares only these).
func HistoryCounters() []string { return slices.Clone(historyCounters[:]) }

// Limits on a request's tool arguments ([Request.Args]). Arguments beyond
// them are not evaluated: the decision is a deny saying which limit.
const (
	MaxArgsDepth    = 16       // nesting of objects and arrays below Args itself
	MaxArgsElements = 1000     // values in all, at every level
	MaxArgsBytes    = 64 << 10 // bytes of all strings and keys together
)

// Request is one question to policy: may Agent do Action (on Tool, Server or
// Resource) within Task, in this context? The caller fills what it knows;
// zero fields become empty strings, sets and counters (docs/policy.md lists
// how each field maps to Cedar).
type Request struct {
	Action  string // one of the Action* constants
	Subject string // the accountable human: user:<email>
	Agent   AgentInfo
	// Chain is the delegation chain, the acting agent first (as in
	// mandate.Event.Chain); for Delegate, the chain of the mandate being
	// asked for. Empty means [Agent.ID] alone.
	Chain   []string
	Task    string // task ID (for MintRoot, the ID the new task would get)
	Purpose string // the task's purpose

	Server string // MCP server or HTTP upstream, as named in scopes
	Tool   string // CallTool: the tool's name
	// Resource names what ReadResource, GetPrompt and HttpRequest act on:
	// the resource's URI, the prompt's name, or "METHOD /path".
	Resource string
	// ToolLabels are the labels of the tool, resource, prompt or route
	// acted on, e.g. "read_only", "destructive", "external".
	ToolLabels []string
	// Args are the tool's arguments as decoded from JSON: strings, bools,
	// numbers (float64, json.Number or Go integers), nil, []any and
	// map[string]any. They are untrusted: see MaxArgs*.
	Args map[string]any

	Risk    int              // 0-100, from the monitor
	DPoP    bool             // the request carried a valid DPoP proof
	Labels  []string         // data labels the task has touched
	History map[string]int64 // task counters; see HistoryCounters
	Scopes  []string         // MintRoot, Delegate: the scopes asked for
	TTL     time.Duration    // MintRoot, Delegate: the lifetime asked for
	Time    time.Time        // when; zero means now
}

// AgentInfo describes the acting agent (for Delegate, the agent that would
// receive the mandate).
type AgentInfo struct {
	ID         string   // SPIFFE ID
	Name       string   // registered name (for an ephemeral agent, its registered ancestor's)
	Owner      string   // the owner's email address
	Labels     []string // labels given at registration
	Ephemeral  bool     // an ephemeral sub-agent
	Registered string   // the registered agent it descends from (ID itself if registered)
}

// Decision is the outcome of policy for one request.
//
// Allow with NeedsApproval means allow only after a person approves: a
// caller that cannot wait for approval MUST treat it as a deny. Use
// [Decision.Outcome] to tell the three apart.
type Decision struct {
	Allow bool
	// NeedsApproval is set when some permit that allowed the request is
	// annotated @approval("required").
	NeedsApproval bool
	// MaxTTL, when not zero, is the smallest @max_ttl_ms of the permits that
	// allowed the request: the longest lifetime a mandate may be given.
	MaxTTL time.Duration
	// Policies are the IDs of the policies that determined the decision:
	// the forbids that matched for a deny, the permits that matched for an
	// allow, none for a default deny. An ID is the policy's @id annotation,
	// or file#n for the n-th policy of the file, counting from 1.
	Policies []string
	// Reasons say why, one line each, for people and the audit log.
	Reasons []string
	// SetHash is the SHA-256 (hex) of the policy set that decided.
	SetHash string
	// Errors are evaluation errors (policy id: message); any error denies.
	Errors []string
}

// Outcomes, as [Decision.Outcome] and test files spell them.
const (
	OutcomeAllow    = "allow"
	OutcomeDeny     = "deny"
	OutcomeApproval = "approval"
)

// Outcome is "allow", "deny" or "approval" (allow after approval).
func (d Decision) Outcome() string {
	switch {
	case !d.Allow:
		return OutcomeDeny
	case d.NeedsApproval:
		return OutcomeApproval
	default:
		return OutcomeAllow
	}
}

// Bounds on what AuditDetails copies into an event, which must stay under
// mandate.MaxEventSize (64 KiB): at most 256 policy IDs of 128 bytes, and
// 32 lines of 200 bytes of each other list.
const (
	maxAuditIDs   = 256
	maxAuditID    = 128
	maxAuditLines = 32
	maxAuditLine  = 200
)

// AuditDetails returns the decision as the details of its audit event
// (mandate.Event.Details, type "decision"): outcome, policy_set, policies
// and reasons, and max_ttl_ms and errors when set. Long lists are cut (256
// policy IDs, 32 reasons or errors), and policies_total then says how many
// policies there were.
func (d Decision) AuditDetails() map[string]any {
	m := map[string]any{
		"outcome":    d.Outcome(),
		"policy_set": d.SetHash,
		"policies":   clip(d.Policies, maxAuditIDs, maxAuditID),
		"reasons":    clip(d.Reasons, maxAuditLines, maxAuditLine),
	}
	if len(d.Policies) > maxAuditIDs {
		m["policies_total"] = int64(len(d.Policies))
	}
	if d.MaxTTL > 0 {
		m["max_ttl_ms"] = d.MaxTTL.Milliseconds()
	}
	if len(d.Errors) > 0 {
		m["errors"] = clip(d.Errors, maxAuditLines, maxAuditLine)
	}
	return m
}

// AuditDetails returns the load as the details of its audit event
// (mandate.Event.Details, type "policy.loaded"): outcome ("ok" or
// "refused"), policy_set (the hash of the files read), previous, files,
// policies, defaults_written, and for a refusal the problems (the first
// 32).
func (r LoadResult) AuditDetails() map[string]any {
	m := map[string]any{
		"outcome":    "ok",
		"policy_set": r.Hash,
		"files":      clip(r.Files, maxAuditIDs, maxAuditID),
		"policies":   int64(r.Policies),
	}
	if r.Previous != "" {
		m["previous"] = r.Previous
	}
	if len(r.Wrote) > 0 {
		m["defaults_written"] = clip(r.Wrote, maxAuditLines, maxAuditLine)
	}
	if r.Err != nil {
		m["outcome"] = "refused"
		problems := make([]string, len(r.Diagnostics))
		for i, d := range r.Diagnostics {
			problems[i] = d.String()
		}
		if len(problems) == 0 {
			problems = []string{r.Err.Error()}
		}
		m["problems"] = clip(problems, maxAuditLines, maxAuditLine)
	}
	return m
}

// clip bounds a list for an audit event: at most n entries of at most width
// bytes, cut on a rune boundary.
func clip(ss []string, n, width int) []string {
	if len(ss) > n {
		ss = ss[:n]
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		if len(s) > width {
			cut := width
			for cut > 0 && !utf8.RuneStart(s[cut]) {
				cut--
			}
			s = s[:cut] + "…"
		}
		out[i] = s
	}
	return out
}
