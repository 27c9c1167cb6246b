package auditcheck_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/mandatehq/mandate/auditcheck"
	"github.com/mandatehq/mandate/auditlog/layout"
)

// FuzzVerify replaces the last entry bundle, its hash tile and the
// checkpoint of a small log with arbitrary bytes: the verifier must not
// fail to give a verdict, and must accept only the original bytes (a
// checkpoint may differ in what its signatures do not cover: only its
// text must be the original's).
func FuzzVerify(f *testing.F) {
	dir := f.TempDir()
	key := newKey(f, origin)
	writeLog(f, dir, events(f, 300, ""), key)
	bundlePath, tilePath := layout.EntriesPath(1, 44), layout.HashTilePath(0, 1, 44)
	bundle := readFile(f, dir, bundlePath)
	tile := readFile(f, dir, tilePath)
	cp := readFile(f, dir, layout.CheckpointPath)
	head := cp[:bytes.Index(cp, []byte("\n\n"))+2] // the text and the blank line

	f.Add(bundle, tile, cp)
	f.Add(bundle[:len(bundle)-1], tile, cp)
	f.Add(append(bundle[:len(bundle):len(bundle)], 0, 1, 'x'), tile, cp)
	f.Add(bundle, tile[32:], cp)
	f.Add(bundle, tile, bytes.Replace(cp, []byte("\n300\n"), []byte("\n299\n"), 1))
	f.Fuzz(func(t *testing.T, b, ti, c []byte) {
		writeFile(t, dir, bundlePath, b)
		writeFile(t, dir, tilePath, ti)
		writeFile(t, dir, layout.CheckpointPath, c)
		rep, err := auditcheck.Verify(context.Background(), auditcheck.DirSource(dir), auditcheck.Options{VerifierKey: key.vkey})
		if err != nil {
			if len(b) > auditcheck.MaxBundleSize || len(ti) > auditcheck.MaxTileSize || len(c) > auditcheck.MaxSmallFileSize {
				return
			}
			t.Fatalf("no verdict: %v", err)
		}
		if rep.OK() && (!bytes.Equal(b, bundle) || !bytes.Equal(ti, tile) || !bytes.HasPrefix(c, head)) {
			t.Fatalf("accepted a changed log:\n%s", rep)
		}
	})
}
