package mandate

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
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
		sameAsJSON(t, b, e)
	})
}

func TestEventDetailsEncoding(t *testing.T) {
	e := &Event{V: 1, Time: 1, Type: "x", Details: map[string]any{
		"n": 7, "i64": int64(-3), "f": 0.5, "num": json.Number("1e400"), "nil": nil, "list": []string{"a"},
		"nested": map[string]any{"z": []any{true, "q"}, "a": false},
	}}
	b, err := MarshalEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"v":1,"time":1,"type":"x","details":{"f":0.5,"i64":-3,"list":["a"],"n":7,"nested":{"a":false,"z":[true,"q"]},"nil":null,"num":1e400}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	if !json.Valid(b) {
		t.Fatal("not JSON")
	}
	if _, err := ParseEvent(b); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []any{math.NaN(), json.Number("01"), struct{}{}, map[string]any{"a": map[string]any{"b": map[string]any{"c": map[string]any{"d": map[string]any{"e": map[string]any{"f": map[string]any{"g": map[string]any{"h": map[string]any{"i": 1}}}}}}}}}} {
		if _, err := MarshalEvent(&Event{V: 1, Time: 1, Type: "x", Details: map[string]any{"k": bad}}); err == nil {
			t.Errorf("encoded details %#v", bad)
		}
	}
}

// Whatever MarshalEvent accepts, ParseEvent parses back to the same bytes:
// the log never holds an entry its own reader refuses.
func FuzzEventRoundTrip(f *testing.F) {
	f.Add("reason", "key", "value", "agent")
	f.Add("\xff", "k", "v", "a")
	f.Add("\u2028", "\x00", "\\\"", "é")
	f.Fuzz(func(t *testing.T, reason, key, value, agent string) {
		e := &Event{V: 1, Time: 1, Type: "x", Reason: reason, Agent: agent, Chain: []string{agent},
			Details: map[string]any{key: value, "list": []any{value, map[string]any{key: []string{value}}}}}
		b, err := MarshalEvent(e)
		if err != nil {
			return
		}
		back, err := ParseEvent(b)
		if err != nil {
			t.Fatalf("MarshalEvent wrote %q, which ParseEvent refuses: %v", b, err)
		}
		again, _ := MarshalEvent(back)
		if string(again) != string(b) {
			t.Fatalf("round trip changed %q to %q", b, again)
		}
		sameAsJSON(t, b, back)
	})
}

// sameAsJSON checks that ParseEvent's e of b is what encoding/json
// decodes, types of the details included.
func sameAsJSON(t *testing.T, b []byte, e *Event) {
	t.Helper()
	want, err := parseEventJSON(b)
	if err != nil || !reflect.DeepEqual(e, want) {
		t.Fatalf("%q: parsed %#v, encoding/json %#v (%v)", b, e, want, err)
	}
}

// Entries of every kind parse by hand as by encoding/json; what the hand
// decoder cannot take is refused with encoding/json's error.
func TestParseEventByHand(t *testing.T) {
	for _, e := range []*Event{
		{V: 1, Time: -1, Type: "x", Chain: []string{"a", `b"c`}, Reason: "line\nnext \u2028 é \"q\"", Outcome: OutcomeDeny,
			Details: map[string]any{"n": json.Number("1.5e-3"), "l": []any{true, false, nil, json.Number("-0"), "s\\\"", map[string]any{}},
				"m": map[string]any{"evidence": []any{json.Number("12")}, "\t": "x"}}},
		{V: 1, Time: 1764412800030000000, Type: EventMandateIssued, Task: "t_1", Mandate: "m_1", Parent: "p", Agent: "a", Subject: "s",
			Action: "mint", Resource: "r", By: "b", Details: map[string]any{"exp_ms": json.Number("1764412800030")}},
	} {
		b, err := MarshalEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseEvent(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if _, ok := decodeFast(b); !ok {
			t.Errorf("%s: not decoded by hand", b)
		}
		sameAsJSON(t, b, got)
	}
	for _, b := range []string{`{"v":1,"time":1,"type":"x","details":{"n":01}}`, `{"v":1,"time":1,"type":"x" }`,
		`{"v":1,"time":1,"type":"x","extra":"y"}`, `{"v":1,"time":1,"type":"x","type":"y"}`, `{"v":1,"time":1,"type":"x","reason":"\u0061"}`,
		`{"v":1,"time":1,"type":"x","details":{"a":1,"a":1}}`, `{"v":1,"time":1.0,"type":"x"}`, `{"v":1,"time":1,"type":"x"}x`} {
		_, err := ParseEvent([]byte(b))
		_, want := parseEventJSON([]byte(b))
		if err == nil || want == nil || err.Error() != want.Error() {
			t.Errorf("%s: %v, encoding/json: %v", b, err, want)
		}
	}
}

func TestEventRefusesInvalidUTF8(t *testing.T) {
	for _, e := range []*Event{
		{V: 1, Type: "x", Reason: "\xff"},
		{V: 1, Type: "x", Chain: []string{"a", "\xfe"}},
		{V: 1, Type: "x", Details: map[string]any{"k": []any{"\xff"}}},
		{V: 1, Type: "x", Details: map[string]any{"\xff": 1}},
	} {
		if b, err := MarshalEvent(e); err == nil {
			t.Errorf("encoded %q", b)
		}
	}
}

// A list of log positions (the monitor's evidence) encodes as the same list
// of numbers would, and parses back to it.
func TestEventDetailsInt64List(t *testing.T) {
	a, err := MarshalEvent(&Event{V: 1, Time: 1, Type: "x", Details: map[string]any{"evidence": []int64{4, -5}}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := MarshalEvent(&Event{V: 1, Time: 1, Type: "x", Details: map[string]any{"evidence": []any{int64(4), int64(-5)}}})
	if string(a) != string(b) || !strings.Contains(string(a), `"evidence":[4,-5]`) {
		t.Errorf("%s, want %s", a, b)
	}
}

// ClipReason keeps one line of at most MaxReason bytes, valid UTF-8.
func TestClipReason(t *testing.T) {
	if got := ClipReason("a\nb\rc"); got != "a b c" {
		t.Errorf("%q", got)
	}
	long := strings.Repeat("é", MaxReason) // 2 bytes each
	got := ClipReason(long)
	if !utf8.ValidString(got) || len(got) > MaxReason+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("clipped to %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if ClipReason("short") != "short" {
		t.Error("a short reason changed")
	}
}

// Details read the same in the process that made an event and once it is
// read back from the log.
func TestDetailAccessors(t *testing.T) {
	ev := &Event{V: EventVersion, Type: EventToolCall, Details: map[string]any{"n": 42, "list": []string{"a", "b"}}}
	b, err := MarshalEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseEvent(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []map[string]any{ev.Details, back.Details} {
		if n, ok := DetailInt(d["n"]); !ok || n != 42 {
			t.Errorf("DetailInt(%#v) = %d %v", d["n"], n, ok)
		}
		if l := DetailStrings(d["list"]); strings.Join(l, ",") != "a,b" {
			t.Errorf("DetailStrings(%#v) = %v", d["list"], l)
		}
	}
	if _, ok := DetailInt("42"); ok {
		t.Error("a string read as a number")
	}
}

// PeekEvent reads the type and task of a canonical entry as ParseEvent
// does, or says it cannot (an escaped string), never something else.
func TestPeekEvent(t *testing.T) {
	for _, e := range []*Event{
		{V: EventVersion, Time: 1, Type: EventToolCall, Task: "tsk_1", Agent: "a", Details: map[string]any{"task": "x"}},
		{V: EventVersion, Time: 1, Type: EventDecision, Task: "tsk_1", Resource: `,"outcome":"deny"`, Outcome: OutcomeOK, Reason: `,"details":{`},
		{V: EventVersion, Time: 1, Type: EventDecision, Task: "tsk_1", Details: map[string]any{"outcome": "deny", "x": map[string]any{"outcome": "deny"}}},
		{V: EventVersion, Time: -5, Type: EventPolicyLoaded, By: "system"},
		{V: EventVersion, Time: 7, Type: EventAlert, Task: `t"k`},
		{V: EventVersion, Time: 7, Type: EventDecision, Mandate: "m", Outcome: OutcomeDeny, Details: map[string]any{"task": "not this", "outcome": "ok"}},
	} {
		b, err := MarshalEvent(e)
		if err != nil {
			t.Fatal(err)
		}
		typ, task, ok := PeekEvent(b)
		if strings.Contains(e.Task, `"`) {
			if ok {
				t.Errorf("%s: peeked %q %q from an escaped task", b, typ, task)
			}
			continue
		}
		if !ok || typ != e.Type || task != e.Task {
			t.Errorf("%s: peeked %q %q %v, want %q %q", b, typ, task, ok, e.Type, e.Task)
		}
		if o, ok := PeekOutcome(b); !ok || o != e.Outcome {
			t.Errorf("%s: peeked outcome %q %v, want %q", b, o, ok, e.Outcome)
		}
	}
	for _, b := range []string{``, `{"v":1}`, `{"time":1,"v":1,"type":"a"}`, `{"v":1,"time":1,"type":"a\u0062"}`} {
		if typ, task, ok := PeekEvent([]byte(b)); ok {
			t.Errorf("%s: peeked %q %q", b, typ, task)
		}
	}
}

// BenchmarkParseEvent decodes a tool.call entry as the gateway writes it,
// by hand (ParseEvent) and by encoding/json (the fallback), in one run.
func BenchmarkParseEvent(b *testing.B) {
	agent := "spiffe://example.org/agent/burst"
	e := &Event{V: 1, Time: 1764412800030000000, Type: EventToolCall, Task: NewID(TaskIDPrefix, time.Now()), Mandate: NewID(MandateIDPrefix, time.Now()),
		Agent: agent, Chain: []string{agent}, Subject: "user:alice@example.org", Action: "tools/call", Resource: "mcp:crm:list_customers",
		Outcome: OutcomeOK, Details: map[string]any{"args_bytes": json.Number("2"), "tool_labels": []any{"data:confidential"}}}
	data, err := MarshalEvent(e)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		parse func([]byte) (*Event, error)
	}{{"hand", ParseEvent}, {"encoding-json", parseEventJSON}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := c.parse(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// PeekEvent and PeekOutcome read what ParseEvent reads, or say they
// cannot, whatever the strings of an entry hold: quotes, escapes, and
// the very field names the peeks look for, in other fields and in the
// details.
func FuzzPeekEvent(f *testing.F) {
	f.Add("tsk_1", `,"outcome":"deny"`, `,"details":{`, "task", `","task":"x`, true)
	f.Add(`t"k`, "ok", "", "outcome", "deny", false)
	f.Fuzz(func(t *testing.T, task, outcome, reason, key, value string, withChain bool) {
		e := &Event{V: EventVersion, Time: 1, Type: EventDecision, Task: task, Mandate: value, Resource: reason, Outcome: outcome, Reason: reason,
			Details: map[string]any{key: value, "x": map[string]any{key: []any{value}}}}
		if withChain {
			e.Chain = []string{value, key}
		}
		b, err := MarshalEvent(e)
		if err != nil {
			return
		}
		want, err := ParseEvent(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if typ, tk, ok := PeekEvent(b); ok && (typ != want.Type || tk != want.Task) {
			t.Fatalf("%s: peeked %q %q, parsed %q %q", b, typ, tk, want.Type, want.Task)
		}
		if o, ok := PeekOutcome(b); ok && o != want.Outcome {
			t.Fatalf("%s: peeked outcome %q, parsed %q", b, o, want.Outcome)
		}
	})
}
