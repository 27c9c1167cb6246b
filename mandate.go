// Package mandate holds the domain of Mandate, the security control plane for
// autonomous AI agents: agents and their identities, mandates (the short-lived,
// key-bound credentials agents act under), scopes, and the application error
// type. It also declares the small interfaces that the adapters (sqlite,
// httpapi, issuer, ...) implement or consume.
//
// This package depends on nothing else in the module; everything else depends
// on it. It does no I/O.
//
// # Vocabulary
//
//   - An agent is a registered non-human identity named by a SPIFFE ID,
//     spiffe://<trust-domain>/agent/<name>, owned by a human.
//   - A mandate is a signed JWT naming the accountable human (sub), the agent
//     holding it (client_id) and the chain of actors (act); see [Claims].
//   - A scope is a capability pattern such as mcp:github:create_issue; see
//     [ParseScope] and [Scope.Covers].
package mandate

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// AgentStatus says whether an agent may obtain new mandates.
type AgentStatus string

const (
	AgentActive   AgentStatus = "active"
	AgentDisabled AgentStatus = "disabled"
)

// Agent is a registered non-human identity.
type Agent struct {
	ID        string      `json:"id"`    // spiffe://<trust-domain>/agent/<name>
	Name      string      `json:"name"`  // <name>, unique within the trust domain
	Owner     string      `json:"owner"` // the accountable human, an email address
	Ceiling   ScopeSet    `json:"ceiling"`
	PublicKey []byte      `json:"-"` // Ed25519 public key, 32 bytes
	KeyID     string      `json:"key_thumbprint"`
	Status    AgentStatus `json:"status"`
	// MaxDepth bounds the depth of every delegation chain this agent is
	// part of (the root agent counts as depth 1); 0 means the issuer's
	// default. The smallest limit of the registered agents in a chain holds.
	MaxDepth int `json:"max_depth,omitempty"`
	// Approval lists the scopes whose delegation needs a person's approval
	// when this agent, or any agent below it in a chain, delegates them.
	Approval ScopeSet `json:"approval,omitempty"`
	// Approvers are the people (email addresses) who may decide those
	// approvals; the owner alone if empty.
	Approvers []string `json:"approvers,omitempty"`
	// Labels are what policies know the agent by (principal.labels in
	// Cedar, docs/policy.md): "team:payments", "batch", "internal". They
	// grant nothing by themselves; only policies give them a meaning. See
	// ValidateAgentLabels for their grammar.
	Labels    []string  `json:"labels,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// MaxAgentDepth bounds Agent.MaxDepth.
const MaxAgentDepth = 32

// MaxApprovers bounds Agent.Approvers.
const MaxApprovers = 16

// Bounds on Agent.Labels.
const (
	MaxAgentLabels   = 32 // labels on one agent
	MaxAgentLabelLen = 64 // bytes in one label
)

// agentLabelRE is the grammar of agent labels: lower-case letters, digits
// and ':', '.', '_', '-', so that a label reads the same in a policy, a
// command line and the space-separated column that stores it.
var agentLabelRE = regexp.MustCompile(`^[a-z0-9:._-]{1,64}$`)

// ValidateAgentLabels reports whether labels can label an agent: at most
// MaxAgentLabels, each 1-64 characters of [a-z0-9:._-], none twice.
func ValidateAgentLabels(labels []string) error {
	if len(labels) > MaxAgentLabels {
		return Errorf(EINVALID, "%d labels: an agent may have at most %d", len(labels), MaxAgentLabels)
	}
	for i, l := range labels {
		if !agentLabelRE.MatchString(l) {
			return Errorf(EINVALID, "invalid label %q: use 1-%d lower-case letters, digits, ':', '.', '_' or '-'", l, MaxAgentLabelLen)
		}
		for _, prev := range labels[:i] {
			if prev == l {
				return Errorf(EINVALID, "label %q is given twice", l)
			}
		}
	}
	return nil
}

// MayApprove reports whether the person with this email may decide the
// approvals this agent asks for.
func (a *Agent) MayApprove(email string) bool {
	if len(a.Approvers) == 0 {
		return email == a.Owner
	}
	for _, x := range a.Approvers {
		if x == email {
			return true
		}
	}
	return false
}

// EphemeralSeparator separates an ephemeral agent's ID from its parent's:
// spiffe://<td>/agent/<name>/sub/<short id>[/sub/<short id>...].
const EphemeralSeparator = "/sub/"

// IsEphemeral reports whether id names an ephemeral agent.
func IsEphemeral(id string) bool { return strings.Contains(id, EphemeralSeparator) }

// RegisteredAncestor returns the registered agent an ephemeral agent
// descends from (id itself for a registered agent).
func RegisteredAncestor(id string) string {
	if i := strings.Index(id, EphemeralSeparator); i >= 0 {
		return id[:i]
	}
	return id
}

// Subject is the accountable human as a mandate's sub claim: user:<email>.
func (a *Agent) Subject() string { return "user:" + a.Owner }

// agentNameRE is the grammar of agent names: a lower-case DNS-label-like word
// so that the name is a valid SPIFFE path segment and a readable CLI argument.
var agentNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$`)

// ValidateAgentName reports whether name can name an agent.
func ValidateAgentName(name string) error {
	if !agentNameRE.MatchString(name) {
		return Errorf(EINVALID, "invalid agent name %q: use 1-64 lower-case letters, digits, '.', '_' or '-', starting and ending with a letter or digit", name)
	}
	if reservedAgentNames[name] {
		return Errorf(EINVALID, "agent name %q is reserved: choose another", name)
	}
	return nil
}

// reservedAgentNames are names the API uses as paths beside agents'
// (GET /v1/agents/ephemeral).
var reservedAgentNames = map[string]bool{"ephemeral": true}

// trustDomainRE follows the SPIFFE ID specification, section 2.1: lower-case
// letters, digits, dots, dashes and underscores.
var trustDomainRE = regexp.MustCompile(`^[a-z0-9._-]{1,255}$`)

// ValidateTrustDomain reports whether td is a valid SPIFFE trust domain name.
func ValidateTrustDomain(td string) error {
	if !trustDomainRE.MatchString(td) || strings.Trim(td, ".") != td {
		return Errorf(EINVALID, "invalid trust domain %q: use lower-case letters, digits, '.', '-' and '_'", td)
	}
	return nil
}

// AgentID returns the SPIFFE ID of the agent called name in trustDomain.
func AgentID(trustDomain, name string) string {
	return "spiffe://" + trustDomain + "/agent/" + name
}

// emailRE is deliberately plain: one @, no spaces or control characters. The
// owner is a label for accountability, not a mailbox Mandate writes to.
var emailRE = regexp.MustCompile(`^[^@\s\x00-\x1f\x7f]{1,64}@[A-Za-z0-9.-]{1,255}$`)

// ValidateOwner reports whether owner is usable as an accountable human.
func ValidateOwner(owner string) error {
	if !emailRE.MatchString(owner) {
		return Errorf(EINVALID, "invalid owner %q: give the accountable human's email address", owner)
	}
	return nil
}

func (s AgentStatus) String() string { return string(s) }

// Validate checks the fields a caller supplies when registering an agent.
func (a *Agent) Validate() error {
	if err := ValidateAgentName(a.Name); err != nil {
		return err
	}
	if err := ValidateOwner(a.Owner); err != nil {
		return err
	}
	if len(a.Ceiling) == 0 {
		return Errorf(EINVALID, "agent %q has an empty ceiling: give at least one scope it may ever hold", a.Name)
	}
	if a.MaxDepth < 0 || a.MaxDepth > MaxAgentDepth {
		return Errorf(EINVALID, "agent %q: max depth %d outside [0, %d] (0 means the issuer's default)", a.Name, a.MaxDepth, MaxAgentDepth)
	}
	if len(a.Approvers) > MaxApprovers {
		return Errorf(EINVALID, "agent %q: at most %d approvers", a.Name, MaxApprovers)
	}
	for _, ap := range a.Approvers {
		if err := ValidateOwner(ap); err != nil {
			return Errorf(EINVALID, "agent %q: invalid approver %q: give a person's email address", a.Name, ap)
		}
	}
	if err := ValidateAgentLabels(a.Labels); err != nil {
		return Errorf(EINVALID, "agent %q: %s", a.Name, ErrorMessage(err))
	}
	if len(a.PublicKey) != 32 {
		return Errorf(EINVALID, "agent %q needs an Ed25519 public key (32 bytes), got %d bytes", a.Name, len(a.PublicKey))
	}
	return nil
}

var _ fmt.Stringer = AgentStatus("")
