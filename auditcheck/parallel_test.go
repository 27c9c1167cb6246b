package auditcheck_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	mandate "github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditcheck"
	"github.com/mandatehq/mandate/auditlog/layout"
)

// TestParallelReportsWhatSequentialDoes: bundles are read and parsed
// several at a time, but the report, every problem and warning in its
// order, is the one of a verification that reads and checks one bundle
// after the other (Workers 1), from a directory and over HTTP, on a log
// tampered with in many places: more problems than the report details.
func TestParallelReportsWhatSequentialDoes(t *testing.T) {
	dir := t.TempDir()
	key := newKey(t, origin)
	const n = 256*24 + 77
	entries := make([][]byte, n)
	for i := range entries {
		entries[i] = realisticEntry(t, i, 7)
	}
	entries[1000], entries[1001] = entries[1001], entries[1000] // signed that way: a warning
	writeLog(t, dir, entries, key)

	editBundle(t, dir, 1, 256, func(es [][]byte) [][]byte { // a changed entry
		e, err := mandate.ParseEvent(es[44])
		if err != nil {
			t.Fatal(err)
		}
		e.Reason = "changed"
		es[44], _ = mandate.MarshalEvent(e)
		return es
	})
	editBundle(t, dir, 3, 256, func(es [][]byte) [][]byte { // a deleted entry
		return append(es[:10:10], es[11:]...)
	})
	editBundle(t, dir, 5, 256, func(es [][]byte) [][]byte { // reordered
		es[20], es[21] = es[21], es[20]
		return es
	})
	editBundle(t, dir, 7, 256, func(es [][]byte) [][]byte { // not canonical
		es[3] = []byte(strings.Replace(string(es[3]), `"v":1,`, `"v": 1,`, 1))
		return es
	})
	for k := uint64(9); k < 20; k++ { // many changed entries
		editBundle(t, dir, k, 256, func(es [][]byte) [][]byte {
			es[k] = realisticEntry(t, int(k)*256+int(k), 8)
			es[k+100] = realisticEntry(t, int(k)*256+int(k)+100, 8)
			return es
		})
	}
	tile := readFile(t, dir, "tile/0/021") // a wrong tile
	tile[100] ^= 1
	writeFile(t, dir, "tile/0/021", tile)
	if err := os.Remove(filepath.Join(dir, filepath.FromSlash(layout.EntriesPath(22, 256)))); err != nil { // a missing bundle
		t.Fatal(err)
	}
	now := func() time.Time { return time.Unix(1764412800, 0).Add(-time.Minute + 3*time.Second) } // the last ~3,000 entries are in the future

	srv := httptest.NewServer(http.StripPrefix("/audit/", http.FileServer(http.Dir(dir))))
	defer srv.Close()
	sources := map[string]auditcheck.Source{"dir": auditcheck.DirSource(dir), "http": auditcheck.HTTPSource(srv.URL+"/audit", nil)}
	want := verify(t, auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey, Now: now, Workers: 1})
	if len(want.Problems) <= 20 || len(want.Warnings) < 3 || want.OK() {
		t.Fatalf("the tampered log gives too few problems and warnings to compare:\n%s", want)
	}
	for name, src := range sources {
		for _, workers := range []int{1, 2, 3, 8} {
			got := verify(t, src, auditcheck.Options{VerifierKey: key.vkey, Now: now, Workers: workers})
			if !reflect.DeepEqual(got, want) {
				t.Errorf("%s, %d workers:\n%s\nwant, with 1 worker from the directory:\n%s", name, workers, got, want)
			}
		}
	}
	t.Logf("report:\n%s", want)
}
