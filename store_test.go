package mandate_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
)

// An issuance event is the durable record of the issuance: encoded,
// decoded and read back, it gives the record that made it.
func TestIssuanceEventRoundTrip(t *testing.T) {
	t0 := time.UnixMilli(1795958469246)
	for _, rec := range []*mandate.Issuance{
		{MandateID: "m_1", TaskID: "t_1", AgentID: "spiffe://example.org/agent/a", Subject: "user:alice@example.org",
			Scope: "mcp:crm:list mcp:crm:get", Audience: []string{"mcp:crm", "mcp:mail"}, KeyID: "k1", JKT: "j",
			IssuedAt: t0, ExpiresAt: t0.Add(30 * time.Millisecond), TaskPurpose: "weekly report",
			AssertionID: "a-1", AssertionExpiry: t0.Add(time.Minute), ApprovalID: "ap_1"},
		{MandateID: "m_2", TaskID: "t_1", ParentID: "m_1", AgentID: "spiffe://example.org/agent/a/sub/1f",
			Scope: "mcp:crm:list", KeyID: "k1", IssuedAt: t0, ExpiresAt: t0.Add(time.Second)},
	} {
		data, err := mandate.MarshalEvent(mandate.NewIssuanceEvent(rec, t0))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := mandate.ParseEvent(data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := mandate.IssuanceOf(ev)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(rec, got) {
			t.Errorf("%s: record read back differs:\n got %+v\nwant %+v", rec.MandateID, got, rec)
		}
	}
	for name, ev := range map[string]*mandate.Event{
		"another type":         {Type: mandate.EventDecision, Mandate: "m_1", Task: "t_1", Agent: "a"},
		"no scope":             {Type: mandate.EventMandateIssued, Mandate: "m_1", Task: "t_1", Agent: "a", Details: map[string]any{"kid": "k", "iat_ms": int64(1), "exp_ms": int64(2)}},
		"delegated, no parent": {Type: mandate.EventMandateDelegated, Mandate: "m_1", Task: "t_1", Agent: "a"},
		"exp not a number":     {Type: mandate.EventMandateIssued, Mandate: "m_1", Task: "t_1", Agent: "a", Details: map[string]any{"scope": "s", "kid": "k", "iat_ms": int64(1), "exp_ms": "2"}},
	} {
		if _, err := mandate.IssuanceOf(ev); mandate.ErrorCode(err) != mandate.EINVALID {
			t.Errorf("%s: IssuanceOf error = %v, want EINVALID", name, err)
		}
	}
}
