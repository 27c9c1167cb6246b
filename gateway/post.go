package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/secret"
	"github.com/mandatehq/mandate/policy"
)

// verdict is the gateway's decision on one request message.
type verdict struct {
	deny     *rpcError
	event    *mandate.Event // the decision (deny) or tool.call (allow) event
	list     bool           // a tools/list whose answer is filtered
	call     bool           // a tools/call whose answer is summarised
	view     string         // a list or read whose answer is filtered by scope (resources.go)
	approval string         // the approval the call uses, with its event
	labels   []string       // a tools/call's labels, as policy saw them
	init     bool           // an initialize whose instructions are pinned
	// listFirst: the tools/list asks for the first page (no cursor);
	// toolsSeen: the server's tool generation when it was decided.
	listFirst bool
	toolsSeen uint64
}

// post handles a client's POST: one JSON-RPC message or a batch.
func (g *Gateway) post(w http.ResponseWriter, r *http.Request, rt *route, c *mandate.Claims) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, g.cfg.MaxBody)) // w itself: it closes the connection after a body too large
	w = g.boundWrite(w)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		msg := "the body is over the gateway's limit of " + itoa(g.cfg.MaxBody) + " bytes"
		g.refuseRequest(r.Context(), rt, c, "post", "too-large", http.StatusRequestEntityTooLarge, msg)
		writeRPC(w, http.StatusRequestEntityTooLarge, errorResponse(nil, rpcError{Code: CodeInvalidRequest, Message: msg}))
		return
	} else if err != nil {
		return // the client went away
	}
	msgs, batch, err := parseBody(body)
	if err != nil {
		code := CodeInvalidRequest
		if !json.Valid(body) {
			code = CodeParseError
		}
		// The parser's own words about the client's message: no cause of
		// the gateway's in them.
		g.refuseRequest(r.Context(), rt, c, "post", "malformed", http.StatusBadRequest, err.Error())
		writeRPC(w, http.StatusBadRequest, errorResponse(nil, rpcError{Code: code, Message: err.Error()}))
		return
	}
	for _, m := range msgs {
		if m.isNotification() && !strings.HasPrefix(m.Method, "notifications/") {
			// A notification gets no answer and no decision: only MCP's
			// own notifications pass.
			msg := "method " + m.Method + " cannot be sent as a notification: give it an id"
			g.refuseRequest(r.Context(), rt, c, m.Method, "notification", http.StatusBadRequest, msg)
			writeRPC(w, http.StatusBadRequest, errorResponse(nil, rpcError{Code: CodeInvalidRequest, Message: msg}))
			return
		}
	}
	// The task's state, which policy reads and the calls add to: held, or
	// room for a new task's.
	if te := g.admitTask(r.Context(), rt, c, "post"); te != nil {
		g.refuseAll(w, te.status, msgs, batch, rpcError{Code: te.code, Message: te.msg})
		return
	}
	// A session is counted against the registered agent from before it
	// is opened, so that concurrent initializes cannot pass the quota.
	owner, reserved := mandate.RegisteredAncestor(c.ClientID), false
	if r.Header.Get(sessionHeader) == "" && isInitialize(msgs) {
		if full := g.sessions.reserve(owner, g.cfg.Now()); full != reservedOK {
			msg := "agent " + owner + " and its sub-agents have " + itoa(maxSessionsPerAgent) +
				" MCP sessions with requests in flight: wait for one to end, or end one (DELETE)"
			if full == gatewayFull {
				msg = "the gateway holds as many MCP sessions with requests in flight as it can: try again shortly"
			}
			// Audited, as any refusal: an agent that keeps its sessions
			// busy and asks for more is worth a look.
			g.refuseRequest(r.Context(), rt, c, "initialize", "session-quota", http.StatusTooManyRequests, msg)
			writeRPC(w, http.StatusTooManyRequests, errorResponse(nil, rpcError{Code: CodeDenied, Message: msg}))
			return
		}
		reserved = true
		defer func() {
			if reserved {
				g.sessions.release(owner)
			}
		}()
	}
	ctx := r.Context()
	verdicts := make([]verdict, len(msgs))
	denied := false
	for i, m := range msgs {
		if m.isRequest() {
			verdicts[i] = g.decide(r, rt, c, m, batch)
			denied = denied || verdicts[i].deny != nil
		}
	}
	// A call decided before the server last said its tools changed (one
	// held for a person's approval waited up to ApprovalHold) is checked
	// again before it goes on record: refused here, it spends no approval.
	if !denied && g.recheckTools(r, rt, c, msgs, verdicts) {
		for i, m := range msgs {
			if v := verdicts[i]; v.call && v.deny != nil {
				verdicts[i] = g.denied(c, m, rt, v.event.Resource, *v.deny, nil)
			}
		}
		denied = true
	}
	var events []*mandate.Event
	approved := -1
	for i, v := range verdicts {
		switch {
		case v.event == nil || (v.deny == nil && denied):
		case v.approval != "" && !denied:
			approved = i // its event goes with the use of the approval
		default:
			events = append(events, v.event)
		}
	}
	if denied {
		// Nothing of a message with a denied request is forwarded: a
		// batch goes through whole or not at all.
		if err := g.cfg.Events.Append(ctx, events...); err != nil {
			g.logError("gateway: denial not audited", err, "server", rt.Name)
		}
		g.refuse(w, msgs, verdicts, batch)
		return
	}
	// Write-ahead: the calls are on record before they reach the server;
	// an approved call's record and the use of its approval are one
	// transaction, so that the approval allows that one call.
	err = g.cfg.Events.Append(ctx, events...)
	if err == nil && approved >= 0 {
		v := verdicts[approved]
		if err = g.approvalUser.UseApproval(ctx, v.approval, v.event); mandate.ErrorCode(err) == mandate.ECONFLICT {
			// Another call took it meanwhile: this one is refused, and
			// the refusal audited, as any.
			verdicts[approved] = g.denied(c, msgs[approved], rt, v.event.Resource,
				rpcError{Code: CodeDenied, Message: "approval " + v.approval + " was used already: it allows one call"}, nil)
			if err := g.cfg.Events.Append(ctx, verdicts[approved].event); err != nil {
				g.logError("gateway: denial not audited", err, "server", rt.Name)
			}
			g.refuse(w, msgs, verdicts, batch)
			return
		}
	}
	if err != nil {
		g.logError("gateway: call not audited, so not forwarded", err, "server", rt.Name)
		unavailable := rpcError{Code: CodeUnavailable, Message: "the gateway could not record the call in its audit log, so it was not forwarded: try again later"}
		for i, m := range msgs {
			if m.isRequest() {
				verdicts[i].deny = &unavailable
			}
		}
		g.refuse(w, msgs, verdicts, batch)
		return
	}
	// The calls are on record: the task has made them, whatever becomes
	// of them from here on (so the log says, which Restore reads).
	for i := range msgs {
		if verdicts[i].call {
			labels := verdicts[i].labels
			g.tasks.record(c.Task, dataLabels(labels), callCounters(labels), g.cfg.Now())
			if n, ok := verdicts[i].event.Details["args_bytes"].(int); ok {
				g.tasks.add(c.Task, "args_bytes", int64(n), g.cfg.Now())
			}
		}
	}
	// The server may have said its tools changed while the calls were
	// being recorded: each is checked again, on what it lists now. A call
	// refused now is on record, so its outcome is a tool.result.
	if g.recheckTools(r, rt, c, msgs, verdicts) {
		var results []*mandate.Event
		for i := range msgs {
			if v := verdicts[i]; v.call {
				why := notWhole.Message
				if v.deny != nil {
					why = v.deny.Message
				}
				results = append(results, unsent(v.event, mandate.OutcomeDeny, why, true))
			}
		}
		g.recordResults(ctx, rt, results)
		g.refuse(w, msgs, verdicts, batch)
		return
	}
	// Drain waits for this request from here: the client may have read
	// the answer before the handler records its summary.
	g.writing.Add(1)
	defer g.writing.Done()
	// What the gateway decided on is what the server reads: its own
	// encoding of the messages, not the client's bytes.
	resp, end, err := g.forward(r, rt, c, encode(msgs, batch))
	if err != nil {
		g.notDelivered(ctx, w, rt, msgs, verdicts, batch, err)
		return
	}
	defer end()
	defer resp.Body.Close()
	if sid := resp.Header.Get(sessionHeader); sid != "" && resp.StatusCode < 300 && reserved {
		g.sessions.bind(sid, c.Task, c.ClientID, owner, rt.Name, g.cfg.Now())
		reserved = false
	}
	// Every message of the answer is read: a response to a request this
	// POST did not carry (another one of the client's, say a tools/list
	// in flight elsewhere) is not relayed, so that no answer escapes its
	// filter; a request left without a well-formed answer gets an error.
	rl := &relay{rt: rt, batch: batch}
	watch := map[string]*verdict{}
	for i, m := range msgs {
		if m.isRequest() {
			rl.asked = append(rl.asked, m.ID)
		}
		if verdicts[i].list || verdicts[i].call || verdicts[i].view != "" || verdicts[i].init {
			watch[idKey(m.ID)] = &verdicts[i]
		}
	}
	start := g.cfg.Now()
	rl.hook = func(m *message) []byte {
		v := watch[idKey(m.ID)]
		switch {
		case v == nil || !m.isResponse():
			return nil
		case v.list:
			return g.filterTools(ctx, m, c, rt, v)
		case v.view != "":
			return g.filterView(m, c, rt, v.view)
		case v.init:
			return g.filterInstructions(ctx, m, c, rt)
		case v.call:
			v.event = resultEvent(v.event, m, g.cfg.Now().Sub(start))
			g.tasks.add(c.Task, "result_bytes", int64(len(m.Result)), g.cfg.Now())
			if v.event.Details["result_secrets"] != nil {
				// The task has now seen a secret: policy may keep it in.
				g.tasks.record(c.Task, []string{"secret"}, nil, g.cfg.Now())
			}
		}
		return nil
	}
	results := g.answer(w, resp, rl)
	if results != nil {
		g.cfg.Logger.Warn("gateway: answer not read whole", "server", rt.Name, "err", results)
	}
	var done []*mandate.Event
	for _, v := range watch {
		switch {
		case !v.call:
		case v.event.Type == mandate.EventToolResult:
			done = append(done, v.event)
		default:
			// Forwarded, and no answer the gateway could check came back
			// (an error status, a malformed answer, a stream cut short):
			// the call's outcome is on record all the same.
			why := rl.failed
			if why == "" {
				why = noCheckableAnswer
			}
			res := unsent(v.event, mandate.OutcomeError, why, false)
			res.Details["ms"] = g.cfg.Now().Sub(start).Milliseconds()
			done = append(done, res)
		}
	}
	g.recordResults(ctx, rt, done)
}

// notDelivered answers a POST whose messages forward did not deliver, and
// records the outcome of each call it carried (a tool.result): refused,
// as its mandate was no longer valid once the call was on record (a
// revocation, a disabled agent); cut off by a revocation while being
// sent; or no answer from the upstream (down, silent, the connection
// closed, a redirect). Each request gets a JSON-RPC error its client can
// show; a POST of notifications alone gets an HTTP error.
func (g *Gateway) notDelivered(ctx context.Context, w http.ResponseWriter, rt *route, msgs []*message, verdicts []verdict, batch bool, err error) {
	var nv *notValidError
	var redirected *redirectError
	var se *sendError
	code := CodeDenied
	outcome, why := mandate.OutcomeError, "not forwarded whole: "+errStopped.Error()
	unforwarded := true
	switch {
	case errors.As(err, &nv):
		outcome, why = mandate.OutcomeDeny, "not forwarded: "+nv.Error()
	case errors.Is(err, errStopped):
		// Cut off: the upstream never got it whole.
	case !hasRequest(msgs):
		g.upstreamError(w, rt, err)
		return
	case errors.As(err, &redirected):
		// The requests did reach the server.
		g.cfg.Logger.Warn("gateway: the MCP server redirected: not followed", "server", rt.Name, "status", redirected.status, "location", redirected.location)
		code, unforwarded = CodeBadAnswer, false
		why = "the MCP server " + rt.Name + " answered with a redirect (HTTP " + itoa(int64(redirected.status)) + "), which the gateway does not follow or relay"
	default:
		g.cfg.Logger.Warn("gateway: the MCP server did not answer", "server", rt.Name, "err", err)
		code, why = noAnswer(rt, err)
		unforwarded = !errors.As(err, &se) || !se.sent
	}
	var results []*mandate.Event
	for i, m := range msgs {
		if !m.isRequest() {
			continue
		}
		verdicts[i].deny = &rpcError{Code: code, Message: why}
		if v := verdicts[i]; v.call && v.event != nil {
			results = append(results, unsent(v.event, outcome, why, unforwarded))
		}
	}
	g.recordResults(ctx, rt, results)
	g.refuse(w, msgs, verdicts, batch)
}

// unsent is the tool.result of a call on record (its tool.call event)
// that was not forwarded whole: outcome and why; unforwarded says that
// nothing of it left the gateway.
func unsent(call *mandate.Event, outcome, why string, unforwarded bool) *mandate.Event {
	res := *call
	res.Type, res.Outcome, res.Reason = mandate.EventToolResult, outcome, mandate.ClipReason(why)
	res.Details = map[string]any{}
	if id := call.Details["rpc_id"]; id != nil {
		res.Details["rpc_id"] = id
	}
	if unforwarded {
		res.Details["forwarded"] = false
	}
	return &res
}

// recheckTools checks again the tool of each call decided before the
// server last said its tools changed (the decision was made before a
// wait: for a person's approval, for the audit log; the call is checked
// again before it goes): on a new list, which the gateway asks for
// itself. It sets the deny of each call whose tool may not be used now,
// and reports whether there was one.
func (g *Gateway) recheckTools(r *http.Request, rt *route, c *mandate.Claims, msgs []*message, verdicts []verdict) bool {
	gen := g.pins.generation(rt.Name)
	refused := false
	for i, m := range msgs {
		if !verdicts[i].call || verdicts[i].toolsSeen == gen {
			continue
		}
		ok, why := g.toolUsable(r.Context(), rt, toolName(m))
		if !ok && g.discover(r, rt, c) {
			ok, why = g.toolUsable(r.Context(), rt, toolName(m))
		}
		if !ok {
			verdicts[i].deny, refused = &rpcError{Code: CodeDenied, Message: why}, true
			continue
		}
		verdicts[i].toolsSeen = gen // checked on what the server lists since gen
	}
	return refused
}

// maxResultWriters bounds the results being recorded in the background.
const maxResultWriters = 1024

// recordResults appends the tool.result events of answered calls. The
// answer is already the client's, so the client need not wait for its
// summary to reach the disk: it is written in the background, unless too
// many are already, in which case the handler waits (bounded memory).
func (g *Gateway) recordResults(ctx context.Context, rt *route, evs []*mandate.Event) {
	if len(evs) == 0 {
		return
	}
	write := func() {
		if err := g.cfg.Events.Append(context.WithoutCancel(ctx), evs...); err != nil {
			g.logError("gateway: tool results not audited", err, "server", rt.Name)
		}
	}
	select {
	case g.resultWriters <- struct{}{}:
		g.writing.Add(1)
		go func() {
			defer func() { <-g.resultWriters; g.writing.Done() }()
			write()
		}()
	default:
		write()
	}
}

// Drain waits until the tool.result events of the calls forwarded so far
// are written (some are written in the background): call it after the
// HTTP server has shut down, before the event log closes.
func (g *Gateway) Drain() { g.writing.Wait() }

// toolName is the tool a tools/call names.
func toolName(m *message) string {
	var p struct {
		Name string `json:"name"`
	}
	json.Unmarshal(m.Params, &p)
	return p.Name
}

func hasRequest(msgs []*message) bool {
	for _, m := range msgs {
		if m.isRequest() {
			return true
		}
	}
	return false
}

func isInitialize(msgs []*message) bool {
	for _, m := range msgs {
		if m.Method == "initialize" || m.Method == "server/discover" {
			return true
		}
	}
	return false
}

// notWhole is the error of a request not forwarded because another one
// of its batch was refused.
var notWhole = rpcError{Code: CodeDenied, Message: "not forwarded: another request of this batch was denied, and a batch goes through whole or not at all"}

// refuse answers a POST none of whose messages is forwarded: each request
// gets its own error, those not denied themselves the reason why.
func (g *Gateway) refuse(w http.ResponseWriter, msgs []*message, verdicts []verdict, batch bool) {
	var out [][]byte
	for i, m := range msgs {
		if !m.isRequest() {
			continue
		}
		e := verdicts[i].deny
		if e == nil {
			e = &notWhole
		}
		out = append(out, errorResponse(m.ID, *e))
	}
	switch {
	case len(out) == 0:
		w.WriteHeader(http.StatusAccepted)
	case !batch:
		writeRPC(w, http.StatusOK, out[0])
	default:
		writeRPC(w, http.StatusOK, append(append([]byte("["), bytes.Join(out, []byte(","))...), ']'))
	}
}

// refuseAll answers a POST none of whose messages is decided, with status
// and e for each request.
func (g *Gateway) refuseAll(w http.ResponseWriter, status int, msgs []*message, batch bool, e rpcError) {
	var out [][]byte
	for _, m := range msgs {
		if m.isRequest() {
			out = append(out, errorResponse(m.ID, e))
		}
	}
	switch {
	case len(out) == 0:
		writeRPC(w, status, errorResponse(nil, e))
	case !batch:
		writeRPC(w, status, out[0])
	default:
		writeRPC(w, status, append(append([]byte("["), bytes.Join(out, []byte(","))...), ']'))
	}
}

func writeRPC(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

// decide decides one request message.
func (g *Gateway) decide(r *http.Request, rt *route, c *mandate.Claims, m *message, batch bool) verdict {
	ctx := r.Context()
	var p struct {
		Name      string          `json:"name"`
		URI       string          `json:"uri"`
		Cursor    string          `json:"cursor"`
		Arguments json.RawMessage `json:"arguments"`
		Ref       struct {
			Type string `json:"type"`
			Name string `json:"name"`
			URI  string `json:"uri"`
		} `json:"ref"`
	}
	if len(m.Params) > 0 && json.Unmarshal(m.Params, &p) != nil {
		return g.denied(c, m, rt, "mcp:"+rt.Name, rpcError{Code: CodeInvalidRequest, Message: "params must be an object"}, nil)
	}
	resource := "mcp:" + rt.Name
	gen := g.pins.generation(rt.Name) // before the tools are checked: a change after it is seen
	req, err := g.request(ctx, rt, c)
	if err != nil {
		return g.denied(c, m, rt, resource, rpcError{Code: CodeUnavailable, Message: mandate.ErrorMessage(err)}, nil)
	}
	var secrets map[string]any // found in a call's arguments
	var own []string           // the labels of what the call carries (not of its task)
	view := ""
	// needs is the scope a request needs, covered by a single scope of
	// the mandate (a concrete request is matched, a pattern covered).
	needs := func(sc string) *verdict {
		scopes, err := c.Scopes()
		need, perr := mandate.ParseScope(sc)
		if err != nil || perr != nil || !scopes.Covers(mandate.ScopeSet{need}) {
			v := g.denied(c, m, rt, sc, rpcError{Code: CodeDenied, cause: causeScope, Message: "the mandate does not allow " + sc + ": its scope is " + c.Scope}, nil)
			return &v
		}
		return nil
	}
	switch m.Method {
	case "initialize", "server/discover":
		return verdict{init: true} // its instructions are pinned
	case "ping", "logging/setLevel":
		return verdict{}
	case "tools/list":
		req.Action = policy.ActionListTools
	case "tools/call":
		resource += ":" + p.Name
		scopes, err := c.Scopes()
		if err != nil || !scopes.Allows(resource) {
			return g.denied(c, m, rt, resource, rpcError{Code: CodeDenied, cause: causeScope,
				Message: "the mandate does not allow " + resource + ": its scope is " + c.Scope}, nil)
		}
		if ok, why := g.toolUsable(ctx, rt, p.Name); !ok && g.discover(r, rt, c) {
			// A tool called before any client listed it: the gateway lists
			// the server's tools itself, pins what it sees, and asks again.
			ok, why = g.toolUsable(ctx, rt, p.Name)
			if !ok {
				return g.denied(c, m, rt, resource, rpcError{Code: CodeDenied, Message: why}, nil)
			}
		} else if !ok {
			return g.denied(c, m, rt, resource, rpcError{Code: CodeDenied, Message: why}, nil)
		}
		req.Action, req.Tool = policy.ActionCallTool, p.Name
		secrets = findCallSecrets(m) // all that reaches the server: arguments, _meta, anything else, the id
		own = secretLabels(secrets)
		req.Labels = append(req.Labels, own...)
		if len(p.Arguments) > 0 && string(p.Arguments) != "null" {
			dec := json.NewDecoder(bytes.NewReader(p.Arguments))
			dec.UseNumber()
			if err := dec.Decode(&req.Args); err != nil {
				return g.denied(c, m, rt, resource, rpcError{Code: CodeInvalidRequest, Message: "arguments must be an object"}, nil)
			}
		}
		// The tool's labels, for this call: a send is internal where the
		// tool's internal rule says so of these arguments.
		req.ToolLabels = rt.callLabels(p.Name, req.Args)
	case "resources/list", "resources/templates/list":
		req.Action = policy.ActionReadResource
		view = map[string]string{"resources/list": viewResources, "resources/templates/list": viewTemplates}[m.Method]
	case "prompts/list":
		req.Action, view = policy.ActionGetPrompt, viewPrompts
	case "resources/read", "resources/subscribe", "resources/unsubscribe":
		// The content of a resource, or word of its changes: a scope
		// covering it. Ending a subscription only takes away, and needs
		// none. The server is sent the URI the scope was checked on.
		uri, e := resourceURI(p.URI)
		if e != nil {
			return g.denied(c, m, rt, resource, *e, nil)
		}
		resource += ":resource:" + uri
		if m.Method != "resources/unsubscribe" {
			if v := needs(resource); v != nil {
				return *v
			}
		}
		setParams(m, map[string]any{"uri": uri})
		req.Action, req.Resource = policy.ActionReadResource, uri
		if m.Method == "resources/read" {
			view = viewRead
		}
	case "prompts/get":
		if p.Name == "" {
			return g.denied(c, m, rt, resource, rpcError{Code: CodeInvalidRequest, Message: "params.name is required"}, nil)
		}
		resource += ":prompt:" + p.Name
		if v := needs(resource); v != nil {
			return *v
		}
		setParams(m, map[string]any{"name": p.Name})
		req.Action, req.Resource = policy.ActionGetPrompt, p.Name
	case "completion/complete":
		// Completions reveal what exists: the values of a prompt's
		// arguments, or the names a resource template expands to. So they
		// need the scope of the prompt, or one covering every URI the
		// template can expand to.
		switch p.Ref.Type {
		case "ref/prompt":
			resource += ":prompt:" + p.Ref.Name
			if v := needs(resource); v != nil {
				return *v
			}
			setParams(m, map[string]any{"ref": map[string]string{"type": p.Ref.Type, "name": p.Ref.Name}})
			req.Action, req.Resource = policy.ActionGetPrompt, p.Ref.Name
		case "ref/resource":
			sc, ok := templateScope(rt.Name, p.Ref.URI)
			if !ok {
				return g.denied(c, m, rt, resource, rpcError{Code: CodeDenied, Message: "resource template " + p.Ref.URI + " refused: its literal part is not a URI the gateway can match"}, nil)
			}
			resource = sc.String()
			if v := needs(resource); v != nil {
				return *v
			}
			setParams(m, map[string]any{"ref": map[string]string{"type": p.Ref.Type, "uri": p.Ref.URI}})
			req.Action, req.Resource = policy.ActionReadResource, p.Ref.URI
		default:
			return g.denied(c, m, rt, resource, rpcError{Code: CodeInvalidRequest, Message: "params.ref.type must be ref/prompt or ref/resource"}, nil)
		}
	default:
		return g.denied(c, m, rt, resource, rpcError{Code: CodeMethodNotFound,
			Message: "method " + m.Method + " is not allowed through the gateway"}, nil)
	}
	d := g.cfg.Policy.Decide(ctx, req)
	held := ""
	if d.Allow && !d.NeedsApproval && m.Method == "tools/call" {
		// The monitor asks a person to look at the rest of the task.
		if held = g.held(c); held != "" {
			d.NeedsApproval = true
		}
	}
	// A call refused from here on was an attempt at what it asked: the
	// monitor reads where it sent and what (an attempt counts).
	attempt := func(v verdict) verdict {
		if secrets != nil {
			v.event.Details["arg_secrets"] = secrets
		}
		if labels := req.ToolLabels; len(labels) > 0 {
			v.event.Details["tool_labels"] = labels
		}
		return v
	}
	switch {
	case !d.Allow:
		why := strings.Join(d.Reasons, "; ")
		if len(d.Policies) > 0 {
			why = "policy " + strings.Join(d.Policies, ", ") + ": " + why
		}
		return attempt(g.denied(c, m, rt, resource, rpcError{Code: CodeDenied, Message: "denied: " + why, cause: g.policyCause(ctx, req, own),
			Data: map[string]any{"policies": d.Policies, "policy_set": d.SetHash}}, &d))
	}
	v := verdict{list: m.Method == "tools/list", call: m.Method == "tools/call", view: view, labels: req.ToolLabels, listFirst: p.Cursor == "", toolsSeen: gen}
	if d.NeedsApproval {
		// The call waits for a person: held here until decided, or for
		// ApprovalHold, after which the client is told to call again.
		if m.Method != "tools/call" || batch {
			why := "policy " + strings.Join(d.Policies, ", ") + " requires a person's approval"
			if held != "" {
				why = held + "; a person must approve the rest of this task"
			}
			return attempt(g.denied(c, m, rt, resource, rpcError{Code: CodeDenied,
				Message: "denied: " + why + ", which the gateway can wait for only for a tools/call sent alone",
				Data:    map[string]any{"policies": d.Policies, "policy_set": d.SetHash}}, &d))
		}
		ap, e := g.approve(ctx, rt, c, heldCall{resource: resource, tool: p.Name, args: p.Arguments, decision: d,
			labels: req.ToolLabels, secrets: secrets, hold: held})
		if e != nil {
			if e.Code == CodeApprovalPending {
				return verdict{deny: e} // asked and recorded already: no decision event yet
			}
			return attempt(g.denied(c, m, rt, resource, *e, &d))
		}
		v.approval = ap.ID
	}
	if v.call {
		details := map[string]any{"policy_set": d.SetHash, "policies": d.Policies, "args_bytes": len(p.Arguments), "rpc_id": secret.Mask(string(m.ID))}
		if v.approval != "" {
			details["approval"] = v.approval
		}
		if labels := req.ToolLabels; len(labels) > 0 {
			details["tool_labels"] = labels // for the monitor
		}
		if secrets != nil {
			details["arg_secrets"] = secrets
		}
		v.event = g.event(mandate.EventToolCall, c, m.Method, resource, mandate.OutcomeOK, "", details)
	}
	return v
}

// held says why the monitor asks that the rest of c's task wait for a
// person (Config.Hold), or "".
func (g *Gateway) held(c *mandate.Claims) string {
	if g.cfg.Hold == nil {
		return ""
	}
	return g.cfg.Hold(c.Task)
}

// denied is the verdict of a refused request, with its decision event.
func (g *Gateway) denied(c *mandate.Claims, m *message, rt *route, resource string, e rpcError, d *policy.Decision) verdict {
	g.tasks.record(c.Task, nil, []string{"denials"}, g.cfg.Now())
	details := map[string]any{"rpc_error": e.Code}
	if d != nil {
		details = d.AuditDetails()
		details["rpc_error"] = e.Code
	}
	if e.cause != "" {
		details["cause"] = e.cause
	}
	return verdict{deny: &e, event: g.event(mandate.EventDecision, c, m.Method, resource, mandate.OutcomeDeny, e.Message, details)}
}

// event is an audit event of the gateway about the holder of c. Its
// action, resource and reason may hold what a caller sent (a tool's name,
// a path, a method): they are bounded, and any secret in them masked.
func (g *Gateway) event(typ string, c *mandate.Claims, action, resource, outcome, reason string, details map[string]any) *mandate.Event {
	return &mandate.Event{
		V: mandate.EventVersion, Time: g.cfg.Now().UnixNano(), Type: typ,
		Task: c.Task, Mandate: c.ID, Parent: c.Parent, Agent: c.ClientID, Chain: c.Actor.Chain(), Subject: c.Subject,
		Action: clipText(secret.Mask(action), maxEventAction), Resource: clipText(secret.Mask(resource), mandate.MaxScopeLen),
		Outcome: outcome, Reason: mandate.ClipReason(secret.Mask(reason)), Details: details,
	}
}

// maxEventAction bounds an event's action (a method, as a client named
// it): no method MCP defines is near it.
const maxEventAction = 128

// clipText cuts s to at most n bytes, on a rune, "…" marking a cut: what
// is longer than any scope (or method) can be is refused, never allowed,
// and needs no more in the log.
func clipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// request is the policy request of a call by the holder of c.
func (g *Gateway) request(ctx context.Context, rt *route, c *mandate.Claims) (policy.Request, error) {
	reg := mandate.RegisteredAncestor(c.ClientID)
	req := policy.Request{
		Subject: c.Subject, Chain: c.Actor.Chain(), Task: c.Task, Server: rt.Name,
		DPoP: c.Confirm != nil, Time: g.cfg.Now(),
		Agent: policy.AgentInfo{ID: c.ClientID, Registered: reg, Ephemeral: reg != c.ClientID},
	}
	// What the task has done so far, across its agents.
	req.Labels, req.History = g.tasks.get(c.Task, req.Time)
	if g.cfg.Counters != nil {
		// What the gateway does not see: the monitor counts delegations.
		for k, v := range g.cfg.Counters(c.Task) {
			if req.History == nil {
				req.History = map[string]int64{}
			}
			req.History[k] += v
		}
	}
	if g.cfg.Risk != nil {
		req.Risk = g.cfg.Risk(c.Task, c.ClientID)
	}
	if g.cfg.Agents != nil {
		a, err := g.cfg.Agents.Agent(ctx, reg)
		if err != nil {
			// Policy must not decide on an agent without its labels (a
			// forbid on a label would not apply): refuse instead. The
			// caller is told what failed, the log why.
			g.cfg.Logger.ErrorContext(ctx, "gateway: agent lookup failed", "agent", reg, "err", err)
			return req, mandate.Wrapf(err, mandate.ErrorCode(err), "the gateway cannot look up agent %s: %s", reg, mandate.ErrorMessage(err))
		}
		req.Agent.Name, req.Agent.Owner, req.Agent.Labels = a.Name, a.Owner, a.Labels
	}
	return req, nil
}

// resultEvent turns the tool.call event of a call into its tool.result:
// whether it failed, how large the answer was, how long it took.
func resultEvent(call *mandate.Event, m *message, took time.Duration) *mandate.Event {
	ev := *call
	ev.Type, ev.Reason = mandate.EventToolResult, ""
	ev.Details = map[string]any{"rpc_id": call.Details["rpc_id"], "result_bytes": len(m.Result), "ms": took.Milliseconds()}
	var r struct {
		IsError bool `json:"isError"`
	}
	switch {
	case len(m.Error) > 0:
		ev.Outcome = mandate.OutcomeError
		ev.Details["rpc_error_bytes"] = len(m.Error)
	case json.Unmarshal(m.Result, &r) == nil && r.IsError:
		ev.Outcome = mandate.OutcomeError
	}
	if found := secret.Find(m.Result); found != nil {
		ev.Details["result_secrets"] = found
	}
	return &ev
}

// filterTools rewrites a tools/list answer to list only the tools c's
// scopes allow and whose definitions are the pinned ones (pinning new
// ones on the way), each exactly as pinned: a hidden tool stays denied if
// called anyway. A list that names a tool twice, or that is not a list,
// is refused: the client gets an error. It returns nil for an error
// answer, which is relayed as it is.
func (g *Gateway) filterTools(ctx context.Context, m *message, c *mandate.Claims, rt *route, v *verdict) []byte {
	if len(m.Error) > 0 {
		return nil
	}
	bad := func(why string) []byte {
		g.cfg.Logger.Warn("gateway: a tools/list answer refused", "server", rt.Name, "why", why)
		return errorResponse(m.ID, rpcError{Code: CodeBadAnswer, Message: "the MCP server's tools/list answer was refused: " + why})
	}
	// The answer is rebuilt from the keys MCP defines, spelt exactly:
	// what it holds besides is not relayed, so that no client reads a
	// list ("Tools", say) the gateway did not filter, or text (_meta)
	// that no one pinned or scanned.
	var res map[string]json.RawMessage
	var tools []json.RawMessage
	var next, resultType string
	var ttl json.Number
	switch {
	case json.Unmarshal(m.Result, &res) != nil || json.Unmarshal(res["tools"], &tools) != nil || tools == nil:
		return bad("it holds no list of tools")
	case res["nextCursor"] != nil && json.Unmarshal(res["nextCursor"], &next) != nil:
		return bad("its nextCursor is not a string")
	case res["resultType"] != nil && (json.Unmarshal(res["resultType"], &resultType) != nil || resultType != "complete"):
		return bad("it is not a complete result")
	case res["ttlMs"] != nil && (json.Unmarshal(res["ttlMs"], &ttl) != nil || strings.HasPrefix(string(ttl), "-")):
		return bad("its ttlMs is not a number of milliseconds")
	}
	list := g.observe(ctx, rt, c, tools, v.listFirst && next == "", v.toolsSeen)
	if list.twice != "" {
		return bad("it lists tool " + list.twice + " more than once, and the gateway cannot tell which definition a call would reach")
	}
	out := map[string]json.RawMessage{}
	if next != "" {
		out["nextCursor"] = res["nextCursor"]
	}
	if resultType != "" {
		out["resultType"] = res["resultType"]
	}
	if ttl != "" {
		out["ttlMs"] = json.RawMessage(ttl)
	}
	if res["cacheScope"] != nil {
		// The list is filtered for this mandate: never one to share.
		out["cacheScope"] = json.RawMessage(`"private"`)
	}
	scopes, _ := c.Scopes()
	kept := []json.RawMessage{}
	for _, name := range list.order {
		if def := list.relay[name]; def != nil && scopes.Allows("mcp:"+rt.Name+":"+name) {
			kept = append(kept, def)
		}
	}
	out["tools"] = marshal(kept)
	m.Result = marshal(out)
	return marshal(m)
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
