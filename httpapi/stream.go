package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
)

// The live event stream: GET /v1/events (and /v1/alerts, /v1/tasks/{id}/
// events) with Accept: text/event-stream is a server-sent events stream
// (WHATWG HTML §9.2) of the committed events that match the query's
// filters, each as
//
//	id: <log index>
//	event: <event type>
//	data: <the event, as GET /v1/events lists it>
//
// A client that reconnects with Last-Event-ID (or ?after=N) gets what it
// missed from the log, then the live events, without a gap or a repeat.
// type may list several types, separated by commas.
//
// Memory is bounded: each stream buffers at most streamBuffer batches of
// events; a client that falls that far behind is sent an "overflow"
// event naming the last index it was sent, and the stream ends, so that
// it reconnects and catches up from the log.
const (
	maxStreams      = 64
	streamBuffer    = 1024
	streamKeepAlive = 15 * time.Second // a comment line, so proxies keep the stream open
)

// hub fans the committed events out to the streams.
type hub struct {
	mu   sync.Mutex
	subs map[chan []mandate.LoggedEvent]struct{}
}

// Publish hands committed events, in log order, to every open stream,
// without waiting: a stream whose buffer is full is told so and closed.
// Wire it to the store's subscription (sqlite.Store.Subscribe).
func (s *Server) Publish(evs []mandate.LoggedEvent) {
	s.hub.mu.Lock()
	defer s.hub.mu.Unlock()
	for ch := range s.hub.subs {
		select {
		case ch <- evs:
		default:
			delete(s.hub.subs, ch)
			close(ch) // the stream sees it closed and sends "overflow"
		}
	}
}

func (h *hub) subscribe() (chan []mandate.LoggedEvent, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) >= maxStreams {
		return nil, false
	}
	if h.subs == nil {
		h.subs = map[chan []mandate.LoggedEvent]struct{}{}
	}
	ch := make(chan []mandate.LoggedEvent, streamBuffer)
	h.subs[ch] = struct{}{}
	return ch, true
}

func (h *hub) unsubscribe(ch chan []mandate.LoggedEvent) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

// wantsStream says whether r asks for server-sent events.
func wantsStream(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
				return true
			}
		}
	}
	return false
}

// streamEvents serves the stream of events matching f (whose Type may be
// a comma-separated list).
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, f mandate.EventFilter) {
	catchUp := r.URL.Query().Has("after") || !f.Since.IsZero()
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		catchUp = true
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "Last-Event-ID must be a log index, as the stream's id lines give"))
			return
		}
		f.After = n + 1
	}
	if f.Last || f.Limit != 0 || !f.Until.IsZero() {
		writeError(w, r, s.log, mandate.Errorf(mandate.EINVALID, "a stream takes no limit, last or until: it follows the log"))
		return
	}
	types := strings.Split(f.Type, ",")
	if f.Type == "" {
		types = nil
	}
	match := func(e mandate.LoggedEvent) bool {
		return (f.Task == "" || e.Task == f.Task) && (f.Mandate == "" || e.Mandate == f.Mandate) &&
			(f.Agent == "" || e.Agent == f.Agent) && (types == nil || slices.Contains(types, e.Type)) &&
			(f.Since.IsZero() || e.Time >= f.Since.UnixNano())
	}
	ch, ok := s.hub.subscribe()
	if !ok {
		w.Header().Set("Retry-After", "5")
		writeError(w, r, s.log, mandate.Errorf(mandate.EUNAVAILABLE, "%d event streams are open already: try again later", maxStreams))
		return
	}
	defer s.hub.unsubscribe(ch)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	var buf bytes.Buffer
	sent := f.After - 1 // the last index sent
	send := func(evs []mandate.LoggedEvent) bool {
		buf.Reset()
		for _, e := range evs {
			if e.Index <= sent || e.Event == nil {
				continue
			}
			sent = e.Index
			if !match(e) {
				continue
			}
			b, err := json.Marshal(e)
			if err != nil {
				continue
			}
			buf.WriteString("id: " + strconv.FormatInt(e.Index, 10) + "\nevent: " + e.Type + "\ndata: ")
			buf.Write(b) // JSON holds no raw newline
			buf.WriteString("\n\n")
		}
		return s.flush(rc, w, buf.Bytes())
	}
	// Subscribed first, then caught up from the log: the events committed
	// meanwhile come twice, and the second time are skipped (sent).
	if catchUp {
		q := f
		q.Type, q.Limit = "", mandate.MaxEventsPerQuery
		if len(types) == 1 {
			q.Type = types[0]
		}
		for {
			q.After = sent + 1
			evs, err := s.cfg.Audit.Events(r.Context(), q)
			if err != nil {
				s.log.Error("event stream: catching up failed", "err", err)
				return
			}
			if len(evs) > 0 && !send(evs) {
				return
			}
			if len(evs) > 0 {
				sent = max(sent, evs[len(evs)-1].Index)
			}
			if len(evs) < q.Limit {
				break
			}
		}
	} else if !s.flush(rc, w, []byte(": following the audit log\n\n")) {
		return
	}
	keep := time.NewTicker(streamKeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.stopWaits:
			return
		case <-keep.C:
			if !s.flush(rc, w, []byte(": keep-alive\n\n")) {
				return
			}
		case evs, open := <-ch:
			if !open {
				s.flush(rc, w, []byte("event: overflow\ndata: {\"last\":"+strconv.FormatInt(sent, 10)+
					",\"hint\":\"this client fell behind: reconnect with Last-Event-ID to catch up from the log\"}\n\n"))
				return
			}
			if !send(evs) {
				return
			}
		}
	}
}

// flush writes b and flushes it, with a fresh write deadline: a stream
// outlives the server's WriteTimeout, a stuck client does not.
func (s *Server) flush(rc *http.ResponseController, w http.ResponseWriter, b []byte) bool {
	rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if len(b) > 0 {
		if _, err := w.Write(b); err != nil {
			return false
		}
	}
	return rc.Flush() == nil
}
