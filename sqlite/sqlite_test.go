package sqlite_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/sqlite"
	"github.com/mandatehq/mandate/storetest"
	"golang.org/x/mod/sumdb/tlog"
)

func TestConformance(t *testing.T) {
	paths := map[storetest.Store]string{}
	open := func(t *testing.T, path string) storetest.Store {
		s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		paths[s] = path
		return s
	}
	storetest.Run(t,
		func(t *testing.T) storetest.Store { return open(t, filepath.Join(t.TempDir(), "m.db")) },
		func(t *testing.T, s storetest.Store) storetest.Store {
			if err := s.(*sqlite.Store).Close(); err != nil {
				t.Fatal(err)
			}
			return open(t, paths[s])
		})
}

func TestDatabaseFileIsPrivate(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o755) // a data directory that others may list
	path := filepath.Join(dir, "sub", "m.db")
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Write something so that the WAL and its index exist.
	if err := s.Revoke(context.Background(), &mandate.Revocation{MandateID: "m", ExpiresAt: time.Now().Add(time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", filepath.Base(p), fi.Mode().Perm())
		}
	}
	di, _ := os.Stat(filepath.Dir(path))
	if di.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", di.Mode().Perm())
	}
}

func TestClosedStoreRefusesWrites(t *testing.T) {
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "m.db")})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	rec := &mandate.Issuance{MandateID: "m", TaskID: "t", AgentID: "spiffe://example.org/agent/a", Scope: "s", KeyID: "k"}
	err = s.RecordIssuance(context.Background(), rec, mandate.NewIssuanceEvent(rec, time.Now()))
	if mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("write to a closed store: %v", err)
	}
}

func TestPruneRevocations(t *testing.T) {
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "m.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	ctx := context.Background()
	s.Revoke(ctx, &mandate.Revocation{MandateID: "short", ExpiresAt: now.Add(time.Second), RevokedAt: now}, nil)
	s.Revoke(ctx, &mandate.Revocation{MandateID: "long", ExpiresAt: now.Add(time.Hour), RevokedAt: now}, nil)
	if n := s.PruneRevocations(now.Add(2 * time.Second)); n != 1 {
		t.Errorf("pruned %d, want 1", n)
	}
	if ok, _ := s.IsRevoked(ctx, "long"); !ok {
		t.Error("a live revocation was pruned")
	}
}

// The WAL stays bounded under writes that never pause: the committer
// restarts it past the limit (PASSIVE checkpoints alone never can). The
// writes are revocations: changes to the database, whose events wait in
// log_pending until the log holds them.
func TestWALStaysBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	const limit = 1 << 20
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, WALLimit: limit})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	var maxWAL atomic.Int64
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 400 {
				id := fmt.Sprintf("m_%d_%d", w, i)
				ev := &mandate.Event{V: 1, Time: time.Now().UnixNano(), Type: mandate.EventMandateRevoked, Mandate: id,
					Reason: strings.Repeat("x", 2000)}
				r := &mandate.Revocation{MandateID: id, ExpiresAt: time.Now().Add(time.Hour), RevokedAt: time.Now(), RevokedBy: "admin"}
				if err := s.Revoke(ctx, r, ev); err != nil {
					t.Error(err)
					return
				}
				if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() > maxWAL.Load() {
					maxWAL.Store(fi.Size())
				}
			}
		}()
	}
	wg.Wait()
	// 3,200 events of ~2 KB: ~7 MB written. The WAL restarts past 1 MB;
	// allow for a transaction's worth beyond the limit.
	if got := maxWAL.Load(); got > 4*limit {
		t.Errorf("WAL reached %d bytes with a %d-byte limit", got, limit)
	}
	// Each of the committer's checkpoints fsyncs the database while every
	// writer waits: about one per limit's worth of WAL frames (a
	// transaction here writes ~3 pages of 8 KiB, so ~40 transactions per
	// MiB), not one per transaction once the file has reached the limit's
	// size.
	if st := s.Stats(); st.WALCheckpoints == 0 || st.WALCheckpoints > st.Commits/10 {
		t.Errorf("the committer checkpointed %d times in %d transactions with a %d-byte limit", st.WALCheckpoints, st.Commits, limit)
	}
}

// A damaged or foreign event index is rebuilt from the log at start, and
// queries find every event again.
func TestEventIndexRebuilt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.db")
	ctx := context.Background()
	cfg := sqlite.Config{Path: path, IndexFlushEntries: 256}
	s, err := sqlite.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1100 {
		if err := s.Append(ctx, &mandate.Event{V: 1, Time: int64(i), Type: mandate.EventDecision, Task: fmt.Sprintf("t_%d", i%2)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.FlushIndex(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	runs, _ := filepath.Glob(filepath.Join(dir, "m-events-index", "run-*"))
	if len(runs) == 0 {
		t.Fatal("no run files were written")
	}
	// Damage a run, as a disk might, and leave a foreign file beside it.
	if err := os.WriteFile(runs[0], []byte("not a run, not at all, this is garbage of some length"), 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "m-events-index", "run-00000000000000000000-00000000000099999999.idx"), []byte("x"), 0o600)
	s, err = sqlite.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, f := range []mandate.EventFilter{{Task: "t_1"}, {Task: "t_0", Last: true, Limit: 550}, {Type: mandate.EventDecision, Since: time.Unix(0, 100)}} {
		evs, err := s.Events(ctx, f)
		want := 550
		if !f.Since.IsZero() {
			want = 1000
		}
		if err != nil || len(evs) != want {
			t.Fatalf("%+v after the rebuild: %d events (%v), want %d", f, len(evs), err, want)
		}
	}
}

// When the disk does not confirm a write, the writes of that fsync fail,
// nothing of them is released (not the log head a checkpoint would sign),
// and every later write fails too, even if a later fsync would succeed.
func TestFailedFsyncReleasesNothing(t *testing.T) {
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "m.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	ev := func() *mandate.Event { return &mandate.Event{V: 1, Time: 1, Type: mandate.EventDecision} }
	if err := s.Append(ctx, ev()); err != nil {
		t.Fatal(err)
	}
	size, root := s.LogHead()
	var fail atomic.Bool
	fail.Store(true)
	s.SetSyncHook(func() error {
		if fail.Load() {
			return errors.New("EIO")
		}
		return nil
	})
	if err := s.Append(ctx, ev()); mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("append whose fsync failed: %v", err)
	}
	fail.Store(false) // Linux reports a writeback error once
	if err := s.Append(ctx, ev()); mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
		t.Fatalf("append after a failed fsync: %v", err)
	}
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: "m", ExpiresAt: time.Now().Add(time.Hour)}, nil); err == nil {
		t.Fatal("a revocation was acknowledged after a failed fsync")
	}
	if ok, _ := s.IsRevoked(ctx, "m"); ok {
		t.Error("the cache shows a revocation that was refused")
	}
	if size2, root2 := s.LogHead(); size2 != size || root2 != root {
		t.Errorf("the log head moved to %d after a failed fsync (was %d)", size2, size)
	}
}

// PruneMandates deletes the revocations and used assertions that no live
// mandate needs, while every issuance stays readable from its event.
func TestPruneMandates(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	var clock atomic.Int64 // Unix ns
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()).UTC() }
	// The clock stands for time that passes: the elapsed time follows it.
	elapsed := func() time.Duration { return now().Sub(t0) }
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "m.db"), Now: now, Elapsed: elapsed})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	record := func(issued time.Time, ttl, assertionTTL time.Duration) *mandate.Issuance {
		t.Helper()
		id := mandate.NewID(mandate.MandateIDPrefix, issued)
		rec := &mandate.Issuance{MandateID: id, TaskID: id, AgentID: "spiffe://example.org/agent/a", Subject: "user:alice@example.org",
			Scope: "mcp:crm:list", KeyID: "k", IssuedAt: issued, ExpiresAt: issued.Add(ttl), AssertionID: "j" + id, AssertionExpiry: issued.Add(assertionTTL)}
		if err := s.RecordIssuance(ctx, rec, mandate.NewIssuanceEvent(rec, issued)); err != nil {
			t.Error(err)
		}
		return rec
	}

	// What a pruning at t0 keeps and drops.
	gone := record(t0.Add(-time.Hour), time.Minute, time.Minute)
	live := record(t0.Add(-time.Hour), 2*time.Hour, time.Minute)
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: gone.MandateID, ExpiresAt: gone.ExpiresAt, RevokedAt: t0.Add(-time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: live.MandateID, ExpiresAt: live.ExpiresAt, RevokedAt: t0.Add(-time.Hour)}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordAssertion(ctx, "spiffe://example.org/agent/a", "old", t0.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	size, _ := s.LogHead()
	n, err := s.PruneMandates(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	// The assertion recorded above was used at t0 (the store's clock): kept.
	if n != 1 {
		t.Errorf("pruned %d rows, want 1 (a revocation)", n)
	}
	for _, rec := range []*mandate.Issuance{gone, live} {
		if got, err := s.Issuance(ctx, rec.MandateID); err != nil || got.Scope != rec.Scope {
			t.Errorf("mandate %s: %+v %v: an issuance stays readable from its event", rec.MandateID, got, err)
		}
	}
	if ok, _ := s.IsRevoked(ctx, live.MandateID); !ok {
		t.Error("a live revocation was pruned")
	}
	if size2, _ := s.LogHead(); size2 != size {
		t.Errorf("log size %d after pruning, was %d", size2, size)
	}
	// Not in the future: that would forget live revocations.
	if _, err := s.PruneMandates(ctx, t0.Add(time.Second)); mandate.ErrorCode(err) != mandate.EINVALID {
		t.Errorf("pruning with a time after now: %v, want EINVALID", err)
	}
	clock.Store(t0.Add(3 * time.Hour).UnixNano())
	if n, err := s.PruneMandates(ctx, t0.Add(3*time.Hour)); err != nil || n != 2 {
		t.Errorf("pruned %d rows (%v) at t0+3h, want 2 (a revocation, an assertion)", n, err)
	}
}

// A database of schema version 2 (before approvals and agent labels)
// migrates, and its agents read back with the defaults of the new fields.
func TestMigrateFromVersion2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"migrations/0001_init.sql", "migrations/0002_auditlog.sql"} {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(string(body)); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	a := storetest.NewAgent("old")
	var entries [][]byte
	for i := range 3 {
		entry, _ := mandate.MarshalEvent(&mandate.Event{V: 1, Time: int64(i), Type: mandate.EventAgentRegistered, Agent: a.ID})
		if _, err := db.Exec(`INSERT INTO log_entries(idx, data) VALUES(?, ?)`, i, entry); err != nil {
			t.Fatal(err)
		}
		entries = append(entries, entry)
	}
	// A mandate issued just before the upgrade: its events did not name
	// the client assertion, so the assertion must survive the table.
	now := time.Now()
	if _, err := db.Exec(`INSERT INTO mandates(id, task_id, parent_id, agent_id, subject, scope, audience, key_id, jkt,
		issued_at, expires_at, purpose, assertion_jti, assertion_exp) VALUES('m_1', 't_1', '', ?, 'user:a@example.org', 's', '', 'k', '', ?, ?, '', 'jti-1', ?)`,
		a.ID, now.UnixMilli(), now.Add(time.Minute).UnixMilli(), now.Add(time.Minute).UnixMilli()); err != nil {
		t.Fatal(err)
	}
	// A first move of the log that a crash interrupted after one entry.
	logDir := filepath.Join(filepath.Dir(path), "m-log")
	os.MkdirAll(logDir, 0o700)
	os.WriteFile(filepath.Join(logDir, "entries"), binary.BigEndian.AppendUint16(nil, uint16(len(entries[0]))), 0o600)
	f, _ := os.OpenFile(filepath.Join(logDir, "entries"), os.O_APPEND|os.O_WRONLY, 0o600)
	f.Write(entries[0])
	f.Close()
	if _, err := db.Exec(`PRAGMA user_version = 2;
		INSERT INTO agents(id, name, owner, ceiling, public_key, key_thumbprint, status, created_at, updated_at)
		VALUES(?,?,?,?,?,?,?,?,?)`,
		a.ID, a.Name, a.Owner, a.Ceiling.String(), a.PublicKey, a.KeyID, string(a.Status), a.CreatedAt.UnixMilli(), a.UpdatedAt.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Agent(context.Background(), a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ceiling.String() != a.Ceiling.String() || got.MaxDepth != 0 || got.Approval != nil || got.Approvers != nil || got.Labels != nil {
		t.Errorf("migrated agent: %+v", got)
	}
	if _, err := s.Approvals(context.Background(), mandate.ApprovalFilter{}); err != nil {
		t.Errorf("approvals after migration: %v", err)
	}
	// The log moved from the database into its files, the interrupted
	// move going on after what it had written.
	if size, _ := s.LogHead(); size != 3 {
		t.Fatalf("log size %d after migration, want 3", size)
	}
	if got, err := s.ReadEntries(context.Background(), 0, 3); err != nil || !bytes.Equal(bytes.Join(got, nil), bytes.Join(entries, nil)) {
		t.Errorf("the migrated entries: %q %v", got, err)
	}
	var jtis []string
	s.UsedAssertions(context.Background(), now.Add(-time.Hour), now, func(_, jti string, _ time.Time) error {
		jtis = append(jtis, jti)
		return nil
	})
	if len(jtis) != 1 || jtis[0] != "jti-1" {
		t.Errorf("used assertions after the upgrade: %v, want [jti-1]: its replay would be let through", jtis)
	}
}

// The right-most hash tiles are not stored as they grow: after a restart
// they are recomputed from the entries and the full tiles below, and match
// an independent computation (tlog's) at every level, before and after.
func TestLogRestartRecomputesTiles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "m.db")
	s, err := sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	const size = 256*256 + 300 // right-most tiles at levels 0, 1 and 2
	var records [][]byte
	for start := 0; start < size; start += 1000 {
		var evs []*mandate.Event
		for i := start; i < min(start+1000, size); i++ {
			evs = append(evs, &mandate.Event{V: 1, Time: int64(i), Type: mandate.EventDecision, Task: fmt.Sprintf("t_%d", i)})
		}
		if err := s.Append(ctx, evs...); err != nil {
			t.Fatal(err)
		}
	}
	for start := int64(0); start < size; start += 4096 {
		data, err := s.ReadEntries(ctx, start, min(4096, size-start))
		if err != nil {
			t.Fatal(err)
		}
		records = append(records, data...)
	}
	// The reference: every stored hash, computed by tlog from the records.
	var ref []tlog.Hash
	for i, r := range records {
		h, err := tlog.StoredHashes(int64(i), r, tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for j, x := range idx {
				out[j] = ref[x]
			}
			return out, nil
		}))
		if err != nil {
			t.Fatal(err)
		}
		ref = append(ref, h...)
	}
	refReader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for j, x := range idx {
			out[j] = ref[x]
		}
		return out, nil
	})
	wantRoot, err := tlog.TreeHash(size, refReader)
	if err != nil {
		t.Fatal(err)
	}
	check := func(s *sqlite.Store, when string) {
		t.Helper()
		if n, root := s.LogHead(); n != size || root != wantRoot {
			t.Fatalf("%s: head %d %x, want %d %x", when, n, root, size, wantRoot)
		}
		for _, tile := range tlog.NewTiles(8, 0, size) {
			if tile.L < 0 {
				continue
			}
			want, err := tlog.ReadTileData(tile, refReader)
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.ReadTile(ctx, tile.L, tile.N, tile.W)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s: tile %d/%d width %d differs (%v)", when, tile.L, tile.N, tile.W, err)
			}
		}
	}
	check(s, "before the restart")
	s.Close()
	if s, err = sqlite.Open(ctx, sqlite.Config{Path: path}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s, "after the restart")
}

// A change to the database is durable before its event reaches the log.
// If a crash loses the log's write, Open appends the event from
// log_pending, so that no change stands without its event; if the log
// holds another entry at that position, Open refuses the log.
func TestCrashBetweenChangeAndLog(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.db")
	ctx := context.Background()
	s, err := sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if err := s.Append(ctx, &mandate.Event{V: 1, Time: int64(i), Type: mandate.EventDecision, Task: "t_1"}); err != nil {
			t.Fatal(err)
		}
	}
	ev := &mandate.Event{V: 1, Time: 99, Type: mandate.EventMandateRevoked, Mandate: "m_1", Reason: "test"}
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: "m_1", ExpiresAt: time.Now().Add(time.Hour), RevokedAt: time.Now(), RevokedBy: "admin"}, ev); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// The crash: the log's last write (the revocation's event) and the
	// mark that covered it are lost; the database kept the change.
	logDir := filepath.Join(dir, "m-log")
	entries := filepath.Join(logDir, "entries")
	b, _ := os.ReadFile(entries)
	want, _ := mandate.MarshalEvent(ev)
	if !bytes.HasSuffix(b, want) {
		t.Fatal("the revocation's event is not the log's last entry")
	}
	os.WriteFile(entries, b[:len(b)-len(want)-2], 0o600)
	os.Remove(filepath.Join(logDir, "synced"))

	s, err = sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.IsRevoked(ctx, "m_1"); !ok {
		t.Fatal("the revocation was lost")
	}
	size, _ := s.LogHead()
	got, err := s.ReadEntries(ctx, size-1, 1)
	if err != nil || size != 11 || !bytes.Equal(got[0], want) {
		t.Fatalf("after the restart the log has %d entries, the last %q (%v): want the revocation's event appended", size, got, err)
	}
	if evs, _ := s.Events(ctx, mandate.EventFilter{Mandate: "m_1"}); len(evs) != 1 {
		t.Errorf("the appended event is not found by a query: %d", len(evs))
	}
	s.Close()

	// The other way: a change whose event position holds another entry.
	s, err = sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	ev2 := &mandate.Event{V: 1, Time: 100, Type: mandate.EventMandateRevoked, Mandate: "m_2", Reason: "test"}
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: "m_2", ExpiresAt: time.Now().Add(time.Hour), RevokedAt: time.Now(), RevokedBy: "admin"}, ev2); err != nil {
		t.Fatal(err)
	}
	s.Close()
	b, _ = os.ReadFile(entries)
	os.WriteFile(entries, bytes.Replace(b, []byte(`"m_2"`), []byte(`"m_3"`), 1), 0o600)
	os.Remove(filepath.Join(logDir, "synced"))
	if _, err := sqlite.Open(ctx, sqlite.Config{Path: path}); err == nil || !strings.Contains(err.Error(), "is not the event its transaction recorded") {
		t.Fatalf("Open with a changed pending entry: %v", err)
	}
}

// When the disk does not confirm a change to the database, its writer is
// answered (with the failure), not left waiting.
func TestFailedWALFsyncAnswers(t *testing.T) {
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "m.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetSyncHook(func() error { return errors.New("EIO") })
	done := make(chan error, 1)
	go func() {
		done <- s.Revoke(context.Background(), &mandate.Revocation{MandateID: "m", ExpiresAt: time.Now().Add(time.Hour)}, nil)
	}()
	select {
	case err := <-done:
		if mandate.ErrorCode(err) != mandate.EUNAVAILABLE {
			t.Errorf("Revoke after a failed fsync: %v, want EUNAVAILABLE", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Revoke was never answered after a failed fsync")
	}
}

// The index rebuilt from a long log (a first start after an upgrade, or
// its directory deleted) writes its runs as it goes, and answers.
func TestIndexRebuiltFromALongLog(t *testing.T) {
	dir := t.TempDir()
	cfg := sqlite.Config{Path: filepath.Join(dir, "m.db"), IndexFlushEntries: 256}
	s, err := sqlite.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 256*70 + 10 // more full tables than the index keeps waiting in memory
	for i := 0; i < n; i += 100 {
		var evs []*mandate.Event
		for j := i; j < min(i+100, n); j++ {
			evs = append(evs, &mandate.Event{V: 1, Time: int64(j + 1), Type: mandate.EventDecision, Task: fmt.Sprintf("t_%d", j%7)})
		}
		if err := s.Append(ctx, evs...); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if err := os.RemoveAll(filepath.Join(dir, "m-events-index")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		s, err = sqlite.Open(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Events(ctx, mandate.EventFilter{Task: "t_3", Last: true, Limit: 5})
		s.Close()
		if err != nil || len(got) != 5 || got[4].Index != n-1-(n-1-3)%7 {
			t.Fatalf("after the rebuild: %d events (%v), want the last 5 of t_3", len(got), err)
		}
	}
}

// A log that lost entries a signed checkpoint covers is refused as it was
// found: the events of pending changes are not written over positions the
// checkpoint signed.
func TestPendingEventsNeverOverwriteSignedPositions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.db")
	ctx := context.Background()
	s, err := sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := s.Append(ctx, &mandate.Event{V: 1, Time: int64(i), Type: mandate.EventDecision}); err != nil {
			t.Fatal(err)
		}
	}
	// A checkpoint that covers the next entry too (its own transaction
	// would have cleared the pending event had it come after it).
	if err := s.SaveCheckpoint(ctx, 6, []byte("a checkpoint of 6 entries")); err != nil {
		t.Fatal(err)
	}
	ev := &mandate.Event{V: 1, Time: 9, Type: mandate.EventMandateRevoked, Mandate: "m_1"}
	if err := s.Revoke(ctx, &mandate.Revocation{MandateID: "m_1", ExpiresAt: time.Now().Add(time.Hour), RevokedAt: time.Now()}, ev); err != nil {
		t.Fatal(err)
	}
	s.Close()
	entries := filepath.Join(dir, "m-log", "entries")
	b, _ := os.ReadFile(entries)
	want, _ := mandate.MarshalEvent(ev)
	cut := b[:len(b)-len(want)-2]
	os.WriteFile(entries, cut, 0o600)
	os.Remove(filepath.Join(dir, "m-log", "synced"))
	if _, err := sqlite.Open(ctx, sqlite.Config{Path: path}); err == nil || !strings.Contains(err.Error(), "fewer than the 6 its last signed checkpoint covers") {
		t.Fatalf("Open of a log shorter than its checkpoint, with a pending event: %v", err)
	}
	if after, _ := os.ReadFile(entries); !bytes.Equal(after, cut) {
		t.Error("the log was written to before it was refused")
	}
}

// Approvals and approvers of schema version 6 migrate: each approval's
// action and registered agent are derived from what it holds, so that it
// is shown for what it is and counts against its agent's limit; approvers
// are active.
func TestMigrateApprovalsFromVersion6(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 6; i++ {
		names, _ := filepath.Glob(fmt.Sprintf("migrations/%04d_*.sql", i))
		body, err := os.ReadFile(names[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := db.Exec(string(body)); err != nil {
			t.Fatalf("%s: %v", names[0], err)
		}
	}
	reg := mandate.AgentID("example.org", "orch")
	exp := time.Now().Add(time.Hour).UnixMilli()
	for _, r := range []struct{ id, parent, agent, actor string }{
		{"ap_1", "", reg, reg}, // a root mint
		{"ap_2", "m_1", reg + mandate.EphemeralSeparator + "7f3a", "jkt:x"},                                   // a delegation by a sub-agent
		{"ap_3", "m_1", reg + mandate.EphemeralSeparator + "7f3a", reg + mandate.EphemeralSeparator + "7f3a"}, // a held call
	} {
		if _, err := db.Exec(`INSERT INTO approvals(id, status, task, parent_mandate, agent, actor, subject, scope, audience, ttl_ms,
			reason, approvers, request_hash, created_at, expires_at, decided_at, decided_by, note)
			VALUES(?, 'pending', 't_1', ?, ?, ?, 'user:alice@example.org', 's', 'mcp:crm', 0, 'r', 'alice@example.org', 'h', 1, ?, 0, '', '')`,
			r.id, r.parent, r.agent, r.actor, exp); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Exec(`INSERT INTO approvers(email, token_hash, created_at) VALUES('alice@example.org', ?, 1); PRAGMA user_version = 6`,
		bytes.Repeat([]byte{7}, 32)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for id, want := range map[string]string{"ap_1": mandate.ApprovalMint, "ap_2": mandate.ApprovalDelegate, "ap_3": mandate.ApprovalToolCall} {
		if a, err := s.Approval(ctx, id); err != nil || a.Action != want {
			t.Errorf("%s after migration: %+v %v, want action %s", id, a, err, want)
		}
	}
	// The three count against orch: a fourth is past a limit of three.
	a := &mandate.Approval{ID: mandate.NewID(mandate.ApprovalIDPrefix, time.Now()), Action: mandate.ApprovalMint, Task: "t_2", Agent: reg, Actor: reg,
		Subject: "user:alice@example.org", Approvers: []string{"alice@example.org"}, RequestHash: "h", CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Minute)}
	var pe *mandate.PendingLimitError
	if err := s.CreateApproval(ctx, a, mandate.ApprovalLimits{PerAgent: 3}, nil); !errors.As(err, &pe) || pe.Pending != 3 {
		t.Errorf("a fourth approval of orch: %v", err)
	}
	if _, err := s.ApproverByTokenHash(ctx, bytes.Repeat([]byte{7}, 32)); err != nil {
		t.Errorf("the approver after migration: %v", err)
	}
}
