// Package dirlock gives a data directory to one process at a time: the
// server takes an exclusive lock on <dir>/LOCK before it reads or writes
// anything else there, and holds it until it stops. Two servers on one
// directory would each append to the same audit log and database from
// their own in-memory state and overwrite each other's entries.
//
// The lock is an advisory lock of the operating system on the open file
// (flock(2) on Unix, LockFileEx on Windows), so it ends with the process
// however the process ends, SIGKILL included: a LOCK file left behind
// never blocks a restart. The file's content (the holder's pid and start
// time) is only for the message a second process prints; the lock is the
// truth.
//
// It is not for processes on different machines sharing a network
// filesystem, where advisory locks may not reach every client.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Name is the lock file's name in the directory.
const Name = "LOCK"

// ErrHeld is wrapped by the *HeldError of a directory another process
// holds: stop that process, or use another directory.
var ErrHeld = errors.New("the data directory is in use")

// HeldError names the process that holds a directory.
type HeldError struct {
	Dir   string
	PID   int       // 0 if the holder had not written it yet
	Since time.Time // when the holder took it; zero if unknown
}

func (e *HeldError) Error() string {
	who := "another process"
	if e.PID > 0 {
		who = "process " + strconv.Itoa(e.PID)
		if !e.Since.IsZero() {
			who += " (since " + e.Since.UTC().Format(time.RFC3339) + ")"
		}
	}
	return fmt.Sprintf("data directory %s is in use by %s", e.Dir, who)
}

func (e *HeldError) Unwrap() error { return ErrHeld }

// Lock is a held directory lock.
type Lock struct{ f *os.File }

// Acquire takes the exclusive lock of dir (which must exist) without
// waiting, and writes this process's pid and now into the lock file. If
// another process holds it, the error is a *HeldError.
func Acquire(dir string, now time.Time) (*Lock, error) {
	f, err := open(dir)
	if err != nil {
		return nil, err
	}
	if err := lock(f, true); err != nil {
		f.Close()
		return nil, held(dir, err)
	}
	// Written after locking: what a refused process reads is the holder's.
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(fmt.Sprintf("pid %d\nsince %s\n", os.Getpid(), now.UTC().Format(time.RFC3339Nano))), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return &Lock{f}, nil
}

// Holder returns the process that holds dir, or nil if none does (or
// dir has no lock file: no server of this version used it). It creates
// nothing: for a command that only looks at a directory, to say that a
// server owns it.
func Holder(dir string) (*HeldError, error) {
	f, err := openFile(filepath.Join(dir, Name), os.O_RDONLY)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close() // and the shared lock, if taken, with it
	if err := lock(f, false); err != nil {
		var he *HeldError
		if errors.As(held(dir, err), &he) {
			return he, nil
		}
		return nil, err
	}
	return nil, nil
}

// Release gives the directory up. The lock file stays: removing it would
// let a process that opened it just before lock a file no one else sees.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor releases the lock
	l.f = nil
	return err
}

func open(dir string) (*os.File, error) {
	f, err := openFile(filepath.Join(dir, Name), os.O_RDWR|os.O_CREATE)
	if err != nil {
		return nil, fmt.Errorf("lock the data directory: %w", err)
	}
	return f, nil
}

// openFile opens the lock file at p, which must be a regular file and not
// a symbolic link: the holder truncates it and writes its pid there, and
// through a link (put there by whoever can write the directory, or copied
// in with a backup) a server, perhaps running as root, would truncate any
// file the link names. O_NOFOLLOW where the system has it; the check
// before opening covers the others.
func openFile(p string, flag int) (*os.File, error) {
	if fi, err := os.Lstat(p); err == nil && !fi.Mode().IsRegular() {
		return nil, notRegular(p, fi.Mode())
	}
	f, err := os.OpenFile(p, flag|noFollow, 0o600)
	if err != nil {
		if fi, lerr := os.Lstat(p); lerr == nil && !fi.Mode().IsRegular() {
			return nil, notRegular(p, fi.Mode())
		}
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err != nil {
			return nil, err
		}
		return nil, notRegular(p, fi.Mode())
	}
	return f, nil
}

func notRegular(p string, mode os.FileMode) error {
	what := "a " + mode.Type().String()
	if mode&os.ModeSymlink != 0 {
		what = "a symbolic link"
	}
	return fmt.Errorf("%s is not a regular file but %s\nhint: remove it, and see that no one else can write the data directory", p, what)
}

// held makes the error of a lock that failed: a *HeldError naming the
// holder if it is held, the cause otherwise.
func held(dir string, err error) error {
	if !errors.Is(err, errWouldBlock) {
		return fmt.Errorf("lock the data directory %s: %w", dir, err)
	}
	e := &HeldError{Dir: dir}
	b, _ := os.ReadFile(filepath.Join(dir, Name))
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		switch k {
		case "pid":
			e.PID, _ = strconv.Atoi(v)
		case "since":
			e.Since, _ = time.Parse(time.RFC3339Nano, v)
		}
	}
	return e
}
