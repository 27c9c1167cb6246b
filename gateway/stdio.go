package gateway

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// StdioRoute is an MCP server the gateway runs itself, as a child process
// speaking the MCP stdio transport (newline-delimited JSON-RPC on stdin
// and stdout). Each MCP session gets a process of its own, since a stdio
// server serves one client; the process ends with its session.
type StdioRoute struct {
	Name    string
	Command []string // the program and its arguments
	Env     []string // added to the gateway's environment
	Dir     string
	// ToolLabels are the labels policy sees on each tool, as for Route.
	ToolLabels map[string][]string
	// Internal are the rules of internal sends, as for Route.
	Internal map[string]InternalRule
}

// Bounds of a stdio route.
const (
	maxStdioSessions = 64 // processes of one route at once
	// stdioCallMargin: a request's answer is waited for the gateway's
	// CallTimeout and this margin, so that the gateway's own bounds
	// (Config.UpstreamTimeout, CallTimeout) cut a slow call first, with
	// their message, rather than the bridge with an HTTP 504.
	stdioCallMargin = 5 * time.Second
	stdioIdle       = 30 * time.Minute // a session unused this long ends
	maxStdioBacklog = 1000             // server messages waiting for the client's stream
	maxBackoff      = 30 * time.Second
)

// stdioBridge serves one stdio route to the gateway as a Streamable HTTP
// endpoint on loopback, reachable only with a secret the gateway holds:
// the gateway forwards to it as to any upstream.
type stdioBridge struct {
	route StdioRoute
	log   *slog.Logger
	// admit says whether a request of the gateway's, by its flight, may
	// be written to a process (flights.admit), and is called when it was.
	admit  func(flight string) (sent func(), ok bool)
	secret string
	srv    *http.Server
	url    string
	maxMsg int
	// callTimeout bounds the wait for a request's answer: the gateway's
	// CallTimeout and stdioCallMargin.
	callTimeout time.Duration

	// toolsChanged is told of each notifications/tools/list_changed a
	// process writes: the gateway reads its stdout, whether or not a
	// client reads the session's stream.
	toolsChanged func()

	mu       sync.Mutex
	sessions map[string]*stdioSession
	fails    int       // processes in a row that died at once
	until    time.Time // no new process before
	closed   bool
}

type stdioSession struct {
	id   string
	cmd  *exec.Cmd
	in   io.WriteCloser
	done chan struct{} // closed when the process has exited

	stopped atomic.Bool // the bridge ended it (end): its exit is no failure

	mu      sync.Mutex
	waiting map[string]chan []byte // request id → its answer
	backlog chan []byte            // server messages for the GET stream
	used    time.Time
}

func startStdio(r StdioRoute, maxMsg int, callTimeout time.Duration, log *slog.Logger, admit func(flight string) (func(), bool), toolsChanged func()) (*stdioBridge, error) {
	if len(r.Command) == 0 || r.Command[0] == "" {
		return nil, fmt.Errorf("gateway: stdio server %q: no command", r.Name)
	}
	if _, err := exec.LookPath(r.Command[0]); err != nil {
		return nil, fmt.Errorf("gateway: stdio server %q: %w", r.Name, err)
	}
	var raw [32]byte
	rand.Read(raw[:])
	b := &stdioBridge{route: r, log: log.With("server", r.Name), secret: base64.RawURLEncoding.EncodeToString(raw[:]),
		sessions: map[string]*stdioSession{}, maxMsg: maxMsg, callTimeout: callTimeout + stdioCallMargin, admit: admit, toolsChanged: toolsChanged}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("gateway: stdio server %q: %w", r.Name, err)
	}
	b.url = "http://" + ln.Addr().String() + "/"
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
	go b.srv.Serve(ln)
	go b.reap()
	return b, nil
}

// close ends every session's process and stops serving.
func (b *stdioBridge) close() {
	b.mu.Lock()
	b.closed = true
	list := make([]*stdioSession, 0, len(b.sessions))
	for _, s := range b.sessions {
		list = append(list, s)
	}
	b.mu.Unlock()
	for _, s := range list {
		b.end(s)
	}
	b.srv.Close()
}

// reap ends the sessions idle for stdioIdle.
func (b *stdioBridge) reap() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for range t.C {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return
		}
		var idle []*stdioSession
		for _, s := range b.sessions {
			s.mu.Lock()
			if time.Since(s.used) > stdioIdle {
				idle = append(idle, s)
			}
			s.mu.Unlock()
		}
		b.mu.Unlock()
		for _, s := range idle {
			b.end(s)
		}
	}
}

func (b *stdioBridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), []byte("Bearer "+b.secret)) != 1 {
		textError(w, "this endpoint serves the Mandate gateway only", http.StatusUnauthorized)
		return
	}
	id := r.Header.Get(sessionHeader)
	switch r.Method {
	case http.MethodPost:
		b.post(w, r, id)
	case http.MethodGet:
		b.stream(w, r, id)
	case http.MethodDelete:
		if s := b.session(id); s != nil {
			b.end(s)
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		textError(w, "use POST, GET or DELETE", http.StatusMethodNotAllowed)
	}
}

func (b *stdioBridge) session(id string) *stdioSession {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sessions[id]
}

func (b *stdioBridge) post(w http.ResponseWriter, r *http.Request, id string) {
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(b.maxMsg)+1))
	if err != nil || len(body) > b.maxMsg {
		textError(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	msgs, batch, err := parseBody(body)
	if err != nil {
		textError(w, err.Error(), http.StatusBadRequest)
		return
	}
	var s *stdioSession
	if id == "" {
		if !isInitialize(msgs) {
			textError(w, "no session: initialize first", http.StatusBadRequest)
			return
		}
		if s, err = b.spawn(); err != nil {
			// The client, through the gateway, is told it cannot start;
			// the log says why (the command's path, the exec error).
			b.log.Warn("gateway: stdio server not started", "err", err)
			textError(w, "the stdio server "+b.route.Name+" cannot start a process now: try again later", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set(sessionHeader, s.id)
	} else if s = b.session(id); s == nil {
		textError(w, "unknown session", http.StatusNotFound)
		return
	}
	var waits []chan []byte
	var ids []string
	defer func() { // answered or not, nothing waits any more
		s.mu.Lock()
		for _, id := range ids {
			delete(s.waiting, id)
		}
		s.mu.Unlock()
	}()
	s.mu.Lock()
	s.used = time.Now()
	for _, m := range msgs {
		if m.isRequest() {
			if s.waiting[string(m.ID)] != nil {
				s.mu.Unlock()
				textError(w, "a request with id "+string(m.ID)+" is in flight already", http.StatusBadRequest)
				return
			}
			ch := make(chan []byte, 1)
			s.waiting[string(m.ID)] = ch
			waits = append(waits, ch)
			ids = append(ids, string(m.ID))
		}
	}
	s.mu.Unlock()
	// The gateway's request is in flight until it is written to the
	// process: one cut off by a revocation (Gateway.Settle) is not.
	sent, ok := b.admit(r.Header.Get(flightHeader))
	if !ok {
		if id == "" {
			// Its process was started for this request: it goes with it,
			// rather than hold one of the route's places with no client.
			w.Header().Del(sessionHeader)
			b.end(s)
		}
		textError(w, "not admitted: the request was cut off, or is on behalf of nobody", http.StatusForbidden)
		return
	}
	defer sent()
	for _, m := range msgs {
		line, _ := json.Marshal(m)
		if _, err := s.in.Write(append(line, '\n')); err != nil {
			textError(w, "the stdio server has stopped", http.StatusBadGateway)
			return
		}
	}
	sent()
	if len(waits) == 0 {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	timeout := time.NewTimer(b.callTimeout)
	defer timeout.Stop()
	var answers [][]byte
	for _, ch := range waits {
		select {
		case a := <-ch:
			answers = append(answers, a)
		case <-s.done:
			textError(w, "the stdio server stopped before answering", http.StatusBadGateway)
			return
		case <-timeout.C:
			textError(w, "the stdio server did not answer in time", http.StatusGatewayTimeout)
			return
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if batch {
		w.Write(append(append([]byte("["), bytes.Join(answers, []byte(","))...), ']'))
		return
	}
	w.Write(answers[0])
}

// stream is the session's GET stream: the server's own requests and
// notifications, as SSE.
func (b *stdioBridge) stream(w http.ResponseWriter, r *http.Request, id string) {
	s := b.session(id)
	if s == nil {
		textError(w, "unknown session", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	if fl != nil {
		fl.Flush()
	}
	for {
		select {
		case m := <-s.backlog:
			fmt.Fprintf(w, "event: message\ndata: %s\n\n", m)
			if fl != nil {
				fl.Flush()
			}
		case <-s.done:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// spawn starts a process for a new session, unless too many run or the
// last ones died at once (then it waits, doubling the wait each time).
func (b *stdioBridge) spawn() (*stdioSession, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return nil, errors.New("the gateway is stopping")
	case len(b.sessions) >= maxStdioSessions:
		return nil, fmt.Errorf("stdio server %s: %d sessions already; try again later", b.route.Name, maxStdioSessions)
	case time.Now().Before(b.until):
		return nil, fmt.Errorf("stdio server %s keeps exiting at start; next try in %v", b.route.Name, time.Until(b.until).Round(time.Millisecond))
	}
	cmd := exec.Command(b.route.Command[0], b.route.Command[1:]...)
	cmd.Env = append(cmd.Environ(), b.route.Env...)
	cmd.Dir = b.route.Dir
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("stdio server %s: %w", b.route.Name, err)
	}
	var raw [18]byte
	rand.Read(raw[:])
	s := &stdioSession{id: base64.RawURLEncoding.EncodeToString(raw[:]), cmd: cmd, in: in, done: make(chan struct{}),
		waiting: map[string]chan []byte{}, backlog: make(chan []byte, maxStdioBacklog), used: time.Now()}
	b.sessions[s.id] = s
	started := time.Now()
	go b.logStderr(s, errPipe)
	go b.read(s, out)
	go func() {
		err := cmd.Wait()
		// The bridge's books first, then the word that it exited: once
		// done is closed, the session is gone and its exit counted.
		b.mu.Lock()
		delete(b.sessions, s.id)
		if time.Since(started) < time.Second && !s.stopped.Load() {
			b.fails++
			wait := min(time.Duration(1<<min(b.fails, 10))*100*time.Millisecond, maxBackoff)
			b.until = time.Now().Add(wait)
		} else {
			b.fails = 0
		}
		b.mu.Unlock()
		close(s.done)
		b.log.Info("gateway: stdio server exited", "session", s.id[:6], "err", err, "ran", time.Since(started).Round(time.Millisecond))
	}()
	b.log.Info("gateway: stdio server started", "session", s.id[:6], "pid", cmd.Process.Pid)
	return s, nil
}

// read dispatches the process's messages: answers to the requests
// waiting for them, the rest to the session's stream.
func (b *stdioBridge) read(s *stdioSession, out io.Reader) {
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), b.maxMsg)
	for sc.Scan() {
		line := bytes.Clone(bytes.TrimSpace(sc.Bytes()))
		if len(line) == 0 {
			continue
		}
		m, err := parseMessage(line)
		if err != nil {
			b.log.Warn("gateway: stdio server wrote something that is not JSON-RPC", "session", s.id[:6], "err", err)
			continue
		}
		if m.Method == "notifications/tools/list_changed" && b.toolsChanged != nil {
			b.toolsChanged()
		}
		if m.isResponse() {
			s.mu.Lock()
			ch := s.waiting[string(m.ID)]
			delete(s.waiting, string(m.ID))
			s.mu.Unlock()
			if ch != nil {
				ch <- line
				continue
			}
		}
		select {
		case s.backlog <- line:
		default:
			b.log.Warn("gateway: stdio server message dropped: the client is not reading its stream", "session", s.id[:6])
		}
	}
	if err := sc.Err(); err != nil {
		b.log.Warn("gateway: stdio server output unreadable; ending its session", "session", s.id[:6], "err", err)
		b.end(s)
	}
}

// logStderr logs what the process writes to stderr, a line at a time.
func (b *stdioBridge) logStderr(s *stdioSession, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		b.log.Info("gateway: stdio server stderr", "session", s.id[:6], "line", strings.ToValidUTF8(sc.Text(), "?"))
	}
}

// end stops a session's process: stdin closes, and if it has not exited
// within a second it is killed.
func (b *stdioBridge) end(s *stdioSession) {
	s.stopped.Store(true)
	s.in.Close()
	select {
	case <-s.done:
	case <-time.After(time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}
