package auditcheck_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	mandate "github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditcheck"
	"github.com/mandatehq/mandate/auditlog/layout"
)

const origin = "mandate.example/audit"

// honestLog writes a log of n events to a new directory.
func honestLog(t *testing.T, n int) (string, logKey) {
	t.Helper()
	dir := t.TempDir()
	key := newKey(t, origin)
	writeLog(t, dir, events(t, n, ""), key)
	return dir, key
}

func verify(t *testing.T, src auditcheck.Source, opts auditcheck.Options) *auditcheck.Report {
	t.Helper()
	rep, err := auditcheck.Verify(context.Background(), src, opts)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func wantOK(t *testing.T, rep *auditcheck.Report) {
	t.Helper()
	if !rep.OK() || rep.FirstBad != -1 {
		t.Fatalf("want OK, got:\n%s", rep)
	}
}

// wantProblem checks that the verification failed with a problem
// starting with prefix, and that the first bad entry is firstBad.
func wantProblem(t *testing.T, rep *auditcheck.Report, firstBad int64, prefixes ...string) {
	t.Helper()
	if rep.OK() {
		t.Fatalf("verified, want problems %q:\n%s", prefixes, rep)
	}
	for _, prefix := range prefixes {
		found := false
		for _, p := range rep.Problems {
			found = found || strings.HasPrefix(p, prefix)
		}
		if !found {
			t.Errorf("no problem starting with %q:\n%s", prefix, rep)
		}
	}
	if rep.FirstBad != firstBad {
		t.Errorf("FirstBad = %d, want %d:\n%s", rep.FirstBad, firstBad, rep)
	}
	t.Logf("report:\n%s", rep)
}

func TestHonestLogs(t *testing.T) {
	for _, n := range []int{0, 1, 2, 255, 256, 257, 1000, 256*256 + 300} {
		t.Run("", func(t *testing.T) {
			if n > 10000 && testing.Short() {
				t.Skip("short")
			}
			dir := t.TempDir()
			key := newKey(t, origin)
			root := writeLog(t, dir, events(t, n, ""), key)
			rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
			wantOK(t, rep)
			if rep.Origin != origin || rep.Size != uint64(n) || rep.Root != root || rep.Entries != uint64(n) || rep.KeyFromLog || len(rep.Warnings) != 0 {
				t.Errorf("report:\n%s", rep)
			}
		})
	}
}

func TestTrustOnFirstUse(t *testing.T) {
	dir, key := honestLog(t, 300)
	rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{})
	wantOK(t, rep)
	if !rep.KeyFromLog || rep.Key != key.vkey || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "trust on first use") {
		t.Errorf("report:\n%s", rep)
	}

	// With a state file, the key is remembered: the second time, it is not
	// taken from the log, and a new key served by the log is a problem.
	state := filepath.Join(t.TempDir(), "state.json")
	wantOK(t, verify(t, auditcheck.DirSource(dir), auditcheck.Options{State: state}))
	rep = verify(t, auditcheck.DirSource(dir), auditcheck.Options{State: state})
	wantOK(t, rep)
	if rep.KeyFromLog || len(rep.Warnings) != 0 {
		t.Errorf("second verification:\n%s", rep)
	}
	other := newKey(t, origin)
	writeLog(t, dir, events(t, 300, ""), other) // the same entries, signed by another key
	rep = verify(t, auditcheck.DirSource(dir), auditcheck.Options{State: state})
	wantProblem(t, rep, -1, "the log's key has changed", "checkpoint is not signed by the log key "+origin+"+")
}

func TestModifiedEntry(t *testing.T) {
	dir, key := honestLog(t, 1000)
	editBundle(t, dir, 1, 256, func(entries [][]byte) [][]byte {
		e, err := mandate.ParseEvent(entries[44])
		if err != nil {
			t.Fatal(err)
		}
		e.Outcome = mandate.OutcomeDeny
		entries[44], _ = mandate.MarshalEvent(e)
		return entries
	})
	rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
	wantProblem(t, rep, 300,
		"root mismatch: entries do not match the signed checkpoint",
		"entry 300 does not match its hash in tile/0/001: it was changed or replaced")
}

// TestModifiedEntryAndTile changes an entry and its hash in the level-0
// tile: the tile above still tells which entries changed.
func TestModifiedEntryAndTile(t *testing.T) {
	dir, key := honestLog(t, 1000)
	var h tlog.Hash
	editBundle(t, dir, 2, 256, func(entries [][]byte) [][]byte {
		entries[7] = eventAt(t, 512+7, "edited")
		h = tlog.RecordHash(entries[7])
		return entries
	})
	tile := readFile(t, dir, "tile/0/002")
	copy(tile[7*32:], h[:])
	writeFile(t, dir, "tile/0/002", tile)
	rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
	wantProblem(t, rep, -1,
		"root mismatch: entries do not match the signed checkpoint",
		"entries 512 to 767 do not hash to tile/1/000.p/3 (hash 2): one of them was changed, and the tiles below rewritten to match")
}

func TestDeletedEntry(t *testing.T) {
	t.Run("from its bundle", func(t *testing.T) {
		dir, key := honestLog(t, 1000)
		editBundle(t, dir, 1, 256, func(entries [][]byte) [][]byte {
			return append(entries[:10:10], entries[11:]...)
		})
		rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
		wantProblem(t, rep, 266,
			"truncated: checkpoint covers 1000 entries, only 999 present",
			"entry 266 is missing from tile/entries/001 (deleted)")
	})
	t.Run("log rewritten without it", func(t *testing.T) {
		// The insider rewrites every bundle and tile, all but the
		// checkpoint: the log is one entry short, and with every hash
		// recomputed, nothing tells which entry went.
		dir, key := honestLog(t, 1000)
		checkpoint := readFile(t, dir, layout.CheckpointPath)
		if err := os.RemoveAll(filepath.Join(dir, "tile")); err != nil {
			t.Fatal(err)
		}
		all := events(t, 1000, "")
		writeLog(t, dir, append(all[:500:500], all[501:]...), key)
		writeFile(t, dir, layout.CheckpointPath, checkpoint)
		rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
		wantProblem(t, rep, 999,
			"truncated: checkpoint covers 1000 entries, only 999 present",
			"tile/entries/003.p/231 holds 231 entries, the checkpoint needs 232")
	})
}

func TestReorderedEntries(t *testing.T) {
	t.Run("within a bundle", func(t *testing.T) {
		dir, key := honestLog(t, 1000)
		editBundle(t, dir, 0, 256, func(entries [][]byte) [][]byte {
			entries[20], entries[21] = entries[21], entries[20]
			return entries
		})
		rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
		wantProblem(t, rep, 20,
			"root mismatch: entries do not match the signed checkpoint",
			"entry 20 is out of place: the tiles put it at index 21 (reordered entries)",
			"entry 21 is out of place: the tiles put it at index 20 (reordered entries)")
		if !hasWarning(rep, "entry 21 is dated") {
			t.Errorf("no warning about the time of entry 21:\n%s", rep)
		}
	})
	t.Run("across bundles", func(t *testing.T) {
		dir, key := honestLog(t, 1000)
		b0 := decodeBundle(t, dir, 0, 256)
		b3 := decodeBundle(t, dir, 3, 1000-768)
		b0[5], b3[100] = b3[100], b0[5]
		writeBundle(t, dir, 0, 256, b0)
		writeBundle(t, dir, 3, 232, b3)
		rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
		wantProblem(t, rep, 5,
			"root mismatch: entries do not match the signed checkpoint",
			"entry 5 is out of place: the tiles put it at index 868 (reordered entries)",
			"entry 868 is out of place: the tiles put it at index 5 (reordered entries)")
	})
}

func TestAppendedEntry(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int
		append func(t *testing.T, dir string, key logKey)
		want   string
	}{
		{"log grown, checkpoint not", 1000, func(t *testing.T, dir string, key logKey) {
			checkpoint := readFile(t, dir, layout.CheckpointPath)
			writeLog(t, dir, events(t, 1001, ""), key)
			writeFile(t, dir, layout.CheckpointPath, checkpoint)
		}, "1 entry not covered by a signed checkpoint: the checkpoint covers 1000, the log holds 1001"},
		{"into the partial bundle", 1000, func(t *testing.T, dir string, key logKey) {
			editBundle(t, dir, 3, 1000-768, func(entries [][]byte) [][]byte {
				return append(entries, eventAt(t, 1000, ""), eventAt(t, 1001, ""))
			})
		}, "2 entries not covered by a signed checkpoint: the checkpoint covers 1000, the log holds 1002"},
		{"a new bundle", 512, func(t *testing.T, dir string, key logKey) {
			writeBundle(t, dir, 2, 1, [][]byte{eventAt(t, 512, "")})
		}, "1 entry not covered by a signed checkpoint: the checkpoint covers 512, the log holds 513"},
		{"full bundles and more", 300, func(t *testing.T, dir string, key logKey) {
			checkpoint := readFile(t, dir, layout.CheckpointPath)
			writeLog(t, dir, events(t, 1000, ""), key)
			os.Remove(filepath.Join(dir, "tile/entries/001.p/44"))
			writeFile(t, dir, layout.CheckpointPath, checkpoint)
		}, "700 entries not covered by a signed checkpoint: the checkpoint covers 300, the log holds 1000"},
		{"to an empty log", 0, func(t *testing.T, dir string, key logKey) {
			writeBundle(t, dir, 0, 1, [][]byte{eventAt(t, 0, "")})
		}, "1 entry not covered by a signed checkpoint: the checkpoint covers 0, the log holds 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, key := honestLog(t, tc.size)
			tc.append(t, dir, key)
			rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
			wantProblem(t, rep, -1, tc.want)
			if len(rep.Problems) != 1 {
				t.Errorf("more problems than the uncovered entries:\n%s", rep)
			}
		})
	}
}

func TestTruncatedLog(t *testing.T) {
	t.Run("last bundle removed", func(t *testing.T) {
		dir, key := honestLog(t, 1000)
		os.Remove(filepath.Join(dir, "tile/entries/003.p/232"))
		rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
		wantProblem(t, rep, 768,
			"truncated: checkpoint covers 1000 entries, only 768 present",
			"tile/entries/003.p/232 is missing: entries 768 to 999")
	})
	t.Run("cut to an earlier size", func(t *testing.T) {
		dir, key := honestLog(t, 1000)
		checkpoint := readFile(t, dir, layout.CheckpointPath)
		if err := os.RemoveAll(filepath.Join(dir, "tile")); err != nil {
			t.Fatal(err)
		}
		writeLog(t, dir, events(t, 700, ""), key)
		writeFile(t, dir, layout.CheckpointPath, checkpoint)
		rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
		wantProblem(t, rep, 700,
			"truncated: checkpoint covers 1000 entries, only 700 present",
			"tile/entries/002.p/188 holds 188 entries, the checkpoint needs 256",
			"tile/entries/003.p/232 is missing: entries 768 to 999")
	})
	t.Run("last entry cut from its bundle", func(t *testing.T) {
		dir, key := honestLog(t, 1000)
		editBundle(t, dir, 3, 232, func(entries [][]byte) [][]byte { return entries[:231] })
		rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
		wantProblem(t, rep, 999,
			"truncated: checkpoint covers 1000 entries, only 999 present",
			"entry 999 is missing from tile/entries/003.p/232 (deleted)")
	})
}

func TestForkedHistory(t *testing.T) {
	dir, key := honestLog(t, 500)
	state := filepath.Join(t.TempDir(), "state.json")
	opts := auditcheck.Options{VerifierKey: key.vkey, State: state}
	wantOK(t, verify(t, auditcheck.DirSource(dir), opts))

	// Honest growth is consistent.
	writeLog(t, dir, events(t, 800, ""), key)
	rep := verify(t, auditcheck.DirSource(dir), opts)
	wantOK(t, rep)
	if rep.Previous == nil || rep.Previous.Size != 500 {
		t.Errorf("Previous = %+v", rep.Previous)
	}

	// Another history, longer, signed by the same key.
	fork := t.TempDir()
	writeLog(t, fork, events(t, 1000, "fork"), key)
	rep = verify(t, auditcheck.DirSource(fork), opts)
	wantProblem(t, rep, -1, "forked history: the log's first 800 entries no longer hash to the root seen before")

	// The same size, another root.
	fork = t.TempDir()
	writeLog(t, fork, events(t, 800, "fork"), key)
	rep = verify(t, auditcheck.DirSource(fork), opts)
	wantProblem(t, rep, -1, "forked history: the log's first 800 entries no longer hash to the root seen before")

	// A failed verification does not move the state: the honest log,
	// grown, still verifies.
	writeLog(t, dir, events(t, 900, ""), key)
	wantOK(t, verify(t, auditcheck.DirSource(dir), opts))
}

func TestRollback(t *testing.T) {
	dir, key := honestLog(t, 1000)
	state := filepath.Join(t.TempDir(), "state.json")
	opts := auditcheck.Options{VerifierKey: key.vkey, State: state}
	wantOK(t, verify(t, auditcheck.DirSource(dir), opts))
	old := t.TempDir()
	writeLog(t, old, events(t, 600, ""), key) // the same log, as it was earlier
	rep := verify(t, auditcheck.DirSource(old), opts)
	wantProblem(t, rep, -1, "the log shrank (rollback): now 600 entries, previously 1000")
}

func TestCheckpointByAnotherKey(t *testing.T) {
	dir, key := honestLog(t, 1000)
	other := newKey(t, origin) // the same name, another key
	cp := readCheckpoint(t, dir)
	writeFile(t, dir, layout.CheckpointPath, signCheckpoint(t, other, origin, cp.size, cp.root))
	rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
	wantProblem(t, rep, -1, "checkpoint is not signed by the log key "+origin+"+")
	if len(rep.Problems) != 1 || !strings.Contains(rep.Problems[0], "it is signed by "+origin+"+") {
		t.Errorf("problems: %q", rep.Problems)
	}
}

func TestCheckpointChanged(t *testing.T) {
	dir, key := honestLog(t, 1000)
	raw := readFile(t, dir, layout.CheckpointPath)
	writeFile(t, dir, layout.CheckpointPath, []byte(strings.Replace(string(raw), "\n1000\n", "\n999\n", 1)))
	rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
	wantProblem(t, rep, -1, "checkpoint signature by the log key "+origin+"+")

	writeFile(t, dir, layout.CheckpointPath, []byte("not a note"))
	rep = verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
	wantProblem(t, rep, -1, "checkpoint is not a signed note")
}

func TestOriginIsNotKeyName(t *testing.T) {
	dir := t.TempDir()
	key := newKey(t, origin)
	root := writeLog(t, dir, events(t, 10, ""), key)
	writeFile(t, dir, layout.CheckpointPath, signCheckpoint(t, key, "other.example/audit", 10, root))
	rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
	wantProblem(t, rep, -1, `the checkpoint's origin "other.example/audit" is not the name of the log key`)
}

func TestNonCanonicalEntry(t *testing.T) {
	dir, key := honestLog(t, 300)
	editBundle(t, dir, 1, 300-256, func(entries [][]byte) [][]byte {
		entries[3] = []byte(strings.Replace(string(entries[3]), `"v":1,`, `"v": 1,`, 1))
		return entries
	})
	rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
	wantProblem(t, rep, 259,
		"root mismatch: entries do not match the signed checkpoint",
		"entry 259 is not in canonical form")
}

// TestWrongTile: the entries are right, a tile is not; the problem is the
// tile's.
func TestWrongTile(t *testing.T) {
	dir, key := honestLog(t, 1000)
	tile := readFile(t, dir, "tile/0/001")
	tile[100] ^= 1
	writeFile(t, dir, "tile/0/001", tile)
	os.Remove(filepath.Join(dir, "tile/1/000.p/3"))
	rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
	wantProblem(t, rep, -1,
		"tile/0/001 does not match the entries, which match the signed checkpoint: its hash for entry 259 is wrong",
		"tile/1/000.p/3 is missing")
}

func TestTimeGoesBack(t *testing.T) {
	dir := t.TempDir()
	key := newKey(t, origin)
	entries := events(t, 20, "")
	entries[7], entries[8] = entries[8], entries[7] // signed that way
	writeLog(t, dir, entries, key)
	rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey,
		Now: func() time.Time { return time.Unix(0, 1764412800_000_000_000+10_000_000).Add(-time.Minute) }})
	wantOK(t, rep)
	if !hasWarning(rep, "entry 8 is dated 2025-11-29T10:40:00.007Z, before the entry preceding it (2025-11-29T10:40:00.008Z)") ||
		!hasWarning(rep, "entry 11 is dated 2025-11-29T10:40:00.011Z, in the future") || !hasWarning(rep, "9 entries in all are dated in the future") {
		t.Errorf("warnings: %q", rep.Warnings)
	}
}

func TestStateFile(t *testing.T) {
	dir, key := honestLog(t, 300)
	state := filepath.Join(t.TempDir(), "sub", "state.json")
	opts := auditcheck.Options{VerifierKey: key.vkey, State: state,
		Now: func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }}
	wantOK(t, verify(t, auditcheck.DirSource(dir), opts))
	fi, err := os.Stat(state)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v", fi.Mode())
	}
	var got struct {
		Logs map[string]struct {
			Key      string
			Size     uint64
			Root     tlog.Hash
			Verified time.Time
		}
	}
	if err := json.Unmarshal(readFile(t, filepath.Dir(state), "state.json"), &got); err != nil {
		t.Fatal(err)
	}
	cp := readCheckpoint(t, dir)
	if s := got.Logs[origin]; s.Key != key.vkey || s.Size != 300 || s.Root != cp.root || !s.Verified.Equal(opts.Now()) {
		t.Errorf("state: %+v", got)
	}

	// A failed verification leaves the state alone.
	before := readFile(t, filepath.Dir(state), "state.json")
	os.Remove(filepath.Join(dir, "tile/entries/000"))
	wantProblem(t, verify(t, auditcheck.DirSource(dir), opts), 0, "truncated")
	if after := readFile(t, filepath.Dir(state), "state.json"); string(after) != string(before) {
		t.Errorf("state changed after a failure:\n%s", after)
	}

	// An unreadable state is an error, not a fresh start.
	writeFile(t, filepath.Dir(state), "state.json", []byte("{"))
	if _, err := auditcheck.Verify(context.Background(), auditcheck.DirSource(dir), opts); err == nil || !strings.Contains(err.Error(), "state file") {
		t.Errorf("corrupt state file: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	ctx := context.Background()
	empty := t.TempDir()
	if _, err := auditcheck.Verify(ctx, auditcheck.DirSource(empty), auditcheck.Options{}); err == nil || !strings.Contains(err.Error(), "serves no verifier key") {
		t.Errorf("no vkey: %v", err)
	}
	key := newKey(t, origin)
	if _, err := auditcheck.Verify(ctx, auditcheck.DirSource(empty), auditcheck.Options{VerifierKey: key.vkey}); !errors.Is(err, auditcheck.ErrNotFound) {
		t.Errorf("no checkpoint: %v", err)
	}
	if _, err := auditcheck.Verify(ctx, auditcheck.DirSource(empty), auditcheck.Options{VerifierKey: "nonsense"}); err == nil {
		t.Error("bad key: no error")
	}
	if _, err := auditcheck.Verify(ctx, auditcheck.DirSource(filepath.Join(empty, "nothing")), auditcheck.Options{}); err == nil || errors.Is(err, auditcheck.ErrNotFound) {
		t.Errorf("no such directory: %v", err)
	}
	dir, key := honestLog(t, 1000)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := auditcheck.Verify(cctx, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
}

// TestHugeCheckpoint: a checkpoint claiming far more entries than there
// are does not keep the verifier busy.
func TestHugeCheckpoint(t *testing.T) {
	dir, key := honestLog(t, 1000)
	cp := readCheckpoint(t, dir)
	writeFile(t, dir, layout.CheckpointPath, signCheckpoint(t, key, origin, 1<<62, cp.root))
	rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
	wantProblem(t, rep, 1000, "truncated: checkpoint covers 4611686018427387904 entries, only 1000 present")
}

func TestDirSource(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	dir := filepath.Join(root, "log")
	writeFile(t, root, "secret", []byte("s"))
	writeFile(t, dir, "checkpoint", []byte("c"))
	writeFile(t, dir, "tile/0/000", make([]byte, auditcheck.MaxTileSize+1))
	if err := os.Symlink("../secret", filepath.Join(dir, "vkey")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("checkpoint", filepath.Join(dir, "inside")); err != nil {
		t.Fatal(err)
	}
	src := auditcheck.DirSource(dir)
	if b, err := src.ReadFile(ctx, "checkpoint"); err != nil || string(b) != "c" {
		t.Errorf("checkpoint: %q, %v", b, err)
	}
	if b, err := src.ReadFile(ctx, "inside"); err != nil || string(b) != "c" {
		t.Errorf("symbolic link inside: %q, %v", b, err)
	}
	for _, p := range []string{"../secret", "/etc/passwd", "tile/../../secret", "vkey", ".", "", `..\secret`} {
		if b, err := src.ReadFile(ctx, p); err == nil || errors.Is(err, auditcheck.ErrNotFound) {
			t.Errorf("ReadFile(%q) = %q, %v; want a refusal", p, b, err)
		}
	}
	if _, err := src.ReadFile(ctx, "tile/0/000"); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized tile: %v", err)
	}
	for _, p := range []string{"tile/0/001", "tile/0/000.p/3", "checkpoint/x"} {
		if _, err := src.ReadFile(ctx, p); !errors.Is(err, auditcheck.ErrNotFound) {
			t.Errorf("ReadFile(%q): %v, want ErrNotFound", p, err)
		}
	}
}

func TestHTTPSource(t *testing.T) {
	dir, key := honestLog(t, 1000)
	mux := http.NewServeMux()
	mux.Handle("/audit/", http.StripPrefix("/audit/", http.FileServer(http.Dir(dir))))
	mux.HandleFunc("/big/tile/0/000", func(w http.ResponseWriter, r *http.Request) {
		w.Write(make([]byte, auditcheck.MaxTileSize+1))
	})
	mux.HandleFunc("/big/checkpoint", func(w http.ResponseWriter, r *http.Request) {
		for range 100 {
			w.Write(make([]byte, 1024)) // no Content-Length
		}
	})
	mux.Handle("/moved/", http.RedirectHandler("/audit/checkpoint", http.StatusFound))
	mux.HandleFunc("/broken/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "oops", http.StatusInternalServerError)
	})
	mux.HandleFunc("/locked/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"error":"EUNAUTHORIZED","message":"send the admin credential"}`))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	src := auditcheck.HTTPSource(srv.URL+"/audit/", srv.Client())
	rep := verify(t, src, auditcheck.Options{})
	wantOK(t, rep)
	if rep.Key != key.vkey || !rep.KeyFromLog || rep.Size != 1000 {
		t.Errorf("report:\n%s", rep)
	}

	// Tampering shows over HTTP too.
	writeBundle(t, dir, 3, 232, append(decodeBundle(t, dir, 3, 232), eventAt(t, 1000, "")))
	wantProblem(t, verify(t, src, auditcheck.Options{VerifierKey: key.vkey}), -1, "1 entry not covered by a signed checkpoint")

	ctx := context.Background()
	if _, err := src.ReadFile(ctx, "tile/0/999"); !errors.Is(err, auditcheck.ErrNotFound) {
		t.Errorf("404: %v", err)
	}
	if _, err := src.ReadFile(ctx, "../checkpoint"); err == nil {
		t.Error("../checkpoint: no error")
	}
	big := auditcheck.HTTPSource(srv.URL+"/big", nil)
	for _, p := range []string{"tile/0/000", "checkpoint"} {
		if _, err := big.ReadFile(ctx, p); err == nil || errors.Is(err, auditcheck.ErrNotFound) {
			t.Errorf("oversized %s: %v", p, err)
		}
	}
	if _, err := auditcheck.Verify(ctx, auditcheck.HTTPSource(srv.URL+"/broken", nil), auditcheck.Options{}); err == nil || errors.Is(err, auditcheck.ErrNotFound) || !strings.HasSuffix(err.Error(), ": 500 Internal Server Error: oops") {
		t.Errorf("HTTP 500: %v", err)
	}
	if _, err := auditcheck.HTTPSource(srv.URL+"/locked", nil).ReadFile(ctx, "tile/entries/000"); err == nil || !strings.HasSuffix(err.Error(), ": 401 Unauthorized: send the admin credential") {
		t.Errorf("HTTP 401: %v", err)
	}
	// A redirect is not followed, whatever the client: a log is read from
	// where it was asked for.
	for _, c := range []*http.Client{nil, srv.Client()} {
		moved := auditcheck.HTTPSource(srv.URL+"/moved", c)
		if _, err := moved.ReadFile(ctx, "checkpoint"); err == nil || !strings.Contains(err.Error(), "302") {
			t.Errorf("a redirect: %v", err)
		}
	}
}

func TestReportJSON(t *testing.T) {
	dir, key := honestLog(t, 3)
	rep := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	cp := readCheckpoint(t, dir)
	if got["ok"] != true || got["origin"] != origin || got["size"] != 3.0 || got["root"] != cp.root.String() ||
		got["first_bad"] != -1.0 || got["problems"] == nil || got["key"] != key.vkey {
		t.Errorf("JSON report: %s", b)
	}
	writeFile(t, dir, layout.CheckpointPath, []byte("x"))
	b, _ = json.Marshal(verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey}))
	if !strings.Contains(string(b), `"ok":false`) || !strings.Contains(string(b), `"problems":["checkpoint is not a signed note`) {
		t.Errorf("JSON report: %s", b)
	}
}

func TestMaxFileSize(t *testing.T) {
	for p, want := range map[string]int64{
		"checkpoint":             64 << 10,
		"vkey":                   64 << 10,
		"tile/0/000":             1 << 20,
		"tile/3/x001/000.p/4":    1 << 20,
		"tile/entries/000":       17 << 20,
		"tile/entries/000.p/255": 17 << 20,
	} {
		if got := auditcheck.MaxFileSize(p); got != want {
			t.Errorf("MaxFileSize(%q) = %d, want %d", p, got, want)
		}
	}
	if 256*(2+65535) > auditcheck.MaxBundleSize {
		t.Error("a full bundle of the largest entries does not fit")
	}
}

func hasWarning(rep *auditcheck.Report, prefix string) bool {
	for _, w := range rep.Warnings {
		if strings.HasPrefix(w, prefix) {
			return true
		}
	}
	return false
}

func decodeBundle(t *testing.T, dir string, n uint64, width int) [][]byte {
	t.Helper()
	entries, err := layout.DecodeBundle(readFile(t, dir, layout.EntriesPath(n, width)), width)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// writeBundle writes entries as bundle n, at the path of a bundle of
// width entries (whatever their number), as an insider would.
func writeBundle(t *testing.T, dir string, n uint64, width int, entries [][]byte) {
	t.Helper()
	b, err := layout.EncodeBundle(entries)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dir, layout.EntriesPath(n, width), b)
}

func editBundle(t *testing.T, dir string, n uint64, width int, edit func([][]byte) [][]byte) {
	t.Helper()
	writeBundle(t, dir, n, width, edit(decodeBundle(t, dir, n, width)))
}

type checkpoint struct {
	origin string
	size   uint64
	root   tlog.Hash
}

func readCheckpoint(t *testing.T, dir string) checkpoint {
	t.Helper()
	raw := string(readFile(t, dir, layout.CheckpointPath))
	o, s, r, err := layout.ParseCheckpoint([]byte(raw[:strings.Index(raw, "\n\n")+1]))
	if err != nil {
		t.Fatal(err)
	}
	return checkpoint{o, s, r}
}
