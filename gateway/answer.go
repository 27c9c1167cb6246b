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
// instead, or nil to send it as it is. An SSE stream reaches the client
// event by event. It returns why it stopped early, if it did.
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
		body, err := io.ReadAll(io.LimitReader(resp.Body, g.cfg.MaxResponse+1))
		if err != nil {
			w.WriteHeader(http.StatusBadGateway)
			return err
		}
		if int64(len(body)) > g.cfg.MaxResponse {
			w.Header().Del("Content-Type")
			http.Error(w, "the MCP server's answer is over the gateway's limit", http.StatusBadGateway)
			return errors.New("answer over MaxResponse")
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(resp.StatusCode)
		w.Write(rewrite(body, hook))
		return nil
	case mt == "text/event-stream":
		streaming(w, resp)
		w.WriteHeader(resp.StatusCode)
		return g.events(w, resp.Body, hook)
	default:
		copyResponse(w, resp)
		return nil
	}
}

// rewrite applies hook to the message, or each message of the batch, in
// data; data that is not JSON-RPC is returned as it is.
func rewrite(data []byte, hook func(*message) []byte) []byte {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var raws []json.RawMessage
		if json.Unmarshal(trimmed, &raws) != nil {
			return data
		}
		changed := false
		for i, r := range raws {
			var m message
			if json.Unmarshal(r, &m) != nil {
				continue
			}
			if out := hook(&m); out != nil {
				raws[i], changed = out, true
			}
		}
		if !changed {
			return data
		}
		out, _ := json.Marshal(raws)
		return out
	}
	var m message
	if json.Unmarshal(trimmed, &m) != nil {
		return data
	}
	if out := hook(&m); out != nil {
		return out
	}
	return data
}

// events copies an SSE stream (WHATWG HTML §9.2), rewriting the data of
// each event with rewrite, and flushing after each event.
func (g *Gateway) events(w http.ResponseWriter, r io.Reader, hook func(*message) []byte) error {
	fl, _ := w.(http.Flusher)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), int(min(g.cfg.MaxResponse, 1<<30)))
	var fields [][]byte // the event's lines other than data
	var data [][]byte
	flush := func() error {
		var b bytes.Buffer
		for _, f := range fields {
			b.Write(f)
			b.WriteByte('\n')
		}
		if data != nil {
			d := rewrite(bytes.Join(data, []byte("\n")), hook)
			for _, line := range bytes.Split(d, []byte("\n")) {
				b.WriteString("data: ")
				b.Write(line)
				b.WriteByte('\n')
			}
		}
		b.WriteByte('\n')
		fields, data = fields[:0], nil
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
		default:
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
