// Package monitor watches the audit log's events as they are committed,
// keeps per-task and per-agent state, runs detectors of misuse of
// legitimate permissions, raises risk scores (which decay), and responds:
// an alert event naming the detector and its evidence, and, as configured
// per detector, approval for the rest of the task, revocation of the
// offending mandate's subtree or of the whole task, or quarantine of the
// agent.
//
// The gateway and the issuer read Risk into policy's context.risk: the
// default policy set stops tool calls, HTTP requests and delegations of a
// task whose risk is 90 or more. The gateway asks Hold whether a task's
// remaining calls wait for a person.
//
// Its state lives in memory and is rebuilt at start from the audit log's
// last hour (Restore), so that a restart forgets neither a task's risk
// nor what it read.
//
// It is not a policy decision point (policy decides, with the risk in
// context).
package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mandatehq/mandate"
)

// Response is what the monitor does when a detector fires, beyond the
// alert event it always writes.
type Response string

// The responses.
const (
	// Alert: the alert event only.
	Alert Response = "alert"
	// Approve: every remaining tool call of the task waits for a person's
	// approval at the gateway, whatever policy says (Monitor.Hold).
	Approve Response = "approve"
	// Revoke: the offending mandate is revoked, and its descendants with
	// it (for a delegation detector, the delegating mandate).
	Revoke Response = "revoke"
	// RevokeTask: the task's whole tree is revoked.
	RevokeTask Response = "revoke-task"
	// Quarantine: the offending agent (its registered ancestor, for an
	// ephemeral sub-agent) is disabled, so it gets no new mandates, and
	// its live mandates are revoked.
	Quarantine Response = "quarantine"
)

// The detectors' names, as in alert events and Config.Responses.
const (
	RateSpike       = "rate-spike"
	NewTool         = "new-tool"
	Exfiltration    = "exfiltration"
	CrossTaskSend   = "cross-task-send"
	SpawnStorm      = "spawn-storm"
	FanOut          = "fan-out"
	DeepDelegation  = "deep-delegation"
	RepeatedDenials = "repeated-denials"
	DeadMandateUse  = "dead-mandate-use"
	DPoPMismatch    = "dpop-mismatch"
	SecretToSink    = "secret-to-sink"
	// HighRisk is not a detector of its own: it is the response when a
	// task's risk reaches Config.RevokeAt.
	HighRisk = "high-risk"
)

// Detector describes one detector: how much risk it adds and what it does
// by default. docs/monitor.md says what each catches.
type Detector struct {
	Name      string
	Risk      int
	Responses []Response
	// TaskOnly: it raises the task's risk, not the agent's. A stolen or
	// dead mandate presented by someone else says nothing of its agent,
	// which may be the victim: its other tasks go on.
	TaskOnly bool
}

// Detectors lists every detector with its defaults.
var Detectors = []Detector{
	{RateSpike, 20, []Response{Alert}, false},
	{NewTool, 10, []Response{Alert}, false},
	{Exfiltration, 60, []Response{RevokeTask}, false},
	{CrossTaskSend, 30, []Response{Approve}, false},
	{SpawnStorm, 40, []Response{RevokeTask}, false},
	{FanOut, 20, []Response{Alert}, false},
	{DeepDelegation, 20, []Response{Alert}, false},
	{RepeatedDenials, 40, []Response{Quarantine}, false},
	{DeadMandateUse, 20, []Response{Alert}, true},
	{DPoPMismatch, 50, []Response{Revoke}, true},
	{SecretToSink, 60, []Response{Approve}, false},
}

// Defaults of Config.
const (
	DefaultWindow       = 30 * time.Second
	DefaultDenials      = 5  // different refused requests in Window that make probing
	DefaultSpawns       = 50 // delegations in a second that make a storm
	DefaultFanOut       = 20 // children of one mandate
	DefaultDepth        = 4  // agents in a delegation's chain
	DefaultRateBucket   = 10 * time.Second
	DefaultRateFactor   = 5
	DefaultRateMin      = 60 // calls in a bucket below which nothing is a spike
	DefaultRateWarmup   = 6  // buckets of history before a baseline counts
	DefaultNewToolAfter = 20 // calls an agent makes before a new tool is news
	DefaultNewToolLearn = time.Hour
	DefaultExpiredGrace = 5 * time.Second
	DefaultCrossTask    = 10 * time.Minute
	DefaultHalfLife     = 10 * time.Minute
)

// Bounds of the monitor's memory.
const (
	maxTasks         = 100_000
	maxAgents        = 100_000
	maxParents       = 1024 // mandates whose children a task counts
	maxToolsKnown    = 256  // tools per agent; past it, no tool is news
	maxFiredPerTask  = 16   // mandates dead-mandate-use fired for, per task
	maxDenialTargets = 64   // refused targets a task remembers within Window
	queueSize        = 4096 // batches of committed events
	maxPending       = 1024 // detections Restore holds until it sees their alerts
	maxEvidence      = 16
	rateAlpha        = 0.2 // weight of the newest bucket in the baseline
)

// Config configures a Monitor. Zero values mean defaults.
type Config struct {
	// Window is how far back the counting detectors look.
	Window time.Duration
	// Denials: refused requests for this many different targets (action
	// and resource) within Window make a task's refusals probing.
	Denials int
	// Spawns: delegations in one second of a task that make a storm.
	Spawns int
	// FanOut: children of one mandate that are too many.
	FanOut int
	// Depth: a delegation whose chain has this many agents is deep.
	Depth int
	// RateBucket, RateFactor, RateMin, RateWarmup: an agent's tool calls
	// are counted per RateBucket; its baseline is a moving average of the
	// buckets; a bucket with RateFactor times the baseline, and at least
	// RateMin calls, is a spike once RateWarmup buckets are known.
	RateBucket time.Duration
	RateFactor float64
	RateMin    int
	RateWarmup int
	// NewToolAfter, NewToolLearn: a tool an agent never used is news once
	// the agent has made NewToolAfter calls over at least NewToolLearn.
	NewToolAfter int
	NewToolLearn time.Duration
	// ExpiredGrace: a mandate used this long after it expired is replayed,
	// not late.
	ExpiredGrace time.Duration
	// CrossTask: an agent that read sensitive data in one task, then tries
	// to send out in another within this time, is suspect.
	CrossTask time.Duration
	// HalfLife: risk halves in this time without detections.
	HalfLife time.Duration
	// Responses replaces a detector's default responses (Detectors); an
	// empty list means Alert only.
	Responses map[string][]Response
	// RevokeAt, if not 0, revokes a task once its risk reaches it.
	RevokeAt int
	// Act carries out Approve's siblings: Revoke, RevokeTask, Quarantine.
	// Without it, those responses are not carried out (and the alert says
	// so).
	Act func(ctx context.Context, a Action) error
	// Alerts receives the alert events. Required.
	Alerts mandate.EventLog
	Now    func() time.Time
	Logger *slog.Logger
}

// Action is a response to carry out, with what it answers.
type Action struct {
	Response Response
	Detector string
	Task     string
	Mandate  string // the offending mandate (for Revoke)
	Agent    string // the offending agent (for Quarantine): a registered agent's ID
	Evidence []int64
	Reason   string

	alert int // the alert it answers, in Process's list
}

// Monitor runs the detectors. Observe feeds it; Run works through what it
// was fed. It is safe for concurrent use.
type Monitor struct {
	cfg       Config
	risk      map[string]float64 // detector → risk added
	taskOnly  map[string]bool
	responses map[string][]Response
	queue     chan []mandate.LoggedEvent
	dropped   atomic.Int64
	droppedAt atomic.Int64 // the second (Unix) of the last warning about drops

	mu     sync.Mutex
	tasks  map[string]*task
	agents map[string]*agent
	// While restoring: the detections Restore found, until an alert in
	// the log shows each was answered (at most maxPending). Under mu.
	pending []pending
	// restored is the log position up to which Restore saw the events:
	// Observe skips them.
	restored atomic.Int64
}

// pending is a detection found while restoring, with its alert and the
// responses to carry out if the log holds no alert for it.
type pending struct {
	index    int64 // of the event it fired on
	detector string
	alert    *mandate.Event
	acts     []Action
}

type task struct {
	score
	denials   []denial // within Window
	spawns    []int64  // within a second
	children  map[string]int
	read      int64  // log index of the first sensitive read, -1 none
	reader    string // its agent
	exfil     bool   // Exfiltration fired
	crossTask bool   // CrossTaskSend fired
	delegated int64  // delegations in the task
	secretOut bool   // SecretToSink fired
	fired     []string
	evidence  []int64
	hold      string // why the rest of the task waits for approval
	revoked   bool
	// end is when the task's last mandate seen issued expires (ns), 0 if
	// none was seen: the root's, which no mandate of the task outlives.
	end int64
}

// endMargin covers the clocks: a task is over endMargin after its end.
const endMargin = time.Minute

// denial is a refused request: when, and what it asked for.
type denial struct {
	at     int64
	target string // action and resource
	agent  string
}

type agent struct {
	score
	bucket   int64 // index of the current rate bucket
	count    int   // calls in it
	baseline float64
	history  int // buckets seen
	spiked   bool
	calls    int
	first    int64 // the agent's first call (ns)
	tools    map[string]struct{}
	// The agent's last sensitive read, in any task.
	readAt    int64
	readIndex int64
	readTask  string
}

// score is a decaying risk.
type score struct {
	risk float64
	at   int64 // when (ns) risk was last computed
}

// New returns a Monitor for cfg.
func New(cfg Config) *Monitor {
	orDefault(&cfg.Window, DefaultWindow)
	orDefault(&cfg.Denials, DefaultDenials)
	orDefault(&cfg.Spawns, DefaultSpawns)
	orDefault(&cfg.FanOut, DefaultFanOut)
	orDefault(&cfg.Depth, DefaultDepth)
	orDefault(&cfg.RateBucket, DefaultRateBucket)
	orDefault(&cfg.RateFactor, DefaultRateFactor)
	orDefault(&cfg.RateMin, DefaultRateMin)
	orDefault(&cfg.RateWarmup, DefaultRateWarmup)
	orDefault(&cfg.NewToolAfter, DefaultNewToolAfter)
	orDefault(&cfg.NewToolLearn, DefaultNewToolLearn)
	orDefault(&cfg.ExpiredGrace, DefaultExpiredGrace)
	orDefault(&cfg.CrossTask, DefaultCrossTask)
	orDefault(&cfg.HalfLife, DefaultHalfLife)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Monitor{cfg: cfg, risk: map[string]float64{}, taskOnly: map[string]bool{}, responses: map[string][]Response{},
		queue: make(chan []mandate.LoggedEvent, queueSize), tasks: map[string]*task{}, agents: map[string]*agent{}}
	for _, d := range Detectors {
		m.risk[d.Name] = float64(d.Risk)
		m.taskOnly[d.Name] = d.TaskOnly
		m.responses[d.Name] = d.Responses
	}
	for name, rs := range cfg.Responses {
		m.responses[name] = rs
	}
	return m
}

// orDefault sets *v to d unless it is positive.
func orDefault[T int | float64 | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}

// CheckResponses checks a configuration's responses: known detectors,
// known responses.
func CheckResponses(rs map[string][]Response) error {
	for name, list := range rs {
		if !slices.ContainsFunc(Detectors, func(d Detector) bool { return d.Name == name }) {
			names := make([]string, len(Detectors))
			for i, d := range Detectors {
				names[i] = d.Name
			}
			return fmt.Errorf("monitor: no detector %q (the detectors: %s)", name, strings.Join(names, ", "))
		}
		for _, r := range list {
			if r == Quarantine && slices.ContainsFunc(Detectors, func(d Detector) bool { return d.Name == name && d.TaskOnly }) {
				return fmt.Errorf("monitor: detector %s: quarantine would disable the mandate's agent, which may be the victim (someone else presents its stolen or dead mandate): use revoke or revoke-task", name)
			}
			switch r {
			case Alert, Approve, Revoke, RevokeTask, Quarantine:
			default:
				return fmt.Errorf("monitor: detector %s: no response %q (alert, approve, revoke, revoke-task, quarantine)", name, r)
			}
		}
	}
	return nil
}

// Observe hands committed events to the monitor without waiting: the
// store calls it as it releases them. Past its queue, events are dropped
// and counted (Dropped), never blocking the store.
func (m *Monitor) Observe(evs []mandate.LoggedEvent) {
	if r := m.restored.Load(); r > 0 && len(evs) > 0 && evs[0].Index < r {
		i := 0
		for i < len(evs) && evs[i].Index < r {
			i++
		}
		if evs = evs[i:]; len(evs) == 0 {
			return // Restore saw them
		}
	}
	select {
	case m.queue <- evs:
	default:
		n := m.dropped.Add(int64(len(evs)))
		if sec := time.Now().Unix(); m.droppedAt.Swap(sec) != sec { // at most once a second
			m.cfg.Logger.Warn("monitor: events dropped, it cannot keep up: detections may be missed", "dropped_total", n)
		}
	}
}

// Dropped is how many events the monitor could not keep up with.
func (m *Monitor) Dropped() int64 { return m.dropped.Load() }

// Run processes what Observe queued until ctx ends.
func (m *Monitor) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case evs := <-m.queue:
			for _, ev := range evs {
				// Observed while Restore ran, then read by it too: seen.
				if ev.Index < m.restored.Load() {
					continue
				}
				m.Process(ctx, ev)
			}
		}
	}
}

// Risk is the risk score, 0 to 100, as of now, of a task or of an agent
// acting in it, whichever is higher. An ephemeral sub-agent's is its
// registered ancestor's.
func (m *Monitor) Risk(taskID, agentID string) int {
	now := m.cfg.Now().UnixNano()
	m.mu.Lock()
	defer m.mu.Unlock()
	r := 0.0
	if t := m.tasks[taskID]; t != nil {
		r = m.decayed(&t.score, now)
	}
	if a := m.agents[mandate.RegisteredAncestor(agentID)]; a != nil && agentID != "" {
		r = max(r, m.decayed(&a.score, now))
	}
	return int(math.Round(r))
}

// Counters are what the monitor counts of a task for policy's
// context.history: "spawns", its delegations.
func (m *Monitor) Counters(taskID string) map[string]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.tasks[taskID]; t != nil && t.delegated > 0 {
		return map[string]int64{"spawns": t.delegated}
	}
	return nil
}

// Hold says why the rest of a task waits for a person's approval, or ""
// if it does not (the Approve response).
func (m *Monitor) Hold(taskID string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.tasks[taskID]; t != nil {
		return t.hold
	}
	return ""
}

func (m *Monitor) decayed(s *score, now int64) float64 {
	if s.risk == 0 {
		return 0
	}
	half := float64(now-s.at) / float64(m.cfg.HalfLife)
	return s.risk * math.Pow(0.5, max(half, 0))
}

func (m *Monitor) raise(s *score, by float64, now int64) float64 {
	s.risk = min(m.decayed(s, now)+by, 100)
	s.at = now
	return s.risk
}

// detection is what a detector found.
type detection struct {
	detector string
	reason   string
	evidence []int64 // besides the event itself
	mandate  string  // the offending mandate, if not the event's
}

// Process runs the detectors over one event (Run calls it; tests may).
// Windows are measured in the events' own times.
func (m *Monitor) Process(ctx context.Context, ev mandate.LoggedEvent) {
	m.process(ctx, ev, false)
}

// Restore runs the detectors over an event written before this start, to
// rebuild the state they keep (risk, what a task read, holds, baselines):
// call it before Run, with the events of the last hour (issuer.MaxTTL,
// and a minute) in log order, then RestoreDone. Windows are measured in
// the events' own times, so the detections are those made before the
// restart: they are not alerted, nor answered, again, unless the log
// shows no alert for one (the server stopped between an event and its
// alert, or the monitor could not keep up with the events), which
// RestoreDone then answers.
//
// Of those events it needs only the ones of RestoreTypes (of
// RestoreDenialsOnly, the denials) and, of the tasks these name, the ones
// of RestoreTaskTypes, in log order: a reader may leave out the rest,
// which only make empty entries of their task and agent.
func (m *Monitor) Restore(ev mandate.LoggedEvent) {
	if ev.Event == nil {
		return
	}
	if n := ev.Index + 1; n > m.restored.Load() {
		m.restored.Store(n)
	}
	if ev.Type == mandate.EventAlert && ev.By == "monitor" {
		m.answered(ev)
		m.heldForApproval(ev)
		m.heldForFailure(ev)
		return
	}
	m.process(context.Background(), ev, true)
}

// What Restore needs of the log (process and Restore): the events the
// detectors run on, and its own alerts (what was answered, and held);
// and, of the tasks these name only, their root issuance, which says when
// the task ends (its state may be forgotten first past maxTasks once it
// ended). A delegation carries its own expiry.
var (
	RestoreTypes = []string{mandate.EventToolCall, mandate.EventDecision, mandate.EventApprovalRequested,
		mandate.EventMandateDelegated, mandate.EventAlert}
	RestoreTaskTypes = []string{mandate.EventMandateIssued}
	// Of a decision, only a denial runs a detector (process).
	RestoreDenialsOnly = []string{mandate.EventDecision}
)

// heldForApproval holds again, after a restart, the task of an alert
// whose responses held it for a person (approve): the alert is the
// record of the hold. Running the detectors again over the restored
// events is not enough: a detection may rest on events older than what a
// start reads back (a cross-task send, on a read in another task up to
// CrossTask before), while the task it held is still live.
func (m *Monitor) heldForApproval(alert mandate.LoggedEvent) {
	if alert.Task == "" || !slices.Contains(mandate.DetailStrings(alert.Details["responses"]), string(Approve)) {
		return
	}
	now := alert.Time
	if now == 0 {
		now = m.cfg.Now().UnixNano()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.task(alert.Task, now); t.hold == "" {
		t.hold = "the monitor's " + fmt.Sprint(alert.Details["detector"]) + " detector: " + alert.Reason
	}
}

// heldForFailure holds again, after a restart, the task of an alert
// whose responses failed: a failed response held it (fail closed), and
// the hold must not end with the process.
func (m *Monitor) heldForFailure(alert mandate.LoggedEvent) {
	if alert.Details["failed"] == nil || alert.Task == "" {
		return
	}
	now := alert.Time
	if now == 0 {
		now = m.cfg.Now().UnixNano()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if t := m.task(alert.Task, now); t.hold == "" {
		t.hold = "the monitor's " + fmt.Sprint(alert.Details["detector"]) + " detector's response failed: a person must look"
	}
}

// answered takes off the pending detections the one that alert answers:
// same detector, fired on an event of its evidence.
func (m *Monitor) answered(alert mandate.LoggedEvent) {
	detector, _ := alert.Details["detector"].(string)
	var evidence []int64
	switch list := alert.Details["evidence"].(type) {
	case []int64:
		evidence = list
	case []any:
		for _, v := range list {
			if n, ok := mandate.DetailInt(v); ok {
				evidence = append(evidence, n)
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, p := range m.pending {
		if p.detector == detector && slices.Contains(evidence, p.index) {
			m.pending = slices.Delete(m.pending, i, i+1)
			return
		}
	}
}

// RestoreDone ends Restore: it writes the alerts, and carries out the
// responses, of the detections Restore found that the log shows no alert
// for (each alert says found_at_start), and from then on Observe skips
// the events Restore saw.
func (m *Monitor) RestoreDone(ctx context.Context) {
	m.mu.Lock()
	left := m.pending
	m.pending = nil
	m.mu.Unlock()
	for _, p := range left {
		p.alert.Details["found_at_start"] = true
		for i := range p.acts {
			p.acts[i].alert = 0
		}
		m.respond(ctx, []*mandate.Event{p.alert}, p.acts)
	}
	if len(left) > 0 {
		m.cfg.Logger.Warn("monitor: detections of events before the start had no alert: alerted and answered now", "count", len(left))
	}
}

func (m *Monitor) process(ctx context.Context, ev mandate.LoggedEvent, restoring bool) {
	if ev.Event == nil || ev.By == "monitor" {
		return
	}
	now := ev.Time
	if now == 0 {
		now = m.cfg.Now().UnixNano()
	}
	var found []detection
	m.mu.Lock()
	var t *task
	var a *agent
	if ev.Task != "" {
		t = m.task(ev.Task, now)
	}
	if ev.Agent != "" {
		a = m.agent(mandate.RegisteredAncestor(ev.Agent), now)
	}
	if t != nil && (ev.Type == mandate.EventMandateIssued || ev.Type == mandate.EventMandateDelegated) {
		if ms, ok := mandate.DetailInt(ev.Details["exp_ms"]); ok && ms*int64(time.Millisecond) > t.end {
			t.end = ms * int64(time.Millisecond)
		}
	}
	switch ev.Type {
	case mandate.EventToolCall:
		found = m.call(found, t, a, ev, now)
	case mandate.EventDecision:
		if ev.Outcome != mandate.OutcomeDeny {
			break
		}
		if refused, _ := ev.Details["refused"].(string); refused != "" {
			found = m.deadOrStolen(found, t, ev, refused)
			break
		}
		// A call of a tool or an HTTP route (its labels say where it
		// sends) is an attempt, refused or not.
		found = m.sinks(found, t, a, ev, now)
		if t != nil {
			found = m.probing(found, t, ev, now)
		}
	case mandate.EventApprovalRequested:
		found = m.sinks(found, t, a, ev, now) // a call held for approval is an attempt
	case mandate.EventMandateDelegated:
		found = m.delegated(found, t, ev, now)
	}
	if len(found) == 0 {
		m.mu.Unlock()
		return
	}
	var alerts []*mandate.Event
	var acts []Action
	for _, d := range found {
		by := m.risk[d.detector]
		tr, ar := 0.0, 0.0
		if t != nil {
			tr = m.raise(&t.score, by, now)
			t.evidence = appendEvidence(t.evidence, append(d.evidence, ev.Index)...)
		}
		if a != nil && !m.taskOnly[d.detector] {
			ar = m.raise(&a.score, by, now)
		} else if a != nil {
			ar = m.decayed(&a.score, now)
		}
		evidence := appendEvidence(nil, append(d.evidence, ev.Index)...)
		offending := ev.Mandate
		if d.mandate != "" {
			offending = d.mandate
		}
		responses := m.responses[d.detector]
		done := []string{string(Alert)}
		culprit := ev.Agent
		if ev.Type == mandate.EventMandateDelegated && strings.HasPrefix(ev.By, "spiffe://") {
			culprit = ev.By // the delegating agent, not its delegate
		}
		for _, r := range responses {
			act := Action{Response: r, Detector: d.detector, Task: ev.Task, Mandate: offending,
				Agent: mandate.RegisteredAncestor(culprit), Evidence: evidence, Reason: "the monitor's " + d.detector + " detector: " + d.reason,
				alert: len(alerts)}
			switch r {
			case Alert:
				continue // done already
			case Approve:
				if t == nil {
					continue
				}
				if t.hold == "" {
					t.hold = act.Reason
				}
			case RevokeTask:
				if t == nil || t.revoked {
					continue
				}
				t.revoked = true
				acts = append(acts, act)
			case Revoke:
				if offending == "" {
					continue
				}
				acts = append(acts, act)
			case Quarantine:
				if act.Agent == "" {
					continue
				}
				acts = append(acts, act)
			}
			done = append(done, string(r))
		}
		if m.cfg.RevokeAt > 0 && t != nil && tr >= float64(m.cfg.RevokeAt) && !t.revoked {
			t.revoked = true
			acts = append(acts, Action{Response: RevokeTask, Detector: HighRisk, Task: ev.Task, Evidence: slices.Clone(t.evidence), alert: len(alerts),
				Reason: "the monitor's " + d.detector + " detector raised the task's risk to " + itoa(int(math.Round(tr)))})
			done = append(done, string(RevokeTask))
		}
		details := map[string]any{"detector": d.detector, "risk": int64(math.Round(tr)), "evidence": evidence,
			"responses": done}
		if a != nil {
			details["agent_risk"] = int64(math.Round(ar))
		}
		if m.cfg.Act == nil && slices.ContainsFunc(done, func(r string) bool { return r != string(Approve) && r != string(Alert) }) {
			details["not_carried_out"] = "this monitor has nothing to act with"
		}
		alerts = append(alerts, &mandate.Event{V: mandate.EventVersion, Time: m.cfg.Now().UnixNano(), Type: mandate.EventAlert,
			Task: ev.Task, Mandate: offending, Agent: ev.Agent, Chain: ev.Chain, Subject: ev.Subject,
			Action: "detect", Resource: ev.Resource, Outcome: mandate.OutcomeDeny, Reason: d.reason, By: "monitor",
			Details: details})
	}
	if restoring {
		// Answered before the restart, most likely: kept until the log's
		// alert shows it (answered), else answered by RestoreDone.
		for i, al := range alerts {
			p := pending{index: ev.Index, detector: found[i].detector, alert: al}
			for _, act := range acts {
				if act.alert == i {
					p.acts = append(p.acts, act)
				}
			}
			if len(m.pending) == maxPending {
				m.pending = m.pending[1:] // the oldest: most likely answered, its alert beyond the window
			}
			m.pending = append(m.pending, p)
		}
		m.mu.Unlock()
		return
	}
	m.mu.Unlock()
	m.respond(ctx, alerts, acts)
}

// respond carries out the responses acts (each for alerts[act.alert]),
// then writes the alerts.
func (m *Monitor) respond(ctx context.Context, alerts []*mandate.Event, acts []Action) {
	// Contain first: the revocations are what stops the next call. Each
	// revocation event names the detector and the evidence itself.
	if m.cfg.Act != nil {
		for _, act := range acts {
			err := m.cfg.Act(ctx, act)
			if mandate.ErrorCode(err) == mandate.ENOTFOUND {
				err = nil // nothing live left to revoke
			}
			if err != nil {
				m.cfg.Logger.Error("monitor: response not carried out", "task", act.Task, "detector", act.Detector, "response", act.Response, "err", err)
				d := alerts[act.alert].Details
				failed, _ := d["failed"].([]string)
				// What a caller would be told, not the cause: the alert is
				// an audit event, which the public may read.
				d["failed"] = append(failed, string(act.Response)+": "+mandate.ClipReason(mandate.ErrorMessage(err)))
				// Fail closed: what could not be stopped waits for a person
				// on every further call; the next detection (or RevokeAt)
				// tries a task revocation again.
				m.mu.Lock()
				if t := m.tasks[act.Task]; t != nil {
					if act.Response == RevokeTask {
						t.revoked = false
					}
					if t.hold == "" {
						t.hold = "the monitor's " + act.Detector + " detector asked to " + string(act.Response) + ", which failed: a person must look"
					}
				}
				m.mu.Unlock()
			}
		}
	}
	if err := m.cfg.Alerts.Append(ctx, alerts...); err != nil {
		m.cfg.Logger.Error("monitor: alert not recorded", "task", alerts[0].Task, "err", err)
	}
	for _, al := range alerts {
		m.cfg.Logger.Warn("monitor: alert", "task", al.Task, "agent", al.Agent, "detector", al.Details["detector"],
			"risk", al.Details["risk"], "responses", al.Details["responses"], "reason", al.Reason)
	}
}

// call runs the detectors of a forwarded tool call.
func (m *Monitor) call(found []detection, t *task, a *agent, ev mandate.LoggedEvent, now int64) []detection {
	found = m.sinks(found, t, a, ev, now)
	if a == nil || ev.Action == "http" {
		return found
	}
	// Rate against the agent's own baseline.
	b := now / int64(m.cfg.RateBucket)
	if a.history == 0 {
		a.bucket, a.history = b, 1
	}
	if b > a.bucket {
		a.baseline = (1-rateAlpha)*a.baseline + rateAlpha*float64(a.count)
		if a.history == 1 {
			a.baseline = float64(a.count) // the first full bucket is the baseline
		}
		empty := min(b-a.bucket-1, 64)
		a.baseline *= math.Pow(1-rateAlpha, float64(empty))
		a.history += int(min(b-a.bucket, 1<<20))
		a.bucket, a.count, a.spiked = b, 0, false
	}
	a.count++
	if !a.spiked && a.history > m.cfg.RateWarmup && a.count >= m.cfg.RateMin && float64(a.count) >= m.cfg.RateFactor*a.baseline {
		a.spiked = true
		found = append(found, detection{detector: RateSpike,
			reason: fmt.Sprintf("%d tool calls within %v, against a baseline of %.1f", a.count, m.cfg.RateBucket, a.baseline)})
	}
	// A tool the agent never used.
	a.calls++
	if a.tools == nil {
		a.tools, a.first = map[string]struct{}{}, now
	}
	if _, known := a.tools[ev.Resource]; !known && len(a.tools) < maxToolsKnown {
		a.tools[ev.Resource] = struct{}{}
		if a.calls > m.cfg.NewToolAfter && now-a.first >= int64(m.cfg.NewToolLearn) {
			found = append(found, detection{detector: NewTool,
				reason: "a tool this agent never called in its " + itoa(a.calls-1) + " calls before: " + ev.Resource})
		}
	}
	return found
}

// sinks runs the detectors of a call, forwarded, held or refused, by what
// its tool's labels say it does: a read of sensitive data (a forwarded
// call of a tool with a data: label) followed, in the same task, by an
// attempt to send out (external_send), by the same agent or another of
// the tree; and a secret sent out.
func (m *Monitor) sinks(found []detection, t *task, a *agent, ev mandate.LoggedEvent, now int64) []detection {
	if t == nil {
		return found
	}
	labels := mandate.DetailStrings(ev.Details["tool_labels"])
	if len(labels) == 0 {
		return found
	}
	sends := slices.Contains(labels, "external_send")
	// The same agent (or one of its sub-agents) read in another task: a
	// new task does not wash the data clean.
	if sends && a != nil && a.readTask != "" && a.readTask != ev.Task && now-a.readAt <= int64(m.cfg.CrossTask) && !t.crossTask && t.read < 0 {
		t.crossTask = true
		found = append(found, detection{detector: CrossTaskSend, evidence: []int64{a.readIndex},
			reason: "a send out (" + ev.Resource + ") by an agent that read sensitive data in task " + a.readTask + " " +
				time.Duration(now-a.readAt).Round(time.Second).String() + " before"})
	}
	if sends && t.read >= 0 && !t.exfil {
		t.exfil = true
		who := "the same agent"
		if t.reader != ev.Agent {
			who = "another agent of the task (" + t.reader + ")"
		}
		found = append(found, detection{detector: Exfiltration, evidence: []int64{t.read},
			reason: "a send out (" + ev.Resource + ") after " + who + " read sensitive data"})
	}
	if sends && ev.Details["arg_secrets"] != nil && !t.secretOut {
		t.secretOut = true
		found = append(found, detection{detector: SecretToSink,
			reason: "a call to a tool that sends data out carries a secret in its arguments"})
	}
	if ev.Type == mandate.EventToolCall && slices.ContainsFunc(labels, func(l string) bool { return strings.HasPrefix(l, "data:") }) {
		if t.read < 0 {
			t.read, t.reader = ev.Index, ev.Agent
		}
		if a != nil {
			a.readAt, a.readIndex, a.readTask = now, ev.Index, ev.Task
		}
	}
	return found
}

// deadOrStolen runs the detectors of a refused genuine mandate: revoked,
// replayed long after it expired, or presented without its key. refused
// is the check that refused it, as the gateway (verify.Error) and the
// token endpoint name it.
func (m *Monitor) deadOrStolen(found []detection, t *task, ev mandate.LoggedEvent, refused string) []detection {
	var d detection
	switch refused {
	case "revocation":
		d = detection{detector: DeadMandateUse, reason: "a revoked mandate is still in use"}
	case "exp":
		ms, _ := mandate.DetailInt(ev.Details["expired_ms"])
		if time.Duration(ms)*time.Millisecond < m.cfg.ExpiredGrace {
			return found // late, not replayed
		}
		d = detection{detector: DeadMandateUse, reason: "a mandate used " + (time.Duration(ms) * time.Millisecond).String() + " after it expired"}
	case "dpop-key", "dpop-bearer":
		// What a thief without the key sends: no proof, or none made with
		// the key (another key's, one whose signature does not verify
		// under the holder's jwk, alg none, garbage).
		d = detection{detector: DPoPMismatch, reason: map[string]string{
			"dpop-key":    "a key-bound mandate presented with a proof not made with its key",
			"dpop-bearer": "a key-bound mandate presented without a proof of its key",
		}[refused] + ": someone without the holder's key has it"}
	default:
		// Not "dpop-proof" nor "dpop-replay": a proof made with the key, for
		// another request, too old, or sent twice, is the holder's bug (or a
		// captured proof, refused anyway). Not "revocation-unknown": the
		// store could not answer, which says nothing of the mandate. The
		// others (nbf, iat, the chain's shape, "dpop" of an unbound
		// mandate, "online") are in the log, and detect nothing.
		return found
	}
	if t != nil {
		key := d.detector + " " + ev.Mandate
		if slices.Contains(t.fired, key) {
			return found // once per mandate: its holder may retry
		}
		if len(t.fired) == maxFiredPerTask {
			t.fired = t.fired[1:]
		}
		t.fired = append(t.fired, key)
	}
	return append(found, d)
}

// probing counts, per task and registered agent (with its ephemeral
// sub-agents), refused requests for distinct targets within Window: an
// agent trying one thing after another that it may not do is probing;
// one retrying the same refused call is merely stuck. Only refusals of
// the agent's own asking count (probeCauses): not one that the system,
// a person or the task's risk caused, so that quarantine (the default
// response) never follows from what the agent did not do.
func (m *Monitor) probing(found []detection, t *task, ev mandate.LoggedEvent, now int64) []detection {
	if cause, _ := ev.Details["cause"].(string); !slices.Contains(probeCauses, cause) || ev.By != "" || ev.Agent == "" {
		return found
	}
	who := mandate.RegisteredAncestor(ev.Agent)
	// One entry per target, with its last refusal: retrying one refused
	// call can neither make probing nor push real probes out of the
	// window.
	i := 0
	for _, d := range t.denials {
		if now-d.at <= int64(m.cfg.Window) {
			t.denials[i] = d
			i++
		}
	}
	t.denials = t.denials[:i]
	target := ev.Action + " " + ev.Resource
	if j := slices.IndexFunc(t.denials, func(d denial) bool { return d.target == target && d.agent == who }); j >= 0 {
		t.denials[j].at = now
		return found
	}
	if len(t.denials) == maxDenialTargets {
		t.denials = t.denials[1:]
	}
	t.denials = append(t.denials, denial{now, target, who})
	if n := countFunc(t.denials, func(d denial) bool { return d.agent == who }); n == m.cfg.Denials {
		found = append(found, detection{detector: RepeatedDenials,
			reason: itoa(n) + " different requests refused within " + m.cfg.Window.String() + ": probing for what is allowed"})
	}
	return found
}

// probeCauses are the causes of refusals (a decision event's details
// "cause", which the gateway gives) that are the caller's own asking: out
// of its mandate's scope, or refused by policy for what it asks.
var probeCauses = []string{"scope", "policy"}

func countFunc[T any](s []T, f func(T) bool) int {
	n := 0
	for _, v := range s {
		if f(v) {
			n++
		}
	}
	return n
}

// delegated runs the detectors of a delegation.
func (m *Monitor) delegated(found []detection, t *task, ev mandate.LoggedEvent, now int64) []detection {
	if t == nil {
		return found
	}
	t.delegated++
	t.spawns = append(within(t.spawns, now, time.Second), now)
	if len(t.spawns) == m.cfg.Spawns {
		found = append(found, detection{detector: SpawnStorm, mandate: ev.Parent,
			reason: itoa(len(t.spawns)) + " delegations within a second"})
	}
	if ev.Parent != "" {
		if t.children == nil {
			t.children = map[string]int{}
		}
		if n, ok := t.children[ev.Parent]; ok || len(t.children) < maxParents {
			t.children[ev.Parent] = n + 1
			if n+1 == m.cfg.FanOut {
				found = append(found, detection{detector: FanOut, mandate: ev.Parent,
					reason: "mandate " + ev.Parent + " delegated to " + itoa(n+1) + " agents"})
			}
		}
	}
	if n := len(ev.Chain); n == m.cfg.Depth {
		found = append(found, detection{detector: DeepDelegation, mandate: ev.Parent,
			reason: "a delegation " + itoa(n) + " agents deep"})
	}
	return found
}

// task returns the state of a task, creating it (and forgetting another
// beyond maxTasks).
func (m *Monitor) task(id string, now int64) *task {
	t := m.tasks[id]
	if t == nil {
		if len(m.tasks) >= maxTasks {
			// Idle: no risk left, nothing read, no hold; a revoked task's
			// mandates are refused by the store, whatever the monitor forgets.
			forget(m.tasks, func(v *task) bool { return m.taskIdle(v, now) }, func(v *task) bool { return v.hold == "" })
		}
		t = &task{read: -1}
		m.tasks[id] = t
	}
	return t
}

// taskIdle says whether a task's state may be forgotten first: the task
// ended (nothing of it is live), or it has nothing to remember.
func (m *Monitor) taskIdle(v *task, now int64) bool {
	return (v.end != 0 && now-v.end > int64(endMargin)) || (m.decayed(&v.score, now) < 1 && v.hold == "" && v.read < 0)
}

func (m *Monitor) agent(id string, now int64) *agent {
	a := m.agents[id]
	if a == nil {
		if len(m.agents) >= maxAgents {
			forget(m.agents, func(v *agent) bool { return m.decayed(&v.score, now) < 1 }, func(*agent) bool { return true })
		}
		a = &agent{}
		m.agents[id] = a
	}
	return a
}

// forget deletes one entry, quickly, looking at 16 (in the map's random
// order): the first that idle says may go (a task whose mandates all
// expired, or one with nothing to remember); else the first that expendable
// allows; else the last looked at. A scan for the least recently seen
// would cost every new entry 100,000 steps. (A held task goes last: a
// flood of new tasks cannot easily wash a hold away.)
func forget[V any](m map[string]V, idle, expendable func(V) bool) {
	n := 0
	var fallback, last string
	have := false
	for k, v := range m {
		if idle(v) {
			delete(m, k)
			return
		}
		if !have && expendable(v) {
			fallback, have = k, true
		}
		last = k
		if n++; n == 16 {
			break
		}
	}
	if !have {
		fallback = last
	}
	delete(m, fallback)
}

func within(ts []int64, now int64, d time.Duration) []int64 {
	i := 0
	for i < len(ts) && now-ts[i] > int64(d) {
		i++
	}
	return ts[i:]
}

func appendEvidence(ev []int64, ids ...int64) []int64 {
	for _, id := range ids {
		if !slices.Contains(ev, id) {
			ev = append(ev, id)
		}
	}
	if len(ev) > maxEvidence {
		ev = ev[len(ev)-maxEvidence:]
	}
	return ev
}

func itoa(n int) string { return formatInt(int64(n)) }
