package auditcheck_test

import (
	"testing"

	fmtlog "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/mandatehq/mandate/auditlog/layout"
)

// dirTiles reads the hash tiles of a log directory for tlog's tile-based
// hash reader.
type dirTiles struct {
	t   *testing.T
	dir string
}

func (d dirTiles) Height() int { return layout.TileHeight }

func (d dirTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tile := range tiles {
		out[i] = readFile(d.t, d.dir, layout.HashTilePath(uint64(tile.L), uint64(tile.N), tile.W))
	}
	return out, nil
}

func (d dirTiles) SaveTiles([]tlog.Tile, [][]byte) {}

// TestInterop checks what the test writer produces, and so what the
// verifier accepts, with independent implementations: the checkpoint with
// transparency-dev/formats, the tiles with x/mod's tile hash reader (which
// checks each tile it reads against the tree), inclusion and consistency
// proofs computed from the tiles with transparency-dev/merkle.
func TestInterop(t *testing.T) {
	for _, size := range []int64{1, 7, 256, 1000, 256*256 + 513} {
		t.Run("", func(t *testing.T) {
			if size > 10000 && testing.Short() {
				t.Skip("short")
			}
			dir := t.TempDir()
			key := newKey(t, origin)
			entries := events(t, int(size), "")
			root := writeLog(t, dir, entries, key)

			v, err := note.NewVerifier(key.vkey)
			if err != nil {
				t.Fatal(err)
			}
			cp, ext, _, err := fmtlog.ParseCheckpoint(readFile(t, dir, layout.CheckpointPath), origin, v)
			if err != nil {
				t.Fatal(err)
			}
			if cp.Size != uint64(size) || string(cp.Hash) != string(root[:]) || len(ext) != 0 {
				t.Fatalf("checkpoint: %+v, extensions %q", cp, ext)
			}

			hr := tlog.TileHashReader(tlog.Tree{N: size, Hash: root}, dirTiles{t, dir})
			for _, i := range []int64{0, 1, size / 2, size - 2, size - 1, 255, 256, 70000} {
				if i < 0 || i >= size {
					continue
				}
				p, err := tlog.ProveRecord(size, i, hr)
				if err != nil {
					t.Fatal(err)
				}
				leaf := tlog.RecordHash(entries[i])
				if err := proof.VerifyInclusion(rfc6962.DefaultHasher, uint64(i), uint64(size), leaf[:], hashes(p), root[:]); err != nil {
					t.Errorf("inclusion of %d in %d: %v", i, size, err)
				}
			}
			for _, old := range []int64{1, 2, size / 3, size - 1, 256, 65536} {
				if old < 1 || old > size {
					continue
				}
				p, err := tlog.ProveTree(size, old, hr)
				if err != nil {
					t.Fatal(err)
				}
				oldRoot, err := tlog.TreeHash(old, hr)
				if err != nil {
					t.Fatal(err)
				}
				if err := proof.VerifyConsistency(rfc6962.DefaultHasher, uint64(old), uint64(size), hashes(p), oldRoot[:], root[:]); err != nil {
					t.Errorf("consistency of %d with %d: %v", old, size, err)
				}
			}
		})
	}
}

func hashes[T ~[]tlog.Hash](p T) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i][:]
	}
	return out
}
