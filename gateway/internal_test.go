package gateway

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// An internal rule makes a send internal only when every destination the
// call names is plainly internal: whatever the agent puts in the
// arguments' values, an external address, an address a mail system might
// read another way, or an argument the rule does not name keeps the call
// external.
func TestInternalRule(t *testing.T) {
	r := InternalRule{Recipients: []string{"to", "cc"}, Domains: []string{"acme.example", "*.corp.acme.example"}, Content: []string{"subject", "body"}}
	for _, tt := range []struct {
		args string
		want bool
	}{
		{`{"to":"bob@acme.example","subject":"hi","body":"see ada@example.org"}`, true},
		{`{"to":"Bob.O'Neil+news@ACME.Example"}`, true},
		{`{"to":"bob@acme.example, carol@acme.example","cc":["dan@eu.corp.acme.example"]}`, true},
		{`{"to":["bob@acme.example"],"body":{"any":"thing"}}`, true},
		// Nothing to send to, or only content.
		{`{}`, false},
		{`{"subject":"hi"}`, false},
		{`{"to":[]}`, false},
		// External, or not plainly internal.
		{`{"to":"eve@evil.example"}`, false},
		{`{"to":"bob@acme.example, eve@evil.example"}`, false},
		{`{"to":"bob@acme.example","cc":"eve@evil.example"}`, false},
		{`{"to":["bob@acme.example",{"address":"eve@evil.example"}]}`, false},
		{`{"to":"bob@acme.example,"}`, false},
		{`{"to":"bob@acme.example.evil.example"}`, false},
		{`{"to":"bob@evilacme.example"}`, false},
		{`{"to":"bob@corp.acme.example"}`, false}, // *.corp… is its subdomains only
		{`{"to":"bob@acme.example."}`, false},
		{`{"to":"bob@acme.example@evil.example"}`, false},
		{`{"to":"bob%evil.example@acme.example"}`, false},  // a relay through acme
		{`{"to":"evil.example!bob@acme.example"}`, false},  // a bang path
		{`{"to":"@evil.example:bob@acme.example"}`, false}, // a source route
		{`{"to":"\"eve@evil.example\"@acme.example"}`, false},
		{`{"to":"Eve <eve@evil.example>"}`, false},
		{`{"to":"\"bob@acme.example\" <eve@evil.example>"}`, false},
		{`{"to":"eve@evil.example (bob@acme.example)"}`, false},
		{`{"to":"bob@acme.example\r\nBcc: eve@evil.example"}`, false},
		{`{"to":"bob@[10.0.0.1]"}`, false},
		{`{"to":"bob@acme.exampl\u0435"}`, false},  // a Cyrillic е
		{`{"to":"bob@ACME.EXAMPLE\u212a"}`, false}, // the Kelvin sign
		{`{"to":7}`, false},
		{`{"to":".@acme.example"}`, false},
		{`{"to":"bob..x@acme.example"}`, false},
		// An argument the rule does not name: another destination may ride along.
		{`{"to":"bob@acme.example","bcc":"eve@evil.example"}`, false},
		{`{"to":"bob@acme.example","reply_to":"bob@acme.example"}`, false},
		{`{"to":"bob@acme.example","To":"eve@evil.example"}`, false},
	} {
		dec := json.NewDecoder(bytes.NewReader([]byte(tt.args)))
		dec.UseNumber()
		var args map[string]any
		if err := dec.Decode(&args); err != nil {
			t.Fatal(err)
		}
		if got := r.internal(args); got != tt.want {
			t.Errorf("%s: internal %v, want %v", tt.args, got, tt.want)
		}
	}
}

// A rule is refused where it could not mean what it says.
func TestInternalRuleValidate(t *testing.T) {
	send := []string{"external_send"}
	for _, tt := range []struct {
		rule   InternalRule
		labels []string
		want   string
	}{
		{InternalRule{Recipients: []string{"to"}, Domains: []string{"acme.example"}}, []string{"read_only"}, "not labelled external_send"},
		{InternalRule{Domains: []string{"acme.example"}}, send, "no recipients"},
		{InternalRule{Recipients: []string{"to"}}, send, "no domain"},
		{InternalRule{Recipients: []string{"to"}, Domains: []string{"acme"}}, send, "not a domain"},
		{InternalRule{Recipients: []string{"to"}, Domains: []string{"*acme.example"}}, send, "not a domain"},
		{InternalRule{Recipients: []string{"to"}, Domains: []string{"acme.example."}}, send, "not a domain"},
		{InternalRule{Recipients: []string{"to"}, Domains: []string{"acme.example"}, Content: []string{"to"}}, send, "named twice"},
	} {
		if err := tt.rule.Validate("send", tt.labels); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.rule, err, tt.want)
		}
	}
	if err := (InternalRule{Recipients: []string{"to"}, Domains: []string{"acme.example", "*.acme.example"}}).Validate("send", send); err != nil {
		t.Error(err)
	}
}

// The rule turns external_send into internal_send for the call, and
// leaves the route's labels as they were.
func TestCallLabels(t *testing.T) {
	rt := &route{Route: Route{ToolLabels: map[string][]string{"send": {"external_send", "data:mail"}},
		Internal: map[string]InternalRule{"send": {Recipients: []string{"to"}, Domains: []string{"acme.example"}}}}}
	if got := rt.callLabels("send", map[string]any{"to": "bob@acme.example"}); strings.Join(got, " ") != "internal_send data:mail" {
		t.Errorf("internal: %v", got)
	}
	if got := rt.callLabels("send", map[string]any{"to": "eve@evil.example"}); strings.Join(got, " ") != "external_send data:mail" {
		t.Errorf("external: %v", got)
	}
	if got := rt.ToolLabels["send"]; strings.Join(got, " ") != "external_send data:mail" {
		t.Errorf("the route's labels changed: %v", got)
	}
}
