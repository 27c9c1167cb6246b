package auditlog

import (
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// memHashes is a tlog.HashReader over a map.
type memHashes map[int64]tlog.Hash

func (m memHashes) ReadHashes(idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		h, ok := m[x]
		if !ok {
			return nil, fmt.Errorf("no hash %d", x)
		}
		out[i] = h
	}
	return out, nil
}

// The frontier computes exactly what tlog.StoredHashes and tlog.TreeHash
// compute, at every size, and restores from stored hashes.
func TestFrontierMatchesTlog(t *testing.T) {
	stored := memHashes{}
	var f Frontier
	for n := int64(0); n < 1100; n++ {
		data := []byte(fmt.Sprintf("entry %d", n))
		want, err := tlog.StoredHashes(n, data, stored)
		if err != nil {
			t.Fatal(err)
		}
		got := f.Append(nil, data)
		if len(got) != len(want) {
			t.Fatalf("entry %d: %d hashes, tlog says %d", n, len(got), len(want))
		}
		for i := range want {
			if got[i].Hash != want[i] || got[i].Index != tlog.StoredHashIndex(0, n)+int64(i) {
				t.Fatalf("entry %d hash %d: got %v@%d, want %v@%d", n, i, got[i].Hash, got[i].Index, want[i], tlog.StoredHashIndex(0, n)+int64(i))
			}
			stored[got[i].Index] = got[i].Hash
		}
		root, err := tlog.TreeHash(n+1, stored)
		if err != nil {
			t.Fatal(err)
		}
		if f.Root() != root {
			t.Fatalf("size %d: root %v, tlog says %v", n+1, f.Root(), root)
		}
		r, err := Restore(n+1, stored)
		if err != nil {
			t.Fatal(err)
		}
		if r.Root() != root || r.Size() != n+1 {
			t.Fatalf("restored frontier at %d differs", n+1)
		}
	}
	var empty Frontier
	if empty.Root().String() != "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" {
		t.Errorf("empty root %v", empty.Root())
	}
}

// Tiles built from the frontier's stored hashes are the tiles tlog
// builds, and the hash reader over them gives every stored hash.
func TestTilesMatchTlog(t *testing.T) {
	stored := memHashes{}
	var f Frontier
	var tiles Tiles
	saved := map[[2]int64][]byte{}
	read := func(L int, N int64) ([]byte, error) {
		d, ok := saved[[2]int64{int64(L), N}]
		if !ok {
			return nil, fmt.Errorf("no tile %d/%d", L, N)
		}
		return d, nil
	}
	const total = 70000
	for n := int64(0); n < total; n++ {
		hs := f.Append(nil, []byte(fmt.Sprintf("e%d", n)))
		for _, h := range hs {
			stored[h.Index] = h.Hash
		}
		changed, err := tiles.Add(hs)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range changed {
			saved[[2]int64{int64(r.L), r.N}] = append([]byte(nil), r.Data...)
		}
	}
	// Every tile equals what tlog reads from the stored hashes.
	for key, data := range saved {
		w := len(data) / 32
		want, err := tlog.ReadTileData(tlog.Tile{H: TileHeight, L: int(key[0]), N: key[1], W: w}, stored)
		if err != nil {
			t.Fatal(err)
		}
		if string(want) != string(data) {
			t.Fatalf("tile %v differs from tlog's", key)
		}
	}
	hr := TileHashReader(read)
	for _, x := range []int64{0, 1, 2, 255, 256, 511, 1000, tlog.StoredHashIndex(8, 1), tlog.StoredHashIndex(3, 7), tlog.StoredHashIndex(0, total-1)} {
		got, err := hr.ReadHashes([]int64{x})
		if err != nil {
			t.Fatalf("hash %d: %v", x, err)
		}
		if got[0] != stored[x] {
			t.Fatalf("hash %d from tiles differs", x)
		}
	}
	root, _ := tlog.TreeHash(total, hr)
	if root != f.Root() {
		t.Fatal("tree hash from tiles differs")
	}
	r, err := RestoreTiles(total, read)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.right) != len(tiles.right) || string(r.Right(0).Data) != string(tiles.Right(0).Data) || string(r.Right(1).Data) != string(tiles.Right(1).Data) {
		t.Fatal("restored tiles differ")
	}
	fr, err := Restore(total, hr)
	if err != nil || fr.Root() != f.Root() {
		t.Fatalf("frontier restored from tiles: %v", err)
	}
}
