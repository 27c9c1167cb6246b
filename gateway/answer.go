package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
)

// relay is what the gateway expects of one upstream answer, and does
// with each message of it: the requests it forwarded (each owed exactly
// one answer), whether the client's POST was a batch, and hook, which
// returns the message to send instead of one, nil to send it as it is,
// or drop to send nothing. On the GET stream asked is nil: a response
// there answers nothing the gateway forwarded, and is not relayed.
type relay struct {
	rt    *route
	asked []json.RawMessage // the ids of the requests forwarded, by idKey
	batch bool
	hook  func(*message) []byte

	answered map[string]bool
}

// take decides on one message of the upstream: what to relay.
func (rl *relay) take(g *Gateway, m *message) []byte {
	if m.Method == "notifications/tools/list_changed" {
		// The server says its tools changed: the next call to any of them
		// waits for a new list (docs/gateway.md, "Tool integrity").
		g.toolsChanged(rl.rt.Name)
	}
	if m.isResponse() {
		k := string(m.ID) // parseMessage keyed it (idKey)
		switch {
		case !slices.ContainsFunc(rl.asked, func(id json.RawMessage) bool { return string(id) == k }):
			g.cfg.Logger.Warn("gateway: the MCP server answered a request it was not sent here: dropped", "server", rl.rt.Name, "id", k)
			return drop
		case rl.answered[k]:
			g.cfg.Logger.Warn("gateway: the MCP server answered a request twice: the second answer dropped", "server", rl.rt.Name, "id", k)
			return drop
		}
		if rl.answered == nil {
			rl.answered = map[string]bool{}
		}
		rl.answered[k] = true
	}
	if rl.hook == nil {
		return nil
	}
	return rl.hook(m)
}

// missing is an error response from the gateway to each request the
// upstream left without an answer it could check, in the order asked.
func (rl *relay) missing() [][]byte {
	var out [][]byte
	for _, id := range rl.asked {
		if !rl.answered[string(id)] {
			out = append(out, errorResponse(id, rpcError{Code: CodeBadAnswer,
				Message: "the MCP server sent no answer to this request that the gateway could check (well-formed JSON-RPC 2.0): nothing of it was relayed"}))
			rl.answered[string(id)] = true
		}
	}
	return out
}

// answer passes an upstream's answer to a POST (or its GET stream) on to
// the client, message by message: each JSON-RPC message of it (in a JSON
// body, or in the data of an SSE event) goes through rl. An SSE stream
// reaches the client event by event. What does not parse as JSON-RPC 2.0
// (or holds a key twice) is not relayed: the gateway relays only what it
// read; a request left without such an answer gets a CodeBadAnswer error
// instead, so that the client always has an answer it can read. It
// returns why it stopped early, if it did.
func (g *Gateway) answer(w http.ResponseWriter, resp *http.Response, rl *relay) error {
	if rl.answered == nil {
		rl.answered = map[string]bool{}
	}
	for _, h := range []string{"Content-Type", sessionHeader, "Mcp-Protocol-Version", "Cache-Control"} {
		if v := resp.Header.Values(h); len(v) > 0 {
			w.Header()[h] = v
		}
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode >= 300:
		// The status is the client's to act on (404: initialize again);
		// the body is the upstream's text, which the gateway cannot check.
		w.Header().Del("Content-Type")
		textError(w, "the MCP server "+rl.rt.Name+" answered "+strconv.Itoa(resp.StatusCode)+" "+http.StatusText(resp.StatusCode), resp.StatusCode)
		return nil
	case mt == "application/json":
		w.Header().Del("Content-Type")
		body, err := io.ReadAll(io.LimitReader(resp.Body, g.cfg.MaxResponse+1))
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return err
		}
		if int64(len(body)) > g.cfg.MaxResponse {
			textError(w, "the MCP server's answer is over the gateway's limit", http.StatusBadGateway)
			return errors.New("answer over MaxResponse")
		}
		parts, array := rl.rewrite(g, body)
		g.writeJSON(w, resp.StatusCode, append(parts, rl.missing()...), array || rl.batch)
		return nil
	case mt == "text/event-stream":
		streaming(w, resp)
		w.WriteHeader(resp.StatusCode)
		// The headers go now: a client may wait for them before it reads
		// (the stream of the GET carries nothing until the server speaks).
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		err := g.events(w, resp.Body, rl)
		if err != nil {
			g.cfg.Logger.Warn("gateway: the MCP server's stream ended early", "server", rl.rt.Name, "err", err)
		}
		for _, e := range rl.missing() {
			if _, werr := w.Write([]byte("event: message\ndata: " + string(e) + "\n\n")); werr != nil {
				break
			}
		}
		if fl, ok := w.(http.Flusher); ok {
			fl.Flush()
		}
		return err
	default:
		// An empty answer (202 Accepted for notifications) has nothing to
		// check; any other the gateway cannot read cannot be checked.
		var one [1]byte
		n, _ := io.ReadFull(resp.Body, one[:])
		for _, h := range []string{"Content-Type", "Mcp-Protocol-Version", "Cache-Control"} {
			w.Header().Del(h)
		}
		if missing := rl.missing(); len(missing) > 0 {
			g.writeJSON(w, http.StatusOK, missing, rl.batch)
			return errors.New("no answer the gateway could read, of type " + mt)
		}
		if n == 0 {
			w.WriteHeader(resp.StatusCode)
			return nil
		}
		textError(w, "the MCP server answered with "+mt+", which the gateway cannot check", http.StatusBadGateway)
		return errors.New("answer of type " + mt)
	}
}

// writeJSON answers with the messages in parts: one object, or an array
// if array or if there are several; nothing the gateway could check is a
// 502.
func (g *Gateway) writeJSON(w http.ResponseWriter, status int, parts [][]byte, array bool) {
	switch {
	case len(parts) == 0:
		textError(w, "the MCP server's answer is not JSON-RPC the gateway can check", http.StatusBadGateway)
		return
	case len(parts) > 1 || array:
		writeRPC(w, status, append(append([]byte("["), bytes.Join(parts, []byte(","))...), ']'))
	default:
		writeRPC(w, status, parts[0])
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

// rewrite takes the message, or each message of the batch, in data
// through rl, and returns what to relay, in the gateway's own encoding,
// and whether data was a batch: nothing for data that is not JSON-RPC
// 2.0, or whose messages are all dropped.
func (rl *relay) rewrite(g *Gateway, data []byte) (parts [][]byte, array bool) {
	trimmed := bytes.TrimSpace(data)
	if depth(trimmed) > MaxDepth+2 {
		return nil, false
	}
	raws := []json.RawMessage{trimmed}
	if array = len(trimmed) > 0 && trimmed[0] == '['; array {
		if json.Unmarshal(trimmed, &raws) != nil {
			return nil, true
		}
	}
	for _, r := range raws {
		m, err := parseMessage(r)
		if err != nil {
			g.cfg.Logger.Warn("gateway: the MCP server sent a message that is not well-formed JSON-RPC 2.0: not relayed", "server", rl.rt.Name, "err", err)
			continue
		}
		switch out := rl.take(g, m); {
		case out == nil:
			parts = append(parts, marshal(m))
		case len(out) > 0:
			parts = append(parts, out)
		}
	}
	return parts, array
}

// events copies an SSE stream (WHATWG HTML §9.2), rewriting the data of
// each event with rewrite (an event whose data is dropped is not sent),
// and flushing after each event. An event is bounded by MaxResponse.
func (g *Gateway) events(w http.ResponseWriter, r io.Reader, rl *relay) error {
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
			parts, array := rl.rewrite(g, bytes.Join(data, []byte("\n")))
			switch {
			case len(parts) == 0:
				return nil // not relayed: not JSON-RPC the gateway could check
			case array:
				d = append(append([]byte("["), bytes.Join(parts, []byte(","))...), ']')
			default:
				d = bytes.Join(parts, []byte("\n"))
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
