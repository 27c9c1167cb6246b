package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
)

// sse is one server-sent event.
type sse struct {
	id, event string
	data      mandate.LoggedEvent
}

// openStream opens GET path as an event stream and returns its events.
func openStream(t *testing.T, ts *testServer, path string, hdr map[string]string) (<-chan sse, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", ts.URL+path, nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set("Authorization", "Bearer "+adminToken)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan sse, 64)
	if resp.StatusCode != 200 {
		resp.Body.Close()
		close(out)
		return out, resp
	}
	go func() {
		defer resp.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		var cur sse
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if cur.event != "" {
					out <- cur
				}
				cur = sse{}
			case strings.HasPrefix(line, "id: "):
				cur.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				cur.event = line[7:]
			case strings.HasPrefix(line, "data: "):
				json.Unmarshal([]byte(line[6:]), &cur.data)
			}
		}
	}()
	return out, resp
}

func next(t *testing.T, ch <-chan sse) sse {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("the stream ended")
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10 s")
	}
	return sse{}
}

// GET /v1/events as a server-sent events stream: what was missed comes
// from the log, then live events, filtered by type, without a gap or a
// repeat; a reconnection with Last-Event-ID resumes after it.
func TestEventStream(t *testing.T) {
	ts := newServer(t)
	ts.store.Subscribe(ts.api.Publish)
	ts.addAgent(t, "a", "mcp:crm:*")
	ch, resp := openStream(t, ts, "/v1/events?after=0&type=agent.registered,agent.disabled", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	first := next(t, ch) // from the log
	if first.event != mandate.EventAgentRegistered || first.data.Agent != "spiffe://example.org/agent/a" || first.id == "" {
		t.Fatalf("first: %+v", first)
	}
	ts.addAgent(t, "b", "mcp:crm:*")
	if _, err := ts.client.SetAgentStatus(context.Background(), "b", mandate.AgentDisabled); err != nil {
		t.Fatal(err)
	}
	if e := next(t, ch); e.event != mandate.EventAgentRegistered || e.data.Agent != "spiffe://example.org/agent/b" {
		t.Fatalf("live: %+v", e)
	}
	if e := next(t, ch); e.event != mandate.EventAgentDisabled {
		t.Fatalf("live: %+v", e)
	}
	// Resumed after the first: the two that followed, nothing else.
	again, _ := openStream(t, ts, "/v1/events?type=agent.registered,agent.disabled", map[string]string{"Last-Event-ID": first.id})
	if e := next(t, again); e.data.Agent != "spiffe://example.org/agent/b" || e.event != mandate.EventAgentRegistered {
		t.Fatalf("resumed: %+v", e)
	}
	if e := next(t, again); e.event != mandate.EventAgentDisabled {
		t.Fatalf("resumed: %+v", e)
	}
	// A task's stream sees its task only.
	tasks, _ := openStream(t, ts, "/v1/tasks/t_none/events", nil)
	ts.addAgent(t, "c", "mcp:crm:*")
	select {
	case e := <-tasks:
		t.Errorf("another task's event: %+v", e)
	case <-time.After(100 * time.Millisecond):
	}
	// A client that falls behind is told so, and the stream ends.
	slow, _ := openStream(t, ts, "/v1/events", nil)
	for i := range 20_000 {
		ts.api.Publish([]mandate.LoggedEvent{{Index: int64(1000 + i), Event: &mandate.Event{Type: "agent.registered"}}})
	}
	overflow := false
	for e := range slow {
		overflow = overflow || e.event == "overflow"
	}
	if !overflow {
		t.Error("a client 20,000 batches behind was not told it overflowed")
	}
	for _, tt := range []struct {
		path string
		hdr  map[string]string
		code int
	}{
		{"/v1/events?limit=5", nil, 400},
		{"/v1/events", map[string]string{"Last-Event-ID": "x"}, 400},
		{"/v1/events", map[string]string{"Authorization": "Bearer wrong-admin-token-0123"}, 401},
	} {
		if _, resp := openStream(t, ts, tt.path, tt.hdr); resp.StatusCode != tt.code {
			t.Errorf("%s %v: %d, want %d", tt.path, tt.hdr, resp.StatusCode, tt.code)
		}
	}
}
