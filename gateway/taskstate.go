package gateway

import (
	"container/heap"
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
)

// What the gateway remembers of each task, for policy (context.labels and
// context.history, docs/gateway.md "Task state"): the data labels the
// task has touched, and counters of its calls. A task's agents share it,
// however deep the tree: what one sub-agent read, a sibling cannot send
// out unseen.
//
// It is kept for as long as the task can be live, and never dropped
// before: a task lives while a mandate of it is valid, and none outlives
// the task's root mandate (Config.TaskEnd reads its expiry). It is rebuilt
// from the audit log at start (Restore), so a restart forgets nothing. It
// is bounded, and past a bound new work is refused, never a live task's
// state forgotten: a task the gateway holds no state for gets one on its
// first request, unless its registered root agent holds MaxTasksPerAgent
// already (429), or the gateway MaxTasks (503). Only at start, when the
// log holds more live tasks than MaxTasks, are those ending soonest
// dropped; then every task named before the last one dropped, that the
// gateway holds no state for, is refused (its state may be gone: fail
// closed).
type taskStates struct {
	mu       sync.Mutex
	max      int
	perAgent int
	m        map[string]*taskState
	byEnd    endHeap        // the states, the soonest to end first
	agents   map[string]int // states per root agent
	// lostBefore: the state of a task named (its ID's time) at or before
	// it may be gone (lostWhy says why); such a task with no state is
	// refused while it lives.
	lostBefore time.Time
	lostWhy    string
	// ends are the ends of the live tasks whose root issuance Restore saw.
	ends map[string]time.Time
}

type taskState struct {
	task    string
	agent   string   // the registered agent that started the task
	labels  []string // sorted
	history map[string]int64
	end     time.Time // no mandate of the task is valid after it
	i       int       // in byEnd
}

// Defaults of the task state's bounds (Config.MaxTasks,
// MaxTasksPerAgent) and of the longest a task lives after it was named
// when the gateway cannot read its root mandate's expiry (Config.TaskLife:
// issuer.MaxTTL, the longest mandate; a delegated one never outlives its
// parent).
const (
	DefaultMaxTasks         = 100_000
	DefaultMaxTasksPerAgent = 10_000
	DefaultTaskLife         = time.Hour
	// taskLifeMargin covers the clocks of the issuer and the gateway.
	taskLifeMargin = time.Minute
	maxTaskLabels  = 64
)

func newTaskStates(max, perAgent int) *taskStates {
	return &taskStates{max: max, perAgent: perAgent, m: map[string]*taskState{}, agents: map[string]int{}, ends: map[string]time.Time{}}
}

// taskError is a request refused for the task state: its task's state is
// gone, or there is no room for a new task's.
type taskError struct {
	status int    // the HTTP status
	code   int    // the JSON-RPC error code
	kind   string // details.check of its decision event
	msg    string
}

func (e *taskError) Error() string { return e.msg }

// has says whether the gateway holds task's state.
func (t *taskStates) has(task string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now)
	_, ok := t.m[task]
	return ok
}

// admit makes sure the task of a request by the holder of c has a state:
// the one the gateway holds, or a new one, kept until end, if there is
// room. It refuses the request (a *taskError) if the task's state may be
// gone, or if there is no room.
func (t *taskStates) admit(c *mandate.Claims, end, now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now)
	if _, ok := t.m[c.Task]; ok {
		return nil
	}
	if t.lost(c.Task) {
		return &taskError{status: http.StatusForbidden, code: CodeDenied, kind: "task-state-lost",
			msg: "the gateway does not know what task " + c.Task + " did before (" + t.lostWhy + "): its requests are refused, so that no rule on what the task did is passed by; start a new task"}
	}
	agent := rootAgent(c.Actor.Chain())
	if t.agents[agent] >= t.perAgent {
		return &taskError{status: http.StatusTooManyRequests, code: CodeDenied, kind: "task-state-full",
			msg: "agent " + agent + " has " + itoa(int64(t.perAgent)) + " live tasks at the gateway, its most: a new one may start once some end (a task ends when its mandates expire)"}
	}
	if len(t.m) >= t.max {
		return &taskError{status: http.StatusServiceUnavailable, code: CodeUnavailable, kind: "task-state-full",
			msg: "the gateway holds the state of " + itoa(int64(t.max)) + " live tasks, its most: new tasks are refused until some end; try again later"}
	}
	t.create(c.Task, agent, end)
	return nil
}

// lost says whether task's state may be gone: it was named at or before
// lostBefore (or its ID carries no time).
func (t *taskStates) lost(task string) bool {
	if t.lostBefore.IsZero() {
		return false
	}
	named, ok := mandate.IDTime(mandate.TaskIDPrefix, task)
	return !ok || !named.After(t.lostBefore)
}

// rootAgent is the registered agent that started a task, the last of its
// chain (current actor first).
func rootAgent(chain []string) string {
	if len(chain) == 0 {
		return ""
	}
	return mandate.RegisteredAncestor(chain[len(chain)-1])
}

func (t *taskStates) create(task, agent string, end time.Time) *taskState {
	s := &taskState{task: task, agent: agent, history: map[string]int64{}, end: end}
	t.m[task] = s
	heap.Push(&t.byEnd, s)
	t.agents[agent]++
	return s
}

func (t *taskStates) drop(s *taskState) {
	delete(t.m, s.task)
	heap.Remove(&t.byEnd, s.i)
	if t.agents[s.agent]--; t.agents[s.agent] <= 0 {
		delete(t.agents, s.agent)
	}
}

// sweep drops the states of tasks that ended by now, which must be a clock
// that does not run ahead with the wall clock (Gateway.sweepNow).
func (t *taskStates) sweep(now time.Time) {
	for len(t.byEnd) > 0 && !now.Before(t.byEnd[0].end) {
		t.drop(t.byEnd[0])
	}
}

// state returns task's state, making one for a task admitted whose state
// ended meanwhile (the request outlived the task's last mandate).
func (t *taskStates) state(task string, now time.Time) *taskState {
	if s, ok := t.m[task]; ok {
		return s
	}
	return t.create(task, "", now.Add(taskLifeMargin))
}

// get returns a copy of a task's labels and counters.
func (t *taskStates) get(task string, now time.Time) ([]string, map[string]int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.m[task]
	if !ok {
		return nil, nil
	}
	h := make(map[string]int64, len(s.history))
	for k, v := range s.history {
		h[k] = v
	}
	return slices.Clone(s.labels), h
}

// record notes a call of task: its tool's labels and what it counts for.
func (t *taskStates) record(task string, labels []string, counters []string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.state(task, now).note(labels, counters)
}

func (s *taskState) note(labels, counters []string) {
	for _, l := range labels {
		if i, found := slices.BinarySearch(s.labels, l); !found && len(s.labels) < maxTaskLabels {
			s.labels = slices.Insert(s.labels, i, l)
		}
	}
	for _, c := range counters {
		s.history[c]++
	}
}

// add adds n to a counter of task.
func (t *taskStates) add(task, counter string, n int64, now time.Time) {
	if n <= 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.state(task, now).history[counter] += n
}

// replay applies an event of the audit log, written before a restart, to
// the state of its task, as the gateway did when it wrote it. A task's
// root issuance (mandate.issued) says when it ends; a task whose root
// issuance was not seen, or whose root expired, is over. Past MaxTasks the
// states that end soonest are dropped, and the tasks named before them
// lost.
func (t *taskStates) replay(e mandate.LoggedEvent, now time.Time) {
	if e.Task == "" {
		return
	}
	if e.Type == mandate.EventMandateIssued {
		if rec, err := mandate.IssuanceOf(e.Event); err == nil && now.Before(rec.ExpiresAt.Add(taskLifeMargin)) {
			t.mu.Lock()
			if t.ends == nil {
				t.ends = map[string]time.Time{}
			}
			t.ends[e.Task] = rec.ExpiresAt.Add(taskLifeMargin)
			t.mu.Unlock()
		}
		return
	}
	labels, counters, sums := replayed(e.Event)
	if labels == nil && counters == nil && sums == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.m[e.Task]
	if !ok {
		end, live := t.ends[e.Task]
		if !live || t.lost(e.Task) {
			return // over, or lost already
		}
		for len(t.m) >= t.max {
			oldest := t.byEnd[0]
			if named, ok := mandate.IDTime(mandate.TaskIDPrefix, oldest.task); ok && named.After(t.lostBefore) {
				t.lostBefore = named
			}
			t.lostWhy = "the audit log held more live tasks than the gateway's bound of " + itoa(int64(t.max)) + " at its start"
			t.drop(oldest)
		}
		if t.lost(e.Task) {
			return
		}
		s = t.create(e.Task, rootAgent(e.Chain), end)
	}
	s.note(labels, counters)
	for k, n := range sums {
		if n > 0 {
			s.history[k] += n
		}
	}
}

// replayed is what an event the gateway wrote did to its task's state:
// the labels and counters it noted, and the sums it added (record and add
// in post, serveHTTPRoute and denied).
func replayed(e *mandate.Event) (labels, counters []string, sums map[string]int64) {
	fromGateway := strings.HasPrefix(e.Resource, "mcp:") || strings.HasPrefix(e.Resource, "http:")
	if !fromGateway {
		return nil, nil, nil
	}
	switch e.Type {
	case mandate.EventToolCall:
		// A tool's labels, or an HTTP route's: what the call noted.
		n, _ := mandate.DetailInt(e.Details["args_bytes"])
		tl := mandate.DetailStrings(e.Details["tool_labels"])
		return dataLabels(tl), callCounters(tl), map[string]int64{"args_bytes": n}
	case mandate.EventToolResult:
		n, _ := mandate.DetailInt(e.Details["result_bytes"])
		if e.Details["result_secrets"] != nil && e.Action != "http" {
			labels = []string{"secret"}
		}
		return labels, nil, map[string]int64{"result_bytes": n}
	case mandate.EventDecision:
		// Only a decision's denial counts (denied, refuseHTTPWith): not a
		// refused mandate (refused), nor a request refused before any
		// decision (check: refuseRequest, admitTask).
		if e.Outcome != mandate.OutcomeDeny || e.Action == "authenticate" || e.Details["refused"] != nil || e.Details["check"] != nil {
			return nil, nil, nil
		}
		return nil, []string{"denials"}, nil
	}
	return nil, nil, nil
}

// endHeap orders task states by their end.
type endHeap []*taskState

func (h endHeap) Len() int           { return len(h) }
func (h endHeap) Less(i, j int) bool { return h[i].end.Before(h[j].end) }
func (h endHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].i = i; h[j].i = j }
func (h *endHeap) Push(x any)        { s := x.(*taskState); s.i = len(*h); *h = append(*h, s) }
func (h *endHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	*h = old[:len(old)-1]
	return s
}

// Restore applies an event of the audit log, written before this start,
// to the task state: call it before serving, with the events of the last
// TaskLife (and a minute) in log order, then RestoreDone. Events of tasks
// that ended are skipped.
//
// Of those events it needs only the ones of RestoreTypes (of
// RestoreDenialsOnly, the denials) and, of the tasks these name, the ones
// of RestoreTaskTypes, in log order: a reader may leave out the rest
// (every other event is skipped).
func (g *Gateway) Restore(e mandate.LoggedEvent) { g.tasks.replay(e, g.cfg.Now()) }

// What Restore needs of the log (replay and replayed): what the gateway
// wrote of its tasks' calls, and, of those tasks only, their root
// issuance, which says when each ends. Most tasks of a burst of issuances
// never come to the gateway: their issuances need not be read at start.
var (
	RestoreTypes     = []string{mandate.EventToolCall, mandate.EventToolResult, mandate.EventDecision}
	RestoreTaskTypes = []string{mandate.EventMandateIssued}
	// Of a decision, only a denial counts (replayed).
	RestoreDenialsOnly = []string{mandate.EventDecision}
)

// RestoreDone ends Restore. If err is not nil (the log could not be read
// whole), the state of every task named before now may be gone: their
// requests are refused (fail closed) while they live, and new tasks go on.
func (g *Gateway) RestoreDone(err error) {
	t := g.tasks
	t.mu.Lock()
	defer t.mu.Unlock()
	t.ends = nil
	if err != nil {
		g.cfg.Logger.Error("gateway: the task state was not rebuilt from the audit log: the requests of tasks named before this start are refused", "err", err)
		t.lostBefore, t.lostWhy = g.cfg.Now(), "the gateway could not read them back from the audit log at its start"
	}
}

// taskEnd is when c's task ends: its root mandate's expiry
// (Config.TaskEnd), or, without a way to read it, the later of c's and
// the task's naming and TaskLife.
func (g *Gateway) taskEnd(ctx context.Context, c *mandate.Claims) (time.Time, error) {
	if c.Parent == "" {
		return c.Expiry.Add(taskLifeMargin), nil // c is the root
	}
	if g.cfg.TaskEnd != nil {
		end, err := g.cfg.TaskEnd(ctx, c)
		return end.Add(taskLifeMargin), err
	}
	end := c.Expiry.Time
	if named, ok := mandate.IDTime(mandate.TaskIDPrefix, c.Task); ok && named.Add(g.cfg.TaskLife).After(end) {
		end = named.Add(g.cfg.TaskLife)
	}
	return end.Add(taskLifeMargin), nil
}

// admitTask admits the task of a request (taskStates.admit); on refusal it
// records the decision as a refusal before any decision (details check,
// as refuseRequest's), at most once a minute per task and within the
// refusals' rate (anyone may start tasks), and returns the error to
// answer.
func (g *Gateway) admitTask(ctx context.Context, rt *route, c *mandate.Claims, action string) *taskError {
	now := g.sweepNow()
	if g.tasks.has(c.Task, now) {
		return nil
	}
	var te *taskError
	if end, err := g.taskEnd(ctx, c); err != nil {
		g.cfg.Logger.ErrorContext(ctx, "gateway: the end of a task is unknown", "task", c.Task, "err", err)
		te = &taskError{status: http.StatusServiceUnavailable, code: CodeUnavailable, kind: "task-state-unknown",
			msg: "the gateway cannot tell when task " + c.Task + " ends, so it cannot keep what the task does: try again later"}
	} else if err = g.tasks.admit(c, end, now); err != nil {
		te = err.(*taskError)
	} else {
		return nil
	}
	g.auditOnce(ctx, rt, g.requestRefusals, c.Task, te.kind, func() *mandate.Event {
		return g.event(mandate.EventDecision, c, action, rt.kind+":"+rt.Name, mandate.OutcomeDeny, te.msg,
			map[string]any{"check": te.kind, "http_status": te.status})
	})
	return te
}

// dataLabels are the data labels a call of a tool labelled toolLabels adds
// to its task: each "data:X" label gives X.
func dataLabels(toolLabels []string) []string {
	var out []string
	for _, l := range toolLabels {
		if d, ok := strings.CutPrefix(l, "data:"); ok && d != "" {
			out = append(out, d)
		}
	}
	return out
}

// callCounters are the history counters a forwarded call of a tool
// labelled toolLabels counts for.
func callCounters(toolLabels []string) []string {
	c := []string{"calls"}
	if slices.Contains(toolLabels, "external_send") {
		c = append(c, "sinks")
	}
	if slices.Contains(toolLabels, "destructive") {
		c = append(c, "writes")
	}
	if len(dataLabels(toolLabels)) > 0 {
		c = append(c, "reads_sensitive")
	}
	return c
}
