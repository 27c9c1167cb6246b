package gateway

import (
	"fmt"
	"slices"
	"strings"
)

// InternalRule says when a call of a tool labelled external_send stays
// inside the organisation (docs/gateway.md, "Internal destinations"): when
// every address in its Recipients arguments is in one of Domains, and it
// has no argument but those and Content. Such a call is labelled
// internal_send instead of external_send, for policy, the monitor and the
// task's counters: internal mail is not exfiltration.
//
// The rule is the gateway's own word, as labels are; the agent chooses
// only the arguments' values, and a value the rule cannot read as plainly
// internal leaves the call external. So an address is read strictly: a
// plain local@domain, without a display name, comment, quotes, route or
// any character a mail system might read as another destination (%, !,
// :, <, >, spaces, line breaks); a list is a JSON array of such strings,
// or one string of them separated by commas; the domain is ASCII, compared
// without case, exactly or (for "*.acme.example") as a subdomain. An
// argument the rule does not name (bcc, reply_to, a webhook) makes the
// call external, so a destination the operator did not think of cannot
// ride along.
type InternalRule struct {
	// Recipients are the (top-level) arguments that name where the call
	// sends: at least one must be present.
	Recipients []string
	// Domains are the internal domains: "acme.example" matches that
	// domain only; "*.acme.example" its subdomains (not itself).
	Domains []string
	// Content are the call's other arguments: what it sends, not where.
	Content []string
}

// Labels of a send, as the gateway gives them.
const (
	labelExternalSend = "external_send"
	labelInternalSend = "internal_send"
)

// Validate checks the rule of tool, a tool labelled labels: it must name
// recipients and valid domains, and the tool must be a send out.
func (r InternalRule) Validate(tool string, labels []string) error {
	switch {
	case !slices.Contains(labels, labelExternalSend):
		return fmt.Errorf("an internal rule for tool %s, which is not labelled %s: the rule only ever makes a send internal", tool, labelExternalSend)
	case len(r.Recipients) == 0:
		return fmt.Errorf("the internal rule of tool %s names no recipients argument", tool)
	case len(r.Domains) == 0:
		return fmt.Errorf("the internal rule of tool %s names no domain", tool)
	}
	seen := map[string]bool{}
	for _, a := range append(slices.Clone(r.Recipients), r.Content...) {
		if a == "" || seen[a] {
			return fmt.Errorf("the internal rule of tool %s: argument %q is empty or named twice", tool, a)
		}
		seen[a] = true
	}
	for _, d := range r.Domains {
		if !validDomain(strings.TrimPrefix(d, "*.")) {
			return fmt.Errorf("the internal rule of tool %s: %q is not a domain name (ASCII letters, digits and '-', dot-separated; \"*.\" in front for subdomains)", tool, d)
		}
	}
	return nil
}

// internal reports whether a call with args (decoded with UseNumber, as
// policy gets them) is internal by r.
func (r InternalRule) internal(args map[string]any) bool {
	addresses := 0
	for name, v := range args {
		switch {
		case slices.Contains(r.Recipients, name):
			n, ok := r.internalAddresses(v)
			if !ok {
				return false
			}
			addresses += n
		case slices.Contains(r.Content, name):
		default:
			return false
		}
	}
	return addresses > 0
}

// internalAddresses counts the addresses of a recipients argument, and
// reports whether all are internal.
func (r InternalRule) internalAddresses(v any) (int, bool) {
	var list []string
	switch x := v.(type) {
	case string:
		list = strings.Split(x, ",")
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return 0, false
			}
			list = append(list, s)
		}
	default:
		return 0, false
	}
	for _, a := range list {
		if !r.internalAddress(strings.Trim(a, " \t")) {
			return 0, false
		}
	}
	return len(list), true
}

// internalAddress reports whether a is a plain address in an internal
// domain.
func (r InternalRule) internalAddress(a string) bool {
	local, domain, ok := strings.Cut(a, "@")
	if !ok || local == "" || len(local) > 64 || strings.Contains(domain, "@") || !validDomain(domain) {
		return false
	}
	// A dot-atom (RFC 5322 §3.2.3) of a few of its characters: no dot
	// first, last or twice, so that every mail parser reads it alike.
	if local[0] == '.' || local[len(local)-1] == '.' || strings.Contains(local, "..") {
		return false
	}
	for i := 0; i < len(local); i++ {
		if c := local[i]; !isAlnum(c) && !strings.ContainsRune("._+-'", rune(c)) {
			return false
		}
	}
	domain = strings.ToLower(domain)
	for _, d := range r.Domains {
		d = strings.ToLower(d)
		if sub, ok := strings.CutPrefix(d, "*."); ok {
			if strings.HasSuffix(domain, "."+sub) {
				return true
			}
		} else if domain == d {
			return true
		}
	}
	return false
}

// validDomain: ASCII LDH labels of 1 to 63 characters, at least two, at
// most 253 in all, no trailing dot.
func validDomain(d string) bool {
	labels := strings.Split(d, ".")
	if len(d) > 253 || len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			if !isAlnum(l[i]) && l[i] != '-' {
				return false
			}
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// callLabels are the labels of a call of tool with args on rt: the tool's,
// with external_send made internal_send where the tool's internal rule
// holds. The route's own slice is never changed.
func (rt *route) callLabels(tool string, args map[string]any) []string {
	labels := rt.ToolLabels[tool]
	rule, ok := rt.Internal[tool]
	if !ok || !rule.internal(args) {
		return labels
	}
	out := make([]string, 0, len(labels))
	for _, l := range labels {
		if l == labelExternalSend {
			l = labelInternalSend
		}
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	return out
}
