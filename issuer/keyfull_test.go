package issuer_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate/issuer"
)

// A rotation whose announcement is durable but whose keyring file cannot
// be saved after it (the disk filled in between: a real tmpfs) has taken
// effect: the log says the new key signs, so it signs, and the caller is
// not told the rotation failed; a second rotation makes a new key rather
// than announcing the first again. A restart finds the key pending in the
// file and its event in the log, and activates it (Finish).
func TestKeyringRotationAnnouncedThenDiskFull(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", 1<<20)); err != nil {
		t.Skipf("a full disk needs a small filesystem of its own, and mounting a tmpfs is not allowed here (%v): run as root to run this test", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	path := filepath.Join(dir, "keys", "signing.json")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ctx := context.Background()
	r, err := issuer.OpenKeyring(path, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	first, err := r.Finish(ctx, t0, noAnnounce)
	if err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	var announced []string
	fillAfter := func(_ context.Context, next *issuer.SigningKey, _ string) error {
		announced = append(announced, next.ID)
		f, err := os.Create(filler)
		if err != nil {
			return err
		}
		defer f.Close()
		for chunk := make([]byte, 4096); ; {
			if _, err := f.Write(chunk); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatal(err)
				}
				return nil
			}
		}
	}
	k, err := r.Rotate(ctx, t0.Add(time.Minute), fillAfter)
	if err != nil {
		t.Fatalf("Rotate whose announcement is durable: %v", err)
	}
	if a := r.Active(); a == nil || a.ID != k.ID || a.ID == first.ID {
		t.Fatalf("after the announced rotation the active key is %v, want %s", a, k.ID)
	}
	if r.Pending() != nil {
		t.Error("the announced key is still pending")
	}
	// The restart before the file caught up: pending there, activated by
	// Finish, which finds its event in the log (here: announced).
	r2, err := issuer.OpenKeyring(path, time.Hour, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if p := r2.Pending(); p == nil || p.ID != k.ID {
		t.Fatalf("reopened: pending %v, want %s", p, k.ID)
	}
	os.Remove(filler)
	k2, err := r.Rotate(ctx, t0.Add(3*time.Minute), fillAfter)
	os.Remove(filler)
	if err != nil {
		t.Fatal(err)
	}
	if k2.ID == k.ID || len(announced) != 2 || announced[1] != k2.ID {
		t.Fatalf("second rotation: key %s after %s, announced %v; want a new key announced once", k2.ID, k.ID, announced)
	}
}
