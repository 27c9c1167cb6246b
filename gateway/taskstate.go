package gateway

import (
	"container/list"
	"slices"
	"strings"
	"sync"
	"time"
)

// What the gateway remembers of each task, for policy (context.labels and
// context.history, docs/gateway.md "Task state"): the data labels the
// task has touched, and counters of its calls. A task's agents share it,
// however deep the tree: what one sub-agent read, a sibling cannot send
// out unseen.
type taskStates struct {
	mu   sync.Mutex
	max  int
	idle time.Duration
	m    map[string]*list.Element
	lru  *list.List // of *taskState, most recently used first
}

type taskState struct {
	task    string
	labels  []string // sorted
	history map[string]int64
	used    time.Time
}

// Bounds of the task state.
const (
	maxTaskStates = 100_000
	taskStateIdle = 2 * time.Hour // past the longest mandate's life
	maxTaskLabels = 64
)

func newTaskStates() *taskStates {
	return &taskStates{max: maxTaskStates, idle: taskStateIdle, m: map[string]*list.Element{}, lru: list.New()}
}

// get returns a copy of a task's labels and counters.
func (t *taskStates) get(task string, now time.Time) ([]string, map[string]int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[task]
	if !ok {
		return nil, nil
	}
	s := e.Value.(*taskState)
	if now.Sub(s.used) > t.idle {
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
	e, ok := t.m[task]
	if !ok {
		for t.lru.Len() >= t.max {
			last := t.lru.Back()
			delete(t.m, last.Value.(*taskState).task)
			t.lru.Remove(last)
		}
		e = t.lru.PushFront(&taskState{task: task, history: map[string]int64{}})
		t.m[task] = e
	}
	s := e.Value.(*taskState)
	s.used = now
	t.lru.MoveToFront(e)
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
	if e, ok := t.m[task]; ok {
		s := e.Value.(*taskState)
		s.history[counter] += n
		s.used = now
		t.lru.MoveToFront(e)
	}
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
