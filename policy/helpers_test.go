package policy

import (
	"log/slog"
	"os"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func defaultOrFile(name string) ([]byte, error) {
	if b, err := defaultFS.ReadFile(name); err == nil {
		return b, nil
	}
	return os.ReadFile(name)
}
