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
	// failed is why the upstream's answer failed, in the gateway's words,
	// once it did: the error each request left without an answer gets,
	// and its call's tool.result's reason.
	failed string
	// unserved says the upstream declined to serve the requests (429,
	// 503): CodeUnavailable, where the client may try again.
	unserved bool
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

// noCheckableAnswer is why a request has no answer when the upstream's
// was there but not one the gateway could check.
const noCheckableAnswer = "the MCP server sent no answer to this request that the gateway could check (well-formed JSON-RPC 2.0): nothing of it was relayed"

// missing is an error response from the gateway to each request the
// upstream left without an answer it could check, in the order asked.
func (rl *relay) missing() [][]byte {
	why := rl.failed
	if why == "" {
		why = noCheckableAnswer
	}
	var out [][]byte
	for _, id := range rl.asked {
		if !rl.answered[string(id)] {
			code := CodeBadAnswer
			if rl.unserved {
				code = CodeUnavailable
			}
			out = append(out, errorResponse(id, rpcError{Code: code, Message: why}))
			rl.answered[string(id)] = true
		}
	}
	return out
}

// whole says every request forwarded has its answer.
func (rl *relay) whole() bool {
	return rl.asked != nil && len(rl.answered) == len(rl.asked)
}

// answer passes an upstream's answer to a POST (or its GET stream) on to
// the client, message by message: each JSON-RPC message of it (in a JSON
// body, or in the data of an SSE event) goes through rl. An SSE stream
// reaches the client event by event. What does not parse as JSON-RPC 2.0
// (or holds a key twice) is not relayed: the gateway relays only what it
// read; a request left without such an answer (or whose upstream
// failed: an error status, an answer cut short or silent past the
// bounds) gets a JSON-RPC error instead, so that the client always has an
// answer it can read. It returns why it stopped early, if it did.
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
	// failed answers each request with why, as a JSON-RPC error.
	failed := func(why string, err error) error {
		rl.failed = why
		for _, h := range []string{"Content-Type", "Cache-Control"} {
			w.Header().Del(h)
		}
		g.writeJSON(w, http.StatusOK, rl.missing(), rl.batch)
		return err
	}
	switch {
	case resp.StatusCode >= 300 && len(rl.asked) > 0 && (resp.StatusCode != http.StatusNotFound || resp.Request.Header.Get(sessionHeader) == ""):
		// The upstream's status is not the client's to act on: a 401 or
		// 403 would have it authorise again at the gateway, where its
		// mandate is good; a 400 breaks the session of the MCP Go SDK's
		// client; a 502 says nothing it can show. Each request gets the
		// status as a JSON-RPC error instead; the body is the upstream's
		// text, which the gateway cannot check.
		why := upstreamName(rl.rt) + " answered HTTP " + strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode)
		switch resp.StatusCode {
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			// RFC 9110 §15.6.4, RFC 6585 §4: not served; a stdio
			// server that cannot start a process now says so too.
			rl.unserved = true
			why += ": try again later"
		case http.StatusBadGateway:
			if rl.rt.auth != "" {
				why = upstreamName(rl.rt) + " stopped before answering" // the bridge's word for its process's exit
			}
		}
		return failed(why, errors.New("HTTP "+strconv.Itoa(resp.StatusCode)))
	case resp.StatusCode >= 300:
		// The status is the client's to act on (404 to a request in a
		// session: initialize again; the GET stream's 405: there is none);
		// the body is the upstream's text, which the gateway cannot check.
		w.Header().Del("Content-Type")
		textError(w, "the MCP server "+rl.rt.Name+" answered "+strconv.Itoa(resp.StatusCode)+" "+http.StatusText(resp.StatusCode), resp.StatusCode)
		return nil
	case mt == "application/json":
		w.Header().Del("Content-Type")
		body, err := io.ReadAll(io.LimitReader(resp.Body, g.cfg.MaxResponse+1))
		if err == nil && int64(len(body)) > g.cfg.MaxResponse {
			err = errTooLarge
		}
		if err != nil {
			// Cut short, silent, or too large: nothing of it is relayed.
			return failed(readFailure(rl.rt, err, g.cfg.MaxResponse), err)
		}
		if len(rl.asked) == 0 && len(bytes.TrimSpace(body)) == 0 {
			// Notifications accepted (202) under a JSON Content-Type.
			w.WriteHeader(resp.StatusCode)
			return nil
		}
		if trimmed := bytes.TrimSpace(body); len(trimmed) > 0 && trimmed[0] == '[' && !rl.batch && rl.asked != nil {
			// A batch answers a batch (JSON-RPC 2.0 §6); to one request it
			// is not an answer its client can read.
			g.cfg.Logger.Warn("gateway: the MCP server answered one request with a batch: not relayed", "server", rl.rt.Name)
			return failed(upstreamName(rl.rt)+" answered one request with a batch, which is not an answer to it", errors.New("a batch for one request"))
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
		switch {
		case err != nil:
			g.cfg.Logger.Warn("gateway: the MCP server's stream ended early", "server", rl.rt.Name, "err", err)
			rl.failed = readFailure(rl.rt, err, g.cfg.MaxResponse)
		case !rl.whole():
			rl.failed = upstreamName(rl.rt) + " ended its stream before its answer to this request"
		}
		// The client has the headers (200, an SSE stream): each request
		// left without an answer gets its error as an event of it.
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
		if len(rl.asked) > 0 {
			rl.failed = upstreamName(rl.rt) + " answered with " + strconv.Quote(mt) + ", not JSON or SSE: nothing of it was relayed"
			g.writeJSON(w, http.StatusOK, rl.missing(), rl.batch)
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
	if array = len(trimmed) > 0 && trimmed[0] == '['; array && !rl.batch && rl.asked != nil {
		// A batch answers a batch (JSON-RPC 2.0 §6), not one request.
		g.cfg.Logger.Warn("gateway: the MCP server answered one request with a batch: not relayed", "server", rl.rt.Name)
		return nil, true
	}
	if array {
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
			return errTooLarge
		}
		switch {
		case len(line) == 0:
			if len(fields) == 0 && data == nil {
				size = 0 // the end of a keep-alive comment
				continue
			}
			if err := flush(); err != nil {
				return err
			}
			if rl.whole() {
				// Every request has its answer: MCP has the server end
				// the stream there, and nothing more is waited for.
				return nil
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
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		return errTooLarge
	}
	return sc.Err()
}
