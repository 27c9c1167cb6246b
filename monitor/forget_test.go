package monitor

import (
	"context"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
)

// forget takes an idle entry if it sees one, else one that may go, and
// only else anything: a held task is the last to be forgotten.
func TestForgetSparesHolds(t *testing.T) {
	for range 100 {
		m := map[string]*task{"held": {hold: "a person must look"}}
		for _, k := range []string{"a", "b", "c"} {
			m[k] = &task{read: 1} // not idle, not held
		}
		forget(m, func(v *task) bool { return false }, func(v *task) bool { return v.hold == "" })
		if m["held"] == nil || len(m) != 3 {
			t.Fatalf("forgot the held task, or not one: %v", len(m))
		}
	}
	m := map[string]*task{"idle": {read: -1}, "busy": {read: 1}}
	forget(m, func(v *task) bool { return v.read < 0 }, func(*task) bool { return true })
	if m["idle"] != nil || m["busy"] == nil {
		t.Error("an idle task was not the one forgotten")
	}
}

// Past its bound, the monitor forgets a task whose mandates all expired
// before a live one that read sensitive data.
func TestForgetEndedTasksFirst(t *testing.T) {
	m := New(Config{})
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for range 100 {
		tasks := map[string]*task{
			"live":  {read: 3, end: now.Add(time.Minute).UnixNano()},
			"ended": {read: 1, end: now.Add(-2 * time.Minute).UnixNano()},
		}
		forget(tasks, func(v *task) bool { return m.taskIdle(v, now.UnixNano()) }, func(v *task) bool { return v.hold == "" })
		if tasks["live"] == nil {
			t.Fatal("a live task that read sensitive data was forgotten before one that ended")
		}
	}
	// A task's end is its mandates' latest expiry, from their issuance
	// events.
	exp := now.Add(time.Hour)
	m.Process(context.Background(), mandate.LoggedEvent{Event: mandate.NewIssuanceEvent(&mandate.Issuance{MandateID: "m_1", TaskID: "t_1",
		AgentID: "spiffe://example.org/agent/a", Scope: "mcp:crm:*", KeyID: "k", IssuedAt: now, ExpiresAt: exp}, now)})
	if got := m.tasks["t_1"].end; got != exp.UnixMilli()*int64(time.Millisecond) {
		t.Errorf("the task's end: %v, want %v", time.Unix(0, got), exp)
	}
}
