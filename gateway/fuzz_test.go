package gateway

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzParseBody: a client's POST body never panics the parser; what it
// accepts is JSON-RPC 2.0 within the limits, and a request keeps its id.
func FuzzParseBody(f *testing.F) {
	for _, s := range []string{
		`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":[1,2,{"b":null}]}}}`,
		`[{"jsonrpc":"2.0","id":"a","method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"}]`,
		`{"jsonrpc":"2.0","id":7,"result":{}}`, `[]`, `{}`, `{"jsonrpc":"2.0","id":{},"method":"x"}`,
		`{"jsonrpc":"2.0","id":1,"method":"a","params":"` + strings.Repeat(`\"[`, 40) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		msgs, _, err := parseBody(body)
		if err != nil {
			return
		}
		if depth(body) > MaxDepth || len(msgs) == 0 || len(msgs) > MaxBatch {
			t.Fatalf("accepted %d messages of depth %d", len(msgs), depth(body))
		}
		for _, m := range msgs {
			if m.JSONRPC != "2.0" || (m.Method == "" && len(m.ID) == 0) {
				t.Fatalf("accepted %+v", m)
			}
			if m.isRequest() {
				out := errorResponse(m.ID, rpcError{Code: CodeDenied, Message: "x"})
				var back struct {
					ID json.RawMessage `json:"id"`
				}
				if err := json.Unmarshal(out, &back); err != nil || !bytes.Equal(back.ID, m.ID) {
					t.Fatalf("the error response lost the id %s: %s", m.ID, out)
				}
			}
		}
	})
}

// FuzzEvents: an upstream's SSE stream never panics the rewriter, and
// what it relays is JSON-RPC the gateway parsed, nothing else.
func FuzzEvents(f *testing.F) {
	f.Add([]byte("event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}\n\n"))
	f.Add([]byte("id: 4\ndata: a\ndata: b\n\n: comment\n\ndata: [1,2]\n"))
	f.Add([]byte("data: {\"jsonrpc\":\"2.0\",\"id\":\"\\u0061\",\"result\":{},\"Result\":{}}\n\n"))
	f.Add([]byte("data:\n\n\n\ndata"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		g := &Gateway{cfg: Config{MaxResponse: 1 << 20}}
		w := httptest.NewRecorder()
		g.events(w, bytes.NewReader(stream), func(*message) []byte { return nil })
		for _, d := range strings.Split(dataLines(w.Body.String()), "\n") {
			if d == "" {
				continue
			}
			if _, _, err := parseBody([]byte(d)); err != nil {
				t.Fatalf("relayed %q, which does not parse: %v", d, err)
			}
		}
	})
}

// dataLines returns the data of an SSE stream's lines, one per line.
func dataLines(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n") {
		if d, ok := strings.CutPrefix(line, "data:"); ok {
			b.WriteString(strings.TrimPrefix(d, " "))
			b.WriteByte('\n')
		}
	}
	return b.String()
}
