package dirlock

import (
	"errors"
	"os"
	"testing"
	"time"
)

// A second lock of a held directory is refused with the holder's pid,
// even in the same process (flock locks belong to the open file), and
// the directory is free again once the first is released.
func TestAcquire(t *testing.T) {
	dir := t.TempDir()
	since := time.Date(2026, 12, 8, 1, 2, 3, 0, time.UTC)
	l, err := Acquire(dir, since)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Acquire(dir, time.Now())
	var he *HeldError
	if !errors.As(err, &he) || !errors.Is(err, ErrHeld) || he.PID != os.Getpid() || !he.Since.Equal(since) {
		t.Fatalf("second Acquire: %v, want a HeldError naming pid %d since %v", err, os.Getpid(), since)
	}
	if h, err := Holder(dir); err != nil || h == nil || h.PID != os.Getpid() {
		t.Fatalf("Holder = %v, %v; want pid %d", h, err, os.Getpid())
	}
	if fi, err := os.Stat(dir + "/" + Name); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v, %v; want mode 0600", fi, err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if h, err := Holder(dir); err != nil || h != nil {
		t.Fatalf("Holder after Release = %v, %v; want none", h, err)
	}
	l2, err := Acquire(dir, time.Now())
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	l2.Release()
}

// A directory no server used has no holder, and Holder creates nothing.
func TestHolderNoLockFile(t *testing.T) {
	dir := t.TempDir()
	if h, err := Holder(dir); err != nil || h != nil {
		t.Fatalf("Holder = %v, %v", h, err)
	}
	if _, err := os.Stat(dir + "/" + Name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Holder created the lock file: %v", err)
	}
}
