package sqlite_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"

	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/sqlite"
	"golang.org/x/mod/sumdb/tlog"
)

// logBuffer is a log the test reads: the store's lines, as text.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger { return slog.New(slog.NewTextHandler(b, nil)) }

// mountTmpfs mounts a tmpfs of size bytes on a new directory, or skips the
// test where mounting is not allowed.
func mountTmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("a full disk needs a small filesystem of its own, and mounting a tmpfs is not allowed here (%v): run as root to run this test", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill writes a file until the filesystem is full and returns its path.
func fill(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	// And the last few bytes a smaller write still finds.
	for _, n := range []int{4096, 512, 1} {
		for {
			if _, err := f.Write(chunk[:n]); err != nil {
				break
			}
		}
	}
	return p
}

// A full disk degrades the store: writes are refused at once, health says
// degraded, and once space is freed the store recovers by itself (here, at
// the test's call, in place of the backoff's timer): writes flow again
// without a restart, every write that was answered success is in the log
// (and after a restart too), and none that was refused stands.
func TestDiskFullDegradesAndRecovers(t *testing.T) {
	dir := mountTmpfs(t, 16<<20)
	var logs logBuffer
	path := filepath.Join(dir, "m.db")
	cfg := sqlite.Config{Path: path, Logger: logs.logger(), WALLimit: 64 << 10}
	s, err := sqlite.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	ctx := context.Background()
	ev := func(i int) *mandate.Event {
		return &mandate.Event{V: 1, Time: int64(i + 1), Type: mandate.EventDecision, Task: fmt.Sprintf("t_%d", i), Reason: strings.Repeat("r", 200)}
	}
	acked := map[string]bool{}      // tasks of appends answered success
	revoked := map[string]bool{}    // revocations answered success
	refusedRev := map[string]bool{} // and refused
	exp := time.Now().Add(time.Hour)
	for i := range 50 {
		if err := s.Append(ctx, ev(i)); err != nil {
			t.Fatal(err)
		}
		acked[fmt.Sprintf("t_%d", i)] = true
	}
	// Revocations before the disk fills, so that the WAL has started over
	// (WALLimit) and is reused in place: a change can then commit while
	// its event finds no room in the log, and is held.
	for i := range 100 {
		id := fmt.Sprintf("m_%d", i)
		if err := s.Revoke(ctx, &mandate.Revocation{MandateID: id, ExpiresAt: exp, RevokedAt: time.Now()}, ev(i)); err != nil {
			t.Fatal(err)
		}
		revoked[id] = true
	}
	filler := fill(t, dir)
	// Write until the disk refuses. A write held until its events reach
	// the log is answered by the recovery: the answers are read after it.
	type pending struct {
		task, id       string
		appErr, revErr error
		done           chan struct{}
	}
	var writes []*pending
	i := 100
	for ; s.Health().State == sqlite.StateOK && i < 100000; i++ {
		p := &pending{task: fmt.Sprintf("t_%d", i), id: fmt.Sprintf("m_%d", i), done: make(chan struct{})}
		writes = append(writes, p)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); p.appErr = s.Append(ctx, ev(i)) }()
		go func() {
			defer wg.Done()
			p.revErr = s.Revoke(ctx, &mandate.Revocation{MandateID: p.id, ExpiresAt: exp, RevokedAt: time.Now()}, ev(i))
		}()
		go func() { wg.Wait(); close(p.done) }()
		// Until both are answered or the store degraded.
		for deadline := time.Now().Add(time.Minute); ; {
			select {
			case <-p.done:
			default:
				if s.Health().State == sqlite.StateOK && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
					continue
				}
			}
			break
		}
	}
	held := 0
	for _, p := range writes {
		select {
		case <-p.done:
		default:
			held++
		}
	}
	h := s.Health()
	if h.State != sqlite.StateDegraded {
		t.Fatalf("after %d writes on a full disk: state %q, want degraded", i, h.State)
	}
	// Refused at once, without the committer.
	if err := s.Append(ctx, ev(0)); mandate.ErrorCode(err) != mandate.EUNAVAILABLE || !strings.Contains(mandate.ErrorMessage(err), "retry later") {
		t.Fatalf("append while degraded: %v", err)
	}
	select {
	case <-s.Failed():
		t.Fatal("a full disk failed the store for good")
	default:
	}
	// Still full: the recovery fails and the store stays degraded.
	if err := s.Recover(); err == nil {
		t.Fatal("recovered on a full disk")
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := s.Recover(); err != nil {
		t.Fatalf("recovery after freeing the disk: %v", err)
	}
	if st := s.Health().State; st != sqlite.StateOK {
		t.Fatalf("state %q after the recovery", st)
	}
	for _, p := range writes {
		<-p.done
		if p.appErr == nil {
			acked[p.task] = true
		} else if mandate.ErrorCode(p.appErr) != mandate.EUNAVAILABLE {
			t.Fatalf("append on a full disk: %v", p.appErr)
		}
		if p.revErr == nil {
			revoked[p.id] = true
		} else {
			refusedRev[p.id] = true
		}
	}
	for j := range 20 {
		if err := s.Append(ctx, ev(i+j)); err != nil {
			t.Fatalf("append after the recovery: %v", err)
		}
		acked[fmt.Sprintf("t_%d", i+j)] = true
	}
	check := func(s *sqlite.Store, when string) {
		t.Helper()
		for task := range acked {
			evs, err := s.Events(ctx, mandate.EventFilter{Task: task, Type: mandate.EventDecision})
			if err != nil || len(evs) == 0 {
				t.Fatalf("%s: the acknowledged event of %s is not in the log (%v)", when, task, err)
			}
		}
		for id := range revoked {
			if ok, _ := s.IsRevoked(ctx, id); !ok {
				t.Errorf("%s: revocation %s was acknowledged and is not there", when, id)
			}
		}
		for id := range refusedRev {
			if ok, _ := s.IsRevoked(ctx, id); ok {
				t.Errorf("%s: revocation %s was refused and stands", when, id)
			}
		}
		size, root := s.LogHead()
		if got, err := tlog.TreeHash(size, s.HashReader(ctx)); err != nil || got != root {
			t.Fatalf("%s: the log's tree does not match its head: %v", when, err)
		}
	}
	check(s, "after the recovery")
	for _, want := range []string{"a write to the disk failed", "store: recovered"} {
		if n := strings.Count(logs.String(), want); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", want, n, logs.String())
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = sqlite.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	check(s, "after a restart")
	t.Logf("%d writes until the disk was full; %d held until the recovery; %d revocations acknowledged, %d refused", len(writes), held, len(revoked), len(refusedRev))
}

// A failed fsync fails the store for good: Failed is closed, health says
// failed, the error names the fault, and a later fsync that would succeed
// changes nothing.
func TestFailedFsyncFailsForGood(t *testing.T) {
	var logs logBuffer
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "m.db"), Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	fail := true
	var mu sync.Mutex
	s.SetSyncHook(func() error {
		mu.Lock()
		defer mu.Unlock()
		if fail {
			fail = false
			return syscall.EIO
		}
		return nil
	})
	if err := s.Append(ctx, &mandate.Event{V: 1, Time: 1, Type: mandate.EventDecision}); mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("append whose fsync failed: %v", err)
	}
	select {
	case <-s.Failed():
	case <-time.After(time.Minute):
		t.Fatal("Failed was not closed after a failed fsync")
	}
	if h := s.Health(); h.State != sqlite.StateFailed || !strings.Contains(h.Reason, "fsync of the audit log") {
		t.Errorf("health %+v", h)
	}
	if err := s.Err(); err == nil || !errors.Is(err, syscall.EIO) {
		t.Errorf("Err() = %v, want the EIO", err)
	}
	for range 3 {
		if err := s.Append(ctx, &mandate.Event{V: 1, Time: 2, Type: mandate.EventDecision}); mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
			t.Fatalf("append after the store failed: %v", err)
		}
	}
	if err := s.Recover(); err == nil {
		t.Error("a failed store recovered")
	}
	if n := strings.Count(logs.String(), "failed for good"); n != 1 {
		t.Errorf("the failure logged %d times, want once", n)
	}
}

// closedLogDir returns a store directory with n events logged and a
// checkpoint of them stored, closed, and its log's root.
func closedLogDir(t *testing.T, n int) (string, tlog.Hash) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.db")
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := 0; i < n; i += 100 {
		var evs []*mandate.Event
		for j := i; j < min(i+100, n); j++ {
			evs = append(evs, &mandate.Event{V: 1, Time: int64(j + 1), Type: mandate.EventDecision, Task: fmt.Sprintf("t_%d", j)})
		}
		if err := s.Append(ctx, evs...); err != nil {
			t.Fatal(err)
		}
	}
	size, root := s.LogHead()
	// The signature is not checked here: the store reads the size and root.
	note := fmt.Sprintf("test/audit\n%d\n%s\n\n— test/audit AAAA\n", size, base64.StdEncoding.EncodeToString(root[:]))
	if err := s.SaveCheckpoint(ctx, size, []byte(note)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return path, root
}

// damage overwrites length bytes of file at off with zeros.
func damage(t *testing.T, file string, off int64, length int) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, length), off); err != nil {
		t.Fatal(err)
	}
}

// A damaged derived file of a closed store's log (a lost page of offsets
// reads as zeros; a tile is damaged) is rebuilt from the entries at open,
// with one line saying so: the store starts, and reads and verifies as
// before.
func TestDamagedDerivedFilesRebuilt(t *testing.T) {
	const n = 3000
	for _, tc := range []struct {
		name, file string
		off        int64
		length     int
	}{
		{"offsets", "offsets", 2048 * 8, 4096},
		{"tiles", "tile-0", 8192 + 100, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, root := closedLogDir(t, n)
			damage(t, filepath.Join(strings.TrimSuffix(path, ".db")+"-log", tc.file), tc.off, tc.length)
			var logs logBuffer
			s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, Logger: logs.logger()})
			if err != nil {
				t.Fatalf("open with damaged %s: %v", tc.name, err)
			}
			defer s.Close()
			ctx := context.Background()
			if size, got := s.LogHead(); size != n || got != root {
				t.Fatalf("log head %d after the rebuild, want %d and the same root", size, n)
			}
			if got, err := tlog.TreeHash(n, s.HashReader(ctx)); err != nil || got != root {
				t.Fatalf("the tree from the tiles after the rebuild: %v", err)
			}
			entries, err := s.ReadEntries(ctx, 0, n)
			if err != nil || len(entries) != n {
				t.Fatalf("reading the entries after the rebuild: %v", err)
			}
			for i, e := range entries {
				ev, err := mandate.ParseEvent(e)
				if err != nil || ev.Task != fmt.Sprintf("t_%d", i) {
					t.Fatalf("entry %d after the rebuild: %v %v", i, ev, err)
				}
			}
			line := ""
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, "damaged") {
					line = l
				}
			}
			if !strings.Contains(line, "level=WARN") || !strings.Contains(line, tc.name) || !strings.Contains(line, "rebuilt") || !strings.Contains(line, "took=") {
				t.Errorf("no WARN line saying the %s were rebuilt:\n%s", tc.name, logs.String())
			}
		})
	}
}

// degradeOnFullDisk fills the filesystem of dir and appends until the
// store degrades, then frees the disk again.
func degradeOnFullDisk(t *testing.T, s *sqlite.Store, dir string) {
	t.Helper()
	filler := fill(t, dir)
	ctx := context.Background()
	for i := 0; s.Health().State == sqlite.StateOK; i++ {
		if i == 100000 {
			t.Fatal("the store took 100000 writes on a full disk")
		}
		s.Append(ctx, &mandate.Event{V: 1, Time: int64(i + 1), Type: mandate.EventDecision, Reason: strings.Repeat("r", 2000)})
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
}

// A recovery loads the revocations again by the pruners' clock, never
// ahead of the time elapsed since Open: after a jump of the wall clock
// forward, later corrected, a revocation of a live mandate still stands.
func TestRecoveryKeepsRevocationsAcrossAClockJump(t *testing.T) {
	dir := mountTmpfs(t, 8<<20)
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(dir, "m.db"), Now: clock, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	exp := now.Add(10 * time.Minute)
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: "m_live", ExpiresAt: exp, RevokedAt: now},
		&mandate.Event{V: 1, Time: 1, Type: mandate.EventMandateRevoked, Mandate: "m_live"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(time.Hour) // the wall clock jumps forward
	mu.Unlock()
	degradeOnFullDisk(t, s, dir)
	if err := s.Recover(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(-time.Hour) // and is corrected
	mu.Unlock()
	if ok, _ := s.IsRevoked(ctx, "m_live"); !ok {
		t.Fatal("the revocation of a live mandate was forgotten by a recovery while the wall clock was ahead")
	}
}

// Readers of the log's head, its tiles and entries run while a recovery
// rebuilds them, and see only a durable, consistent head (run with -race).
func TestRecoveryBesideReaders(t *testing.T) {
	dir := mountTmpfs(t, 8<<20)
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(dir, "m.db"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			size, root := s.LogHead()
			if size == 0 {
				continue
			}
			if got, err := tlog.TreeHash(size, s.HashReader(ctx)); err != nil || got != root {
				t.Errorf("head %d: tree hash %v, %v", size, got, err)
				return
			}
			if _, err := s.ReadEntries(ctx, size-1, 1); err != nil {
				t.Errorf("head %d: %v", size, err)
				return
			}
		}
	}()
	degradeOnFullDisk(t, s, dir)
	if err := s.Recover(); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
}
