package mandate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/mandatehq/mandate/internal/secret"
)

// EventVersion is the version of the event schema (docs/events.md).
const EventVersion = 1

// MaxEventSize bounds an encoded event: a C2SP tlog-tiles entry bundle
// stores each entry's length in two bytes.
const MaxEventSize = 65535

// Event types. docs/events.md documents each with its details.
const (
	EventAgentRegistered   = "agent.registered"
	EventAgentDisabled     = "agent.disabled"
	EventAgentEnabled      = "agent.enabled"
	EventKeyRotated        = "key.rotated"
	EventMandateIssued     = "mandate.issued"
	EventMandateDelegated  = "mandate.delegated"
	EventMandateRevoked    = "mandate.revoked"
	EventDecision          = "decision"
	EventToolCall          = "tool.call"
	EventToolResult        = "tool.result"
	EventApprovalRequested = "approval.requested"
	EventApprovalGranted   = "approval.granted"
	EventApprovalDenied    = "approval.denied"
	EventAlert             = "alert"
	EventPolicyLoaded      = "policy.loaded"
	EventApproverAdded     = "approver.added"
	EventApproverDisabled  = "approver.disabled"
	// The gateway's tool integrity: a definition pinned at first sight, a
	// pinned definition that changed (or one flagged by the scan), and an
	// operator's approval of the definition shown.
	EventToolPinned   = "tool.pinned"
	EventToolChanged  = "tool.changed"
	EventToolApproved = "tool.approved"
)

// Event is one record of the audit log. Its canonical encoding (see
// MarshalEvent) is the log entry: the same event always encodes, and so
// hashes, the same.
type Event struct {
	V        int      `json:"v"`
	Time     int64    `json:"time"` // Unix nanoseconds
	Type     string   `json:"type"`
	Task     string   `json:"task,omitempty"`
	Mandate  string   `json:"mandate,omitempty"`
	Parent   string   `json:"parent,omitempty"`
	Agent    string   `json:"agent,omitempty"`  // the agent that acted, or that the event is about
	Chain    []string `json:"chain,omitempty"`  // the actor chain, current actor first
	Subject  string   `json:"sub,omitempty"`    // the accountable human
	Action   string   `json:"action,omitempty"` // what was asked, e.g. "mint", "tools/call"
	Resource string   `json:"resource,omitempty"`
	Outcome  string   `json:"outcome,omitempty"` // "ok", "deny", "error"
	Reason   string   `json:"reason,omitempty"`
	By       string   `json:"by,omitempty"` // who decided or asked, when not the agent (an admin, an approver)
	// Details are type-specific. Values are strings, json.Number, bools,
	// lists and maps of those; keys encode sorted.
	Details map[string]any `json:"details,omitempty"`
}

// Outcomes.
const (
	OutcomeOK    = "ok"
	OutcomeDeny  = "deny"
	OutcomeError = "error"
)

var eventTypeRE = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)

// MarshalEvent returns the canonical encoding of e: compact JSON, fields in
// the order of the Event struct, map keys sorted, no HTML escaping.
func MarshalEvent(e *Event) ([]byte, error) {
	if e.V != EventVersion {
		return nil, fmt.Errorf("event: v is %d, want %d", e.V, EventVersion)
	}
	if !eventTypeRE.MatchString(e.Type) || len(e.Type) > 64 {
		return nil, fmt.Errorf("event: invalid type %q", e.Type)
	}
	if err := validUTF8(e); err != nil {
		return nil, err
	}
	b, err := appendEvent(make([]byte, 0, 512), e)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxEventSize {
		return nil, fmt.Errorf("event: %d bytes encoded, more than %d", len(b), MaxEventSize)
	}
	return b, nil
}

// ErrNonCanonical means an entry decodes but is not the canonical encoding
// of what it decodes to: someone wrote it other than MarshalEvent does.
var ErrNonCanonical = errors.New("event: not in canonical form")

// ParseEvent decodes a log entry, refusing unknown fields and any encoding
// that is not canonical, so that one event has exactly one entry. An entry
// in the canonical form is decoded by hand (decodeFast), anything else
// by encoding/json, which says what is wrong with it.
func ParseEvent(b []byte) (*Event, error) {
	if len(b) > MaxEventSize {
		return nil, fmt.Errorf("event: %d bytes, more than %d", len(b), MaxEventSize)
	}
	if e, ok := decodeFast(b); ok {
		if again, err := MarshalEvent(e); err == nil && bytes.Equal(again, b) {
			return e, nil
		}
	}
	return parseEventJSON(b)
}

// parseEventJSON is ParseEvent by encoding/json.
func parseEventJSON(b []byte) (*Event, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	var e Event
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("event: data after the object")
	}
	again, err := MarshalEvent(&e)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, b) {
		return nil, ErrNonCanonical
	}
	return &e, nil
}

// validUTF8 refuses an event holding a string that is not valid UTF-8:
// JSON would carry it as U+FFFD, which decodes to another string, so the
// entry could not be parsed back to itself.
func validUTF8(e *Event) error {
	for _, s := range []string{e.Type, e.Task, e.Mandate, e.Parent, e.Agent, e.Subject, e.Action, e.Resource, e.Outcome, e.Reason, e.By} {
		if !utf8.ValidString(s) {
			return fmt.Errorf("event: a field is not valid UTF-8")
		}
	}
	for _, s := range e.Chain {
		if !utf8.ValidString(s) {
			return fmt.Errorf("event: the chain is not valid UTF-8")
		}
	}
	return validDetailUTF8(e.Details, 0)
}

func validDetailUTF8(v any, depth int) error {
	if depth > maxDetailDepth+1 {
		return nil // appendValue refuses it
	}
	switch v := v.(type) {
	case string:
		if !utf8.ValidString(v) {
			return fmt.Errorf("event: details hold a string that is not valid UTF-8")
		}
	case []string:
		for _, s := range v {
			if !utf8.ValidString(s) {
				return fmt.Errorf("event: details hold a string that is not valid UTF-8")
			}
		}
	case []any:
		for _, x := range v {
			if err := validDetailUTF8(x, depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, x := range v {
			if !utf8.ValidString(k) {
				return fmt.Errorf("event: a details key is not valid UTF-8")
			}
			if err := validDetailUTF8(x, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// MaxReason bounds an event's reason as Mandate writes it: reasons may
// quote what a client sent.
const MaxReason = 512

// ClipReason makes s fit an event's reason: one line (CR and LF become
// spaces, so that a printed log cannot be forged line by line), at most
// MaxReason bytes, cut on a rune boundary, "…" marking a cut.
func ClipReason(s string) string {
	if strings.ContainsAny(s, "\r\n") {
		s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	}
	if len(s) <= MaxReason {
		return s
	}
	return strings.ToValidUTF8(s[:MaxReason], "") + "…"
}

// RefuseSecret refuses (EINVALID) the text a caller gave for field if it
// holds what a secret detector finds (internal/secret), naming the
// detectors and never what they found; nil otherwise. It is for what
// Mandate writes into audit events and shows to people as the caller
// wrote it (a scope asked for, a task's purpose, an approver's note, a
// revocation's reason): a credential never belongs there, and masking it
// would record other words than the caller's. what says what the field
// is for.
func RefuseSecret(field, value, what string) error {
	found := secret.Found(value)
	if found == nil {
		return nil
	}
	return Errorf(EINVALID, "%s holds what looks like a secret (%s): %s, never a place for a credential; "+
		"hint: remove it, and revoke the credential if it is real", field, strings.Join(found, ", "), what)
}

// DetailInt reads a number of an event's details: a Go integer in the
// process that made the event, a json.Number (or a float64) once it is
// read back from the log.
func DetailInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case float64:
		return int64(x), true
	case interface{ Int64() (int64, error) }:
		n, err := x.Int64()
		return n, err == nil
	}
	return 0, false
}

// DetailStrings reads a list of strings of an event's details: []string in
// the process that made the event, []any once it is read back from the
// log (elements that are not strings are left out).
func DetailStrings(v any) []string {
	switch x := v.(type) {
	case []string:
		return x
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// PeekEvent reads an entry's type and task without decoding the rest:
// from the canonical encoding's first fields ({"v":…,"time":…,"type":…,
// then "task" if the event has one). ok is false if the entry does not
// begin so, or a string in them is escaped: the caller parses it whole
// (ParseEvent), which is also what says whether it is an event at all.
// It lets a reader that wants a few types or tasks of many entries skip
// the others for a fraction of a parse.
func PeekEvent(b []byte) (typ, task string, ok bool) {
	rest, ok := bytes.CutPrefix(b, []byte(`{"v":`))
	if !ok {
		return "", "", false
	}
	if rest, ok = skipDigits(rest); !ok {
		return "", "", false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"time":`)); !ok {
		return "", "", false
	}
	rest, _ = bytes.CutPrefix(rest, []byte{'-'})
	if rest, ok = skipDigits(rest); !ok {
		return "", "", false
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"type":`)); !ok {
		return "", "", false
	}
	if typ, rest, ok = plainString(rest); !ok {
		return "", "", false
	}
	if rest, found := bytes.CutPrefix(rest, []byte(`,"task":`)); found {
		if task, _, ok = plainString(rest); !ok {
			return "", "", false
		}
	}
	return typ, task, true
}

func skipDigits(b []byte) ([]byte, bool) {
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	return b[i:], i > 0
}

// plainString reads a JSON string that holds no escape, and what follows.
func plainString(b []byte) (s string, rest []byte, ok bool) {
	if len(b) == 0 || b[0] != '"' {
		return "", nil, false
	}
	end := bytes.IndexAny(b[1:], `"\`)
	if end < 0 || b[1+end] != '"' {
		return "", nil, false
	}
	return string(b[1 : 1+end]), b[2+end:], true
}

// PeekOutcome reads an entry's outcome without decoding it: in the
// canonical encoding the outcome comes before the details, the only field
// that nests, and no string holds an unescaped quote, so the first
// `,"outcome":` before the first `,"details":` is the event's own. ok is
// false if the outcome is escaped (the caller parses the entry whole).
func PeekOutcome(b []byte) (outcome string, ok bool) {
	if i := bytes.Index(b, []byte(`,"details":`)); i >= 0 {
		b = b[:i]
	}
	i := bytes.Index(b, []byte(`,"outcome":`))
	if i < 0 {
		return "", true
	}
	outcome, _, ok = plainString(b[i+len(`,"outcome":`):])
	return outcome, ok
}
