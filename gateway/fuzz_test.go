package gateway

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"testing"

	"github.com/mandatehq/mandate"
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
			if m.JSONRPC != "2.0" || (m.Method == "" && len(m.ID) == 0) || (len(m.Result) > 0 && len(m.Error) > 0) ||
				(len(m.Result) > 0 && m.Result[0] != '{') {
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
	f.Add([]byte("data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{},\"error\":{\"code\":1,\"message\":\"x\"}}\n\n"))
	f.Add([]byte("data: {\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":\"1\",\"message\":\"x\",\"extra\":1}}\n\n"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		g := &Gateway{cfg: Config{MaxResponse: 1 << 20, Logger: slog.New(slog.DiscardHandler)}}
		w := httptest.NewRecorder()
		g.events(w, bytes.NewReader(stream), &relay{rt: &route{}})
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

// Keys that encoding/json would match with each other fold alike, so
// that checkKeys refuses what decoders would read differently.
func TestFoldKey(t *testing.T) {
	for _, pair := range [][2]string{{"arguments", "argumentſ"}, {"Method", "method"}, {"K", "\u212a"}, {"name", "NAME"}} {
		if foldKey(pair[0]) != foldKey(pair[1]) {
			t.Errorf("%q and %q fold apart", pair[0], pair[1])
		}
		if err := checkKeys([]byte(`{"a":{"` + pair[0] + `":1,"` + pair[1] + `":2}}`)); err == nil {
			t.Errorf("%q and %q in one object passed", pair[0], pair[1])
		}
	}
	if err := checkKeys([]byte(`{"a":[{"x":1},{"x":2}],"b":{"x":1}}`)); err != nil {
		t.Errorf("the same key in sibling objects: %v", err)
	}
	for id, want := range map[string]string{`1000000`: "1000000", `9007199254740993`: "9007199254740993", `"\u0061"`: `"a"`, `1.0`: "1", `-0`: "0"} {
		if got := idKey([]byte(id)); got != want {
			t.Errorf("idKey(%s) = %s, want %s", id, got, want)
		}
	}
}

// A data line behind a lone CR is split off as the SSE parsers of
// clients split it, and so goes through the checks.
func TestSSELoneCR(t *testing.T) {
	g := &Gateway{cfg: Config{MaxResponse: 1 << 20, Logger: slog.New(slog.DiscardHandler)}}
	w := httptest.NewRecorder()
	stream := "event: message\rdata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}\n\n"
	seen := 0
	g.events(w, strings.NewReader(stream), &relay{rt: &route{}, asked: []json.RawMessage{json.RawMessage("1")},
		hook: func(m *message) []byte { seen++; return drop }})
	if seen != 1 || strings.Contains(w.Body.String(), "tools") {
		t.Errorf("hook saw %d messages; relayed %q", seen, w.Body.String())
	}
}

// FuzzCanonical: the canonical spelling of a path or URI is a fixed point,
// a valid path or URI of the scope grammar (within its limits), and,
// decoded as an upstream would (once, twice, with \ as /), has no dot
// segment and nothing a second decoding changes: what an upstream
// resolves it to is what was matched.
func FuzzCanonical(f *testing.F) {
	for _, s := range []string{"/public/index.txt", "/public/..%2Fadmin", "/a/%2e%2E/b", "/a/%252e%252e", "/a;b/..;/c",
		"/%7Euser/a%3bb", "/a*", "/caf%C3%A9", "/%C0%AE%C0%AE", "/a%EF%BC%8Fb", "/a/", "//", "/a%00", "/a\\b", "/..%20",
		"file:///public/a", "db://t?x=1#f", "urn:isbn:1", "", "a%2", "/%", "/a%zz"} {
		f.Add(s, false, false)
		f.Add(s, true, false)
		f.Add(s, false, true)
	}
	f.Fuzz(func(t *testing.T, in string, slashes, uri bool) {
		rules := pathRules{encodedSlashes: slashes, uri: uri}
		out, why := canonical(in, rules)
		if why != "" {
			if out != "" {
				t.Fatalf("canonical(%q) refused (%s) but returned %q", in, why, out)
			}
			return
		}
		if again, why := canonical(out, rules); why != "" || again != out {
			t.Fatalf("canonical(%q) = %q, which canonicalizes to %q (%s)", in, out, again, why)
		}
		scope := "http:u:GET:" + out
		if uri {
			scope = "mcp:s:resource:" + out
		}
		switch sc, err := mandate.ParseScope(scope); {
		case err != nil && !strings.Contains(err.Error(), "over the limit"):
			t.Fatalf("canonical(%q) = %q is not a scope's: %v", in, out, err)
		case err == nil && !sc.IsConcrete():
			t.Fatalf("canonical(%q) = %q is a pattern", in, out)
		}
		once, err := url.PathUnescape(out)
		if err != nil {
			t.Fatalf("canonical(%q) = %q does not decode: %v", in, out, err)
		}
		if twice, err := url.PathUnescape(once); err == nil && twice != once {
			t.Fatalf("canonical(%q) = %q changes when decoded twice: %q then %q", in, out, once, twice)
		}
		for _, decoded := range []string{once, strings.ReplaceAll(once, "\\", "/")} {
			for _, seg := range strings.Split(decoded, "/") {
				if name, _, _ := strings.Cut(seg, ";"); strings.Trim(name, ". ") == "" && strings.Contains(name, ".") {
					t.Fatalf("canonical(%q) = %q holds the dot segment %q once decoded", in, out, seg)
				}
			}
			if !uri && !slashes && decoded != "/" {
				if clean := path.Clean(decoded); clean != strings.TrimSuffix(decoded, "/") {
					t.Fatalf("canonical(%q) = %q, decoded %q, resolves to %q", in, out, decoded, clean)
				}
			}
		}
	})
}
