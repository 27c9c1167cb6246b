package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"github.com/mandatehq/mandate/internal/secret"
)

// JSON-RPC 2.0 error codes the gateway answers with (JSON-RPC 2.0 §5.1;
// -32000 to -32099 are for the implementation).
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	// CodeDenied: the mandate or policy does not allow the request.
	CodeDenied = -32001
	// CodeUnavailable: the request cannot be served now, and nothing of it
	// took effect: the audit log could not record it, the upstream cannot
	// be reached, or it declined to serve it (429, 503). The client may
	// try again later.
	CodeUnavailable = -32002
	// CodeBadAnswer: the request reached the MCP server, and may have
	// taken effect, but its answer was not one the gateway could check or
	// relay (not JSON-RPC 2.0, malformed, missing, a tools/list it must
	// refuse, an error status, a redirect, which it never follows), or
	// none came (cut short, silent past Config.UpstreamTimeout, not whole
	// within Config.CallTimeout): nothing of it was relayed. (-32004 and
	// -32005 mean "server closing" and "rejected" to the MCP Go SDK.)
	CodeBadAnswer = -32010
)

// Limits on a client's messages.
const (
	DefaultMaxBody = 1 << 20 // bytes of one POST body
	MaxDepth       = 64      // nesting of objects and arrays in a message
	MaxBatch       = 100     // messages in one batch
	// MaxIDLength bounds a message's id, in the gateway's spelling (a
	// string with its quotes): the id goes to the audit log with the call.
	MaxIDLength = 256
)

// message is one JSON-RPC 2.0 message: a request (ID and Method), a
// notification (Method, no ID) or a response (ID and Result or Error).
type message struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id,omitempty"`
	Method  string          `json:"method,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   json.RawMessage `json:"error,omitempty"`
}

func (m *message) isRequest() bool      { return m.Method != "" && len(m.ID) > 0 }
func (m *message) isResponse() bool     { return m.Method == "" && len(m.ID) > 0 }
func (m *message) isNotification() bool { return m.Method != "" && len(m.ID) == 0 }

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
	// cause is why, for the audit event's "cause" (not sent).
	cause string
}

// errorResponse is the response to request id with e; id null if unknown.
// Its message, which may quote what the client sent (a tool's name, a
// method, a URI), has its secrets masked: an error is read and logged by
// more than its client. (The id is the client's own, which JSON-RPC
// answers with.)
func errorResponse(id json.RawMessage, e rpcError) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
	e.Message = secret.Mask(e.Message)
	b, _ := json.Marshal(struct {
		JSONRPC string          `json:"jsonrpc"`
		ID      json.RawMessage `json:"id"`
		Error   rpcError        `json:"error"`
	}{"2.0", id, e})
	return b
}

// parseBody reads a POST body: one message, or a batch (an array). It
// refuses what JSON-RPC does not allow and what is beyond the limits,
// before anything is decoded into values.
func parseBody(body []byte) (msgs []*message, batch bool, err error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, false, errors.New("empty body: send a JSON-RPC message")
	}
	if d := depth(body); d > MaxDepth {
		return nil, false, fmt.Errorf("the message nests %d deep, over the limit of %d", d, MaxDepth)
	}
	if err := checkKeys(body); err != nil {
		return nil, false, err
	}
	if body[0] == '[' {
		var raws []json.RawMessage
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, true, fmt.Errorf("not JSON: %v", err)
		}
		if len(raws) == 0 {
			return nil, true, errors.New("an empty batch")
		}
		if len(raws) > MaxBatch {
			return nil, true, fmt.Errorf("a batch of %d messages, over the limit of %d", len(raws), MaxBatch)
		}
		seen := map[string]bool{}
		for _, r := range raws {
			m, err := parseMessage(r)
			if err != nil {
				return nil, true, err
			}
			if len(m.ID) > 0 {
				if seen[string(m.ID)] {
					return nil, true, fmt.Errorf("the id %s is used twice in the batch", m.ID)
				}
				seen[string(m.ID)] = true
			}
			msgs = append(msgs, m)
		}
		return msgs, true, nil
	}
	m, err := parseMessage(body)
	if err != nil {
		return nil, false, err
	}
	return []*message{m}, false, nil
}

// encode is the message as the gateway forwards it: its own encoding of
// what it decided on (canonical id, fields spelt exactly), not the bytes
// the client sent.
func encode(msgs []*message, batch bool) []byte {
	parts := make([][]byte, len(msgs))
	for i, m := range msgs {
		parts[i] = marshal(m)
	}
	if !batch {
		return parts[0]
	}
	return append(append([]byte("["), bytes.Join(parts, []byte(","))...), ']')
}

// textError answers a refused HTTP request with msg, as http.Error does,
// its secrets masked (errorResponse).
func textError(w http.ResponseWriter, msg string, code int) {
	http.Error(w, secret.Mask(msg), code)
}

// marshal encodes v as JSON without escaping <, > and &: the gateway
// relays text, it does not embed it in HTML.
func marshal(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// checkKeys refuses JSON in which an object has the same key twice, or
// two keys that differ only in case. Decoders disagree on which of them
// wins (encoding/json takes the last, matching case-insensitively; the
// MCP SDKs match case exactly), and the gateway must decide on what the
// server will read.
func checkKeys(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	var stack []map[string]bool // the keys of the enclosing objects
	expectKey := []bool{}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("not JSON: %v", err)
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, map[string]bool{})
				expectKey = append(expectKey, true)
				continue
			case '[':
				stack = append(stack, nil)
				expectKey = append(expectKey, false)
				continue
			default: // '}' or ']'
				stack, expectKey = stack[:len(stack)-1], expectKey[:len(expectKey)-1]
			}
		case string:
			if n := len(stack); n > 0 && stack[n-1] != nil && expectKey[n-1] {
				k := foldKey(t)
				if stack[n-1][k] {
					return fmt.Errorf("the key %q appears twice in an object (keys must be unique, also ignoring case)", t)
				}
				stack[n-1][k] = true
				expectKey[n-1] = false
				continue
			}
		}
		// A value: in an object, a key comes next.
		if n := len(stack); n > 0 && stack[n-1] != nil {
			expectKey[n-1] = true
		}
	}
}

// foldKey maps a key to the same string as every key encoding/json would
// match it with: each rune to the least rune of its Unicode case-folding
// orbit (so "s", "S" and "ſ", U+017F, fold alike; strings.ToLower would
// leave "ſ" alone).
func foldKey(k string) string {
	var b strings.Builder
	for _, r := range k {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		b.WriteRune(least)
	}
	return b.String()
}

// idKey is an id's value, the same however it was spelt ("a" and
// "\u0061", 1 and 1.0): what requests and answers are matched by.
func idKey(id json.RawMessage) string {
	var v any
	dec := json.NewDecoder(bytes.NewReader(id))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return string(id)
	}
	switch x := v.(type) {
	case string:
		return string(marshal(x))
	case json.Number:
		if !strings.ContainsAny(string(x), ".eE") {
			if x == "-0" {
				return "0"
			}
			return string(x) // an integer, exactly as JSON writes it
		}
		if f, err := x.Float64(); err == nil {
			return strconv.FormatFloat(f, 'g', -1, 64)
		}
	}
	return string(id)
}

func parseMessage(b []byte) (*message, error) {
	if err := checkKeys(b); err != nil {
		return nil, err
	}
	var m message
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("not a JSON-RPC message: %v", err)
	}
	if dec.More() {
		return nil, errors.New("not a JSON-RPC message: data after the object")
	}
	if m.JSONRPC != "2.0" {
		return nil, errors.New(`not a JSON-RPC 2.0 message: "jsonrpc" must be "2.0"`)
	}
	if len(m.ID) > 0 {
		switch m.ID[0] {
		case '"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		default:
			return nil, errors.New("the id must be a string or a number")
		}
		if m.ID = json.RawMessage(idKey(m.ID)); len(m.ID) > MaxIDLength {
			return nil, fmt.Errorf("the id is %d bytes, over the limit of %d", len(m.ID), MaxIDLength)
		}
	}
	hasResult := len(m.Result) > 0 || len(m.Error) > 0
	switch {
	case m.Method != "" && hasResult:
		return nil, errors.New("a message is a request or a response, not both")
	case m.Method == "" && (!hasResult || len(m.ID) == 0):
		return nil, errors.New("a message without a method must be a response with an id")
	case len(m.Result) > 0 && len(m.Error) > 0:
		// JSON-RPC 2.0 §5: either the result member or the error member,
		// never both; a reader would take either.
		return nil, errors.New("a response has a result or an error, not both")
	case m.Method == "" && len(m.Params) > 0:
		return nil, errors.New("a response has no params")
	case len(m.Params) > 0 && m.Params[0] != '{' && m.Params[0] != '[' && string(m.Params) != "null":
		return nil, errors.New("params must be an object or an array") // §4.2 (null: as if absent)
	case len(m.Result) > 0 && m.Result[0] != '{':
		return nil, errors.New("a result must be an object") // MCP: every result is an object
	}
	if len(m.Error) > 0 {
		e, err := errorObject(m.Error)
		if err != nil {
			return nil, err
		}
		m.Error = e
	}
	return &m, nil
}

// errorObject checks a JSON-RPC error object (JSON-RPC 2.0 §5.1: an
// integer code, a string message, any data) and returns it rebuilt from
// those members, spelt exactly: what else it holds is not relayed.
func errorObject(raw json.RawMessage) (json.RawMessage, error) {
	var e map[string]json.RawMessage
	if json.Unmarshal(raw, &e) != nil {
		return nil, errors.New("an error must be an object")
	}
	var code json.Number
	var msg string
	dec := json.NewDecoder(bytes.NewReader(e["code"]))
	dec.UseNumber()
	// (A JSON string of digits decodes into a json.Number too: refused.)
	if len(e["code"]) == 0 || e["code"][0] == '"' || dec.Decode(&code) != nil || strings.ContainsAny(string(code), ".eE") {
		return nil, errors.New("an error's code must be an integer")
	}
	if _, err := code.Int64(); err != nil {
		return nil, errors.New("an error's code must be an integer")
	}
	if json.Unmarshal(e["message"], &msg) != nil {
		return nil, errors.New("an error's message must be a string")
	}
	out := struct {
		Code    json.Number     `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data,omitempty"`
	}{code, msg, e["data"]}
	return marshal(out), nil
}

// depth returns the deepest nesting of arrays and objects in b, which is
// scanned as JSON text without decoding it (strings are skipped).
func depth(b []byte) int {
	d, max, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			d++
			if d > max {
				max = d
			}
		case c == ']' || c == '}':
			d--
		}
	}
	return max
}
