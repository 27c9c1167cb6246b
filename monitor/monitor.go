// Package monitor watches the audit log's events as they are committed,
// keeps per-task state, runs detectors of misuse of legitimate
// permissions, raises each task's risk score (which decays), writes an
// alert event naming the detector and its evidence, and, where
// configured, revokes the task.
//
// The gateway and the issuer read Risk into policy's context.risk: the
// default policy set stops tool calls, HTTP requests and delegations of a
// task whose risk is 90 or more.
//
// It is not a policy decision point (policy decides, with the risk in
// context) and it keeps nothing across a restart: risk starts at 0.
package monitor

import (
	"context"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mandatehq/mandate"
)

// Defaults of Config.
const (
	DefaultWindow          = 30 * time.Second
	DefaultDenials         = 5  // denials in Window that make probing
	DefaultSpawns          = 50 // delegations in a second that make a storm
	DefaultHalfLife        = 10 * time.Minute
	DefaultRevokeAt        = 0 // no revocation by default
	maxTasks               = 100_000
	queueSize              = 4096 // batches of committed events
	maxEvidence            = 16
	detectionRiskProbing   = 40
	detectionRiskStorm     = 40
	detectionRiskSecretOut = 60
)

// Config configures a Monitor. Zero values mean defaults.
type Config struct {
	// Window is how far back the counting detectors look.
	Window time.Duration
	// Denials in Window that make a task's refused requests probing.
	Denials int
	// Spawns: delegations in one second of a task that make a storm.
	Spawns int
	// HalfLife: a task's risk halves in this time without detections.
	HalfLife time.Duration
	// RevokeAt, if not 0, revokes a task (Revoke) once its risk reaches it.
	RevokeAt int
	// Revoke revokes a task's tree; required with RevokeAt.
	Revoke func(ctx context.Context, task, reason string) error
	// Alerts receives the alert events. Required.
	Alerts mandate.EventLog
	Now    func() time.Time
	Logger *slog.Logger
}

// Monitor runs the detectors. Observe feeds it; Run works through what it
// was fed. It is safe for concurrent use.
type Monitor struct {
	cfg     Config
	queue   chan []mandate.LoggedEvent
	dropped atomic.Int64

	mu    sync.Mutex
	tasks map[string]*task
}

type task struct {
	risk     float64
	at       time.Time   // when risk was last computed
	denials  []time.Time // within Window
	spawns   []time.Time // within a second
	evidence []int64
	revoked  bool
}

// New returns a Monitor for cfg.
func New(cfg Config) *Monitor {
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.Denials <= 0 {
		cfg.Denials = DefaultDenials
	}
	if cfg.Spawns <= 0 {
		cfg.Spawns = DefaultSpawns
	}
	if cfg.HalfLife <= 0 {
		cfg.HalfLife = DefaultHalfLife
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Monitor{cfg: cfg, queue: make(chan []mandate.LoggedEvent, queueSize), tasks: map[string]*task{}}
}

// Observe hands committed events to the monitor without waiting: the
// store calls it as it releases them. Past its queue, events are dropped
// and counted (Dropped), never blocking the store.
func (m *Monitor) Observe(evs []mandate.LoggedEvent) {
	select {
	case m.queue <- evs:
	default:
		m.dropped.Add(int64(len(evs)))
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
				m.Process(ctx, ev)
			}
		}
	}
}

// Risk is a task's risk score, 0 to 100, as of now.
func (m *Monitor) Risk(taskID string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := m.tasks[taskID]
	if t == nil {
		return 0
	}
	return int(math.Round(m.decayed(t, m.cfg.Now())))
}

func (m *Monitor) decayed(t *task, now time.Time) float64 {
	if t.risk == 0 {
		return 0
	}
	half := float64(now.Sub(t.at)) / float64(m.cfg.HalfLife)
	return t.risk * math.Pow(0.5, max(half, 0))
}

// detection is what a detector found.
type detection struct {
	detector string
	risk     float64
	reason   string
}

// Process runs the detectors over one event (Run calls it; tests may).
func (m *Monitor) Process(ctx context.Context, ev mandate.LoggedEvent) {
	if ev.Event == nil || ev.Task == "" || ev.Type == mandate.EventAlert {
		return
	}
	now := m.cfg.Now()
	m.mu.Lock()
	t := m.task(ev.Task, now)
	var found []detection
	switch {
	case ev.Type == mandate.EventDecision && ev.Outcome == mandate.OutcomeDeny:
		t.denials = append(within(t.denials, now, m.cfg.Window), now)
		if len(t.denials) == m.cfg.Denials {
			found = append(found, detection{"repeated-denials", detectionRiskProbing,
				itoa(len(t.denials)) + " refused requests within " + m.cfg.Window.String() + ": probing for what is allowed"})
		}
	case ev.Type == mandate.EventMandateDelegated:
		t.spawns = append(within(t.spawns, now, time.Second), now)
		if len(t.spawns) == m.cfg.Spawns {
			found = append(found, detection{"spawn-storm", detectionRiskStorm,
				itoa(len(t.spawns)) + " delegations within a second"})
		}
	case ev.Type == mandate.EventToolCall:
		if ev.Details["arg_secrets"] != nil && slices.Contains(stringList(ev.Details["tool_labels"]), "external_send") {
			found = append(found, detection{"secret-to-sink", detectionRiskSecretOut,
				"a call to a tool that sends data out carries a secret in its arguments"})
		}
	}
	var alerts []*mandate.Event
	revoke := ""
	for _, d := range found {
		t.risk = min(m.decayed(t, now)+d.risk, 100)
		t.at = now
		t.evidence = append(t.evidence, ev.Index)
		if len(t.evidence) > maxEvidence {
			t.evidence = t.evidence[len(t.evidence)-maxEvidence:]
		}
		alerts = append(alerts, &mandate.Event{V: mandate.EventVersion, Time: now.UnixNano(), Type: mandate.EventAlert,
			Task: ev.Task, Mandate: ev.Mandate, Agent: ev.Agent, Chain: ev.Chain, Subject: ev.Subject,
			Action: "detect", Resource: ev.Resource, Outcome: mandate.OutcomeDeny, Reason: d.reason, By: "monitor",
			Details: map[string]any{"detector": d.detector, "risk": int64(math.Round(t.risk)), "evidence": evidenceOf(t.evidence)}})
		if m.cfg.RevokeAt > 0 && t.risk >= float64(m.cfg.RevokeAt) && !t.revoked {
			t.revoked, revoke = true, d.detector
		}
	}
	m.mu.Unlock()
	if len(alerts) > 0 {
		if err := m.cfg.Alerts.Append(ctx, alerts...); err != nil {
			m.cfg.Logger.Error("monitor: alert not recorded", "task", ev.Task, "err", err)
		}
		for _, a := range alerts {
			m.cfg.Logger.Warn("monitor: alert", "task", a.Task, "detector", a.Details["detector"], "risk", a.Details["risk"], "reason", a.Reason)
		}
	}
	if revoke != "" && m.cfg.Revoke != nil {
		if err := m.cfg.Revoke(ctx, ev.Task, "the monitor's "+revoke+" detector raised the task's risk to "+itoa(m.Risk(ev.Task))); err != nil {
			m.cfg.Logger.Error("monitor: task not revoked", "task", ev.Task, "err", err)
		}
	}
}

// task returns the state of a task, creating it (and forgetting another
// beyond maxTasks).
func (m *Monitor) task(id string, now time.Time) *task {
	t := m.tasks[id]
	if t == nil {
		if len(m.tasks) >= maxTasks {
			// Forget one task, quickly: first one whose risk has decayed
			// to nothing, else any (map order is random). A scan for the
			// least recently seen would cost every new task 100,000 steps.
			n := 0
			for k, v := range m.tasks {
				if m.decayed(v, now) < 1 || n == 16 {
					delete(m.tasks, k)
					break
				}
				n++
			}
		}
		t = &task{}
		m.tasks[id] = t
	}
	return t
}

func within(ts []time.Time, now time.Time, d time.Duration) []time.Time {
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > d {
		i++
	}
	return ts[i:]
}

// stringList reads a details list: []string in process, []any once read
// back from the log.
func stringList(v any) []string {
	switch x := v.(type) {
	case []string:
		return x
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func evidenceOf(ids []int64) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

func itoa(n int) string {
	return formatInt(int64(n))
}
