package monitor

import "testing"

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
