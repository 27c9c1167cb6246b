package mandate

import (
	"testing"
	"time"
)

func TestIDTime(t *testing.T) {
	for _, at := range []time.Time{time.UnixMilli(0), time.Date(2026, 11, 29, 12, 0, 0, 123e6, time.UTC), time.UnixMilli(1<<48 - 1)} {
		id := NewID(TaskIDPrefix, at)
		got, ok := IDTime(TaskIDPrefix, id)
		if !ok || !got.Equal(at.Truncate(time.Millisecond)) {
			t.Errorf("IDTime(%s) = %v %v, want %v", id, got, ok, at)
		}
		if first, ok := IDTime(TaskIDPrefix, FirstID(TaskIDPrefix, at)); !ok || !first.Equal(got) {
			t.Errorf("FirstID at %v: %v %v", at, first, ok)
		}
	}
	for _, bad := range []string{"", "t_", "m_01JD0000000000000000000000", "t_01JD000000000000000000000", "t_81JD0000000000000000000000", "t_01JD00000000000000000000U0"} {
		if _, ok := IDTime(TaskIDPrefix, bad); ok {
			t.Errorf("IDTime(%q) accepted", bad)
		}
	}
}
