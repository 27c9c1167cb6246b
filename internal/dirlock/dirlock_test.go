package dirlock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
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

// A lock file that is a symbolic link is refused, and what it points to
// is left as it was: the holder writes its pid into the lock file, and a
// link (put there by someone who can write the directory, or copied in
// with a backup) would have a server, perhaps running as root, truncate
// any file it names.
func TestAcquireRefusesSymlink(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	victim := filepath.Join(other, "signing.json")
	if err := os.WriteFile(victim, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(dir, Name)); err != nil {
		t.Skipf("no symbolic links here: %v", err)
	}
	l, err := Acquire(dir, time.Now())
	if err == nil {
		l.Release()
		t.Error("a lock file that is a symbolic link was taken")
	} else if !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("refusal %q does not say why", err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "precious" {
		t.Errorf("the file the link names was changed to %q", b)
	}
	if h, err := Holder(dir); err == nil {
		t.Errorf("Holder through a symbolic link: %v, nil; want an error", h)
	}
}
