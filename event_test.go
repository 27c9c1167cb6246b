package mandate

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestEventCanonical(t *testing.T) {
	e := &Event{V: 1, Time: 1764412800030000000, Type: EventMandateIssued, Task: "t_1", Mandate: "m_1",
		Agent: "spiffe://example.org/agent/a", Chain: []string{"spiffe://example.org/agent/a"}, Subject: "user:a@b.c",
		Action: "mint", Outcome: OutcomeOK, Details: map[string]any{"scope": "mcp:crm:x", "ttl_ms": json.Number("30"), "aud": []any{"mcp:crm"}, "a<b": true}}
	b, err := MarshalEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":1,"time":1764412800030000000,"type":"mandate.issued","task":"t_1","mandate":"m_1","agent":"spiffe://example.org/agent/a","chain":["spiffe://example.org/agent/a"],"sub":"user:a@b.c","action":"mint","outcome":"ok","details":{"a<b":true,"aud":["mcp:crm"],"scope":"mcp:crm:x","ttl_ms":30}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	back, err := ParseEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := MarshalEvent(back)
	if string(again) != want {
		t.Errorf("round trip: %s", again)
	}
	for _, bad := range []string{
		` ` + want,
		`{"time":1764412800030000000,"v":1,"type":"mandate.issued"}`, // field order
		`{"v":1,"time":1,"type":"x","details":{"b":1,"a":2}}`,        // key order
		`{"v":1,"time":1,"type":"x","extra":1}`,                      // unknown field
		`{"v":1,"time":1,"type":"x","reason":"\u0061"}`,              // escaped letter
		`{"v":2,"time":1,"type":"x"}`,                                // version
		`{"v":1,"time":1,"type":"Bad Type"}`,                         // type
	} {
		if _, err := ParseEvent([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	if _, err := ParseEvent([]byte(`{"time":1,"v":1,"type":"x"}`)); !errors.Is(err, ErrNonCanonical) {
		t.Errorf("reordered fields: %v", err)
	}
}

func FuzzParseEvent(f *testing.F) {
	f.Add([]byte(`{"v":1,"time":1,"type":"mandate.issued","details":{"a":"b"}}`))
	f.Add([]byte(`{"v":1,"time":-1,"type":"x","chain":["a","b"],"details":{"n":1e400}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEvent(b)
		if err != nil {
			return
		}
		// Non-malleable: what parses is exactly its canonical encoding.
		again, err := MarshalEvent(e)
		if err != nil || string(again) != string(b) {
			t.Fatalf("parsed %q but re-encodes as %q (%v)", b, again, err)
		}
	})
}
