package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// JSON-RPC 2.0 error codes the gateway answers with (JSON-RPC 2.0 §5.1;
// -32000 to -32099 are for the implementation).
const (
	CodeParseError     = -32700
	CodeInvalidRequest = -32600
	CodeMethodNotFound = -32601
	// CodeDenied: the mandate or policy does not allow the request.
	CodeDenied = -32001
	// CodeUnavailable: the gateway cannot serve the request now (the audit
	// log could not record it, say): nothing was forwarded.
	CodeUnavailable = -32002
)

// Limits on a client's messages.
const (
	DefaultMaxBody = 1 << 20 // bytes of one POST body
	MaxDepth       = 64      // nesting of objects and arrays in a message
	MaxBatch       = 100     // messages in one batch
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
func (m *message) isNotification() bool { return m.Method != "" && len(m.ID) == 0 }

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data,omitempty"`
}

// errorResponse is the response to request id with e; id null if unknown.
func errorResponse(id json.RawMessage, e rpcError) []byte {
	if len(id) == 0 {
		id = json.RawMessage("null")
	}
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
		for _, r := range raws {
			m, err := parseMessage(r)
			if err != nil {
				return nil, true, err
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

func parseMessage(b []byte) (*message, error) {
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
	}
	hasResult := len(m.Result) > 0 || len(m.Error) > 0
	switch {
	case m.Method != "" && hasResult:
		return nil, errors.New("a message is a request or a response, not both")
	case m.Method == "" && (!hasResult || len(m.ID) == 0):
		return nil, errors.New("a message without a method must be a response with an id")
	}
	return &m, nil
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
