package auditcheck_test

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	mandate "github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditlog/layout"
)

// A logKey is a log's signing key and its verifier key text.
type logKey struct {
	signer note.Signer
	vkey   string
}

func newKey(t testing.TB, name string) logKey {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	return logKey{s, vkey}
}

// logWriter writes a log in the C2SP tlog-tiles layout that Mandate
// serves, with x/mod's tlog doing the hashing: the stored hashes with
// tlog.StoredHashes, the tiles with tlog.NewTiles and tlog.ReadTileData,
// the root with tlog.TreeHash. It is the reference the verifier's own
// tree computation is checked against. Like a real log, it leaves the
// partial tiles of earlier sizes in place when it grows.
type logWriter struct {
	t      testing.TB
	dir    string
	hashes []tlog.Hash // by stored hash index
	n      int64
	bundle [][]byte
}

func newLogWriter(t testing.TB, dir string) *logWriter {
	return &logWriter{t: t, dir: dir}
}

func (w *logWriter) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x >= int64(len(w.hashes)) {
			return nil, fmt.Errorf("no hash %d", x)
		}
		out[i] = w.hashes[x]
	}
	return out, nil
}

func (w *logWriter) add(entry []byte) {
	hs, err := tlog.StoredHashes(w.n, entry, w)
	if err != nil {
		w.t.Fatal(err)
	}
	w.hashes = append(w.hashes, hs...)
	w.bundle = append(w.bundle, entry)
	w.n++
	if len(w.bundle) == layout.TileWidth {
		w.writeBundle()
		w.bundle = w.bundle[:0]
	}
}

func (w *logWriter) writeBundle() {
	b, err := layout.EncodeBundle(w.bundle)
	if err != nil {
		w.t.Fatal(err)
	}
	n := uint64(w.n-1) / layout.TileWidth
	writeFile(w.t, w.dir, layout.EntriesPath(n, len(w.bundle)), b)
}

// publish writes the partial bundle, every tile, the checkpoint signed by
// key (its name is the origin) and the verifier key. It returns the root.
func (w *logWriter) publish(key logKey) tlog.Hash {
	if len(w.bundle) > 0 {
		w.writeBundle()
	}
	for _, tile := range tlog.NewTiles(layout.TileHeight, 0, w.n) {
		data, err := tlog.ReadTileData(tile, w)
		if err != nil {
			w.t.Fatal(err)
		}
		writeFile(w.t, w.dir, layout.HashTilePath(uint64(tile.L), uint64(tile.N), tile.W), data)
	}
	root, err := tlog.TreeHash(w.n, w)
	if err != nil {
		w.t.Fatal(err)
	}
	writeFile(w.t, w.dir, layout.CheckpointPath, signCheckpoint(w.t, key, key.signer.Name(), uint64(w.n), root))
	writeFile(w.t, w.dir, layout.VerifierKeyPath, []byte(key.vkey+"\n"))
	return root
}

func signCheckpoint(t testing.TB, key logKey, origin string, size uint64, root tlog.Hash) []byte {
	t.Helper()
	msg, err := note.Sign(&note.Note{Text: string(layout.FormatCheckpoint(origin, size, root))}, key.signer)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// writeLog writes a whole log of entries to dir, signed by key.
func writeLog(t testing.TB, dir string, entries [][]byte, key logKey) tlog.Hash {
	t.Helper()
	w := newLogWriter(t, dir)
	for _, e := range entries {
		w.add(e)
	}
	return w.publish(key)
}

func writeFile(t testing.TB, dir, path string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, dir, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(path)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// eventAt returns entry i of a realistic log of ~200-byte events: a
// mandate issued for each task, then a decision, a tool call and its
// result, with details as the server writes them, times increasing.
func eventAt(t testing.TB, i int, salt string) []byte {
	e := &mandate.Event{
		V:       mandate.EventVersion,
		Time:    1764412800_000_000_000 + int64(i)*1_000_000,
		Task:    fmt.Sprintf("t_01JDX3Q8M4ZP7V%010d", i/4),
		Mandate: fmt.Sprintf("m_01JDX3Q8M4ZP7V%010d", i/4),
		Agent:   "spiffe://example.org/agent/researcher",
		Outcome: mandate.OutcomeOK,
		Reason:  salt,
	}
	switch i % 4 {
	case 0:
		e.Type, e.Action = mandate.EventMandateIssued, "mint"
		e.Details = map[string]any{"scope": "mcp:github:list_*", "ttl_ms": json.Number("30000")}
	case 1:
		e.Type, e.Action, e.Resource = mandate.EventDecision, "tools/call", "mcp:github:list_issues"
	case 2:
		e.Type, e.Resource = mandate.EventToolCall, "mcp:github:list_issues"
	case 3:
		e.Type, e.Resource = mandate.EventToolResult, "mcp:github:list_issues"
		e.Details = map[string]any{"bytes": json.Number("1234")}
	}
	b, err := mandate.MarshalEvent(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func events(t testing.TB, n int, salt string) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = eventAt(t, i, salt)
	}
	return out
}
