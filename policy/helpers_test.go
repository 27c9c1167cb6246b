package policy

import (
	"log/slog"
	"os"
	"time"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func defaultOrFile(name string) ([]byte, error) {
	if b, err := defaultFS.ReadFile(name); err == nil {
		return b, nil
	}
	return os.ReadFile(name)
}

// timeAt is hour h of the week starting Monday 2026-03-02, UTC.
func timeAt(h int) time.Time {
	return time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC).Add(time.Duration(h) * time.Hour)
}
