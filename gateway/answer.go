package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
)

// answer passes an upstream's answer to a POST on to the client, message
// by message: each JSON-RPC message of it (in a JSON body, or in the data
// of an SSE event) goes through hook, which returns the message to send
// instead, nil to send it as it is, or drop to send nothing. An SSE stream
// reaches the client event by event. What does not parse as JSON-RPC (or
// holds a key twice) is not relayed: the gateway relays only what it read.
// It returns why it stopped early, if it did.
func (g *Gateway) answer(w http.ResponseWriter, resp *http.Response, hook func(*message) []byte) error {
	for _, h := range []string{"Content-Type", sessionHeader, "Mcp-Protocol-Version", "Cache-Control"} {
		if v := resp.Header.Values(h); len(v) > 0 {
			w.Header()[h] = v
		}
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode >= 300:
		copyResponse(w, resp)
		return nil
	case mt == "application/json":
		w.Header().Del("Content-Type")
		body, err := io.ReadAll(io.LimitReader(resp.Body, g.cfg.MaxResponse+1))
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return err
		}
		if int64(len(body)) > g.cfg.MaxResponse {
			http.Error(w, "the MCP server's answer is over the gateway's limit", http.StatusBadGateway)
			return errors.New("answer over MaxResponse")
		}
		out := rewrite(body, hook)
		if len(out) == 0 {
			http.Error(w, "the MCP server's answer is not JSON-RPC the gateway can check", http.StatusBadGateway)
			return errors.New("answer not JSON-RPC")
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		w.Write(out)
		return nil
	case mt == "text/event-stream":
		streaming(w, resp)
		w.WriteHeader(resp.StatusCode)
		return g.events(w, resp.Body, hook)
	default:
		// An empty answer (202 Accepted for notifications) has nothing to
		// check; any other the gateway cannot read cannot be checked.
		var one [1]byte
		if n, _ := io.ReadFull(resp.Body, one[:]); n == 0 {
			w.WriteHeader(resp.StatusCode)
			return nil
		}
		for _, h := range []string{"Content-Type", sessionHeader, "Mcp-Protocol-Version", "Cache-Control"} {
			w.Header().Del(h)
		}
		http.Error(w, "the MCP server answered with "+mt+", which the gateway cannot check", http.StatusBadGateway)
		return errors.New("answer of type " + mt)
	}
}

// sseLines splits an SSE stream into lines the way the WHATWG parser
// does: a line ends at CRLF, at a lone CR, or at LF. Splitting at LF
// alone would let a field line hide a data line behind a CR.
func sseLines(data []byte, atEOF bool) (int, []byte, error) {
	for i, c := range data {
		switch c {
		case '\n':
			return i + 1, data[:i], nil
		case '\r':
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if atEOF {
				return i + 1, data[:i], nil
			}
			return 0, nil, nil // a CR at the end: wait for what follows
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// drop is what a hook returns for a message not to be relayed.
var drop = []byte{}

// rewrite applies hook to the message, or each message of the batch, in
// data, and returns what to relay, in the gateway's own encoding: nothing
// (an empty slice) for data that is not JSON-RPC, or whose messages are
// all dropped.
func rewrite(data []byte, hook func(*message) []byte) []byte {
	trimmed := bytes.TrimSpace(data)
	if depth(trimmed) > MaxDepth+2 {
		return drop
	}
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var raws []json.RawMessage
		if json.Unmarshal(trimmed, &raws) != nil {
			return drop
		}
		var kept []json.RawMessage
		for _, r := range raws {
			m, err := parseMessage(r)
			if err != nil {
				continue
			}
			switch out := hook(m); {
			case out == nil:
				kept = append(kept, marshal(m))
			case len(out) > 0:
				kept = append(kept, out)
			}
		}
		if len(kept) == 0 {
			return drop
		}
		return marshal(kept)
	}
	m, err := parseMessage(trimmed)
	if err != nil {
		return drop
	}
	if out := hook(m); out != nil {
		return out
	}
	return marshal(m)
}

// events copies an SSE stream (WHATWG HTML §9.2), rewriting the data of
// each event with rewrite (an event whose data is dropped is not sent),
// and flushing after each event. An event is bounded by MaxResponse.
func (g *Gateway) events(w http.ResponseWriter, r io.Reader, hook func(*message) []byte) error {
	fl, _ := w.(http.Flusher)
	if fl != nil {
		// The headers at once: a client waits for them before it goes on
		// (the official SDKs open their stream of server messages so),
		// and the first event may be long in coming.
		fl.Flush()
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), int(min(g.cfg.MaxResponse, 1<<30)))
	sc.Split(sseLines)
	var fields [][]byte // the event's lines other than data
	var data [][]byte
	size := int64(0)
	flush := func() error {
		defer func() { fields, data, size = fields[:0], nil, 0 }()
		var d []byte
		if data != nil {
			if d = rewrite(bytes.Join(data, []byte("\n")), hook); len(d) == 0 {
				return nil // not relayed: not JSON-RPC the gateway could check
			}
		}
		var b bytes.Buffer
		for _, f := range fields {
			b.Write(f)
			b.WriteByte('\n')
		}
		if data != nil {
			for _, line := range bytes.Split(d, []byte("\n")) {
				b.WriteString("data: ")
				b.Write(line)
				b.WriteByte('\n')
			}
		}
		b.WriteByte('\n')
		if _, err := w.Write(b.Bytes()); err != nil {
			return err
		}
		if fl != nil {
			fl.Flush()
		}
		return nil
	}
	for sc.Scan() {
		line := sc.Bytes()
		if size += int64(len(line)) + 1; size > g.cfg.MaxResponse {
			return errors.New("an SSE event of the upstream is over MaxResponse")
		}
		switch {
		case len(line) == 0:
			if len(fields) == 0 && data == nil {
				continue
			}
			if err := flush(); err != nil {
				return err
			}
		case bytes.HasPrefix(line, []byte("data:")):
			d := bytes.TrimPrefix(line[len("data:"):], []byte(" "))
			data = append(data, bytes.Clone(d))
		case bytes.HasPrefix(line, []byte("event:")), bytes.HasPrefix(line, []byte("id:")), bytes.HasPrefix(line, []byte("retry:")):
			// Rebuilt from a line that holds no CR or LF; other fields and
			// comments are not relayed.
			fields = append(fields, bytes.Clone(line))
		}
	}
	if len(fields) > 0 || data != nil {
		if err := flush(); err != nil {
			return err
		}
	}
	return sc.Err()
}
