package auditlog

import (
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// TileHeight is the height of the log's hash tiles (C2SP tlog-tiles): a
// tile holds 256 hashes of one tree level, and only every 8th level is
// stored; the levels between are computed from the tile below.
const TileHeight = 8

const tileWidth = 1 << TileHeight

// Tile is one hash tile: the hashes at tree level TileHeight·L of the
// subtrees 256·N .. 256·N+len(Data)/32-1.
type Tile struct {
	L    int
	N    int64
	Data []byte // a whole number of hashes, at most 256
}

// Tiles are the right-most tile of each tile level of an appending log:
// the only tiles that still change. Add feeds them the stored hashes that
// Frontier.Append returns.
//
// Tiles is a small value; copy it (Clone) to keep a snapshot. Data slices
// are only ever appended to, and a new tile gets a new array, so a
// snapshot's slices stay valid.
type Tiles struct {
	right []Tile
}

// Clone returns a snapshot.
func (t *Tiles) Clone() Tiles { return Tiles{right: append([]Tile(nil), t.right...)} }

// Add records the stored hashes that fall on a tile level and returns,
// once each, the tiles they changed in their new state — including a tile
// that filled up and was succeeded by the next within this call.
func (t *Tiles) Add(hashes []StoredHash) ([]Tile, error) {
	var touched []Tile
	for _, h := range hashes {
		level, k := tlog.SplitStoredHashIndex(h.Index)
		if level%TileHeight != 0 {
			continue
		}
		L, n, pos := level/TileHeight, k/tileWidth, k%tileWidth
		for len(t.right) <= L {
			t.right = append(t.right, Tile{L: len(t.right)})
		}
		r := &t.right[L]
		if r.N != n || pos == 0 {
			if pos != 0 {
				return nil, fmt.Errorf("auditlog: hash %d of tile %d/%d arrives before the tile began", pos, L, n)
			}
			*r = Tile{L: L, N: n, Data: make([]byte, 0, tileWidth*tlog.HashSize)}
		}
		if int64(len(r.Data)) != pos*tlog.HashSize {
			return nil, fmt.Errorf("auditlog: tile %d/%d has %d hashes, hash %d arrives", L, n, len(r.Data)/tlog.HashSize, pos)
		}
		r.Data = append(r.Data, h.Hash[:]...)
		touched = noteTile(touched, *r)
	}
	return touched, nil
}

func noteTile(touched []Tile, r Tile) []Tile {
	for i := range touched {
		if touched[i].L == r.L && touched[i].N == r.N {
			touched[i] = r
			return touched
		}
	}
	return append(touched, r)
}

// Right returns the right-most tile of tile level L.
func (t *Tiles) Right(L int) Tile { return t.right[L] }

// RestoreTiles rebuilds the right-most tiles of a log of size entries,
// reading them with read(L, N), which returns a tile's stored data.
func RestoreTiles(size int64, read func(L int, N int64) ([]byte, error)) (Tiles, error) {
	var t Tiles
	for L := 0; ; L++ {
		count := size >> (TileHeight * uint(L)) // hashes stored at tile level L
		if count == 0 {
			break
		}
		n, w := (count-1)/tileWidth, (count-1)%tileWidth+1
		data, err := read(L, n)
		if err != nil {
			return Tiles{}, err
		}
		if int64(len(data)) < w*tlog.HashSize {
			return Tiles{}, fmt.Errorf("auditlog: tile %d/%d holds %d hashes, the log needs %d", L, n, len(data)/tlog.HashSize, w)
		}
		d := make([]byte, w*tlog.HashSize, tileWidth*tlog.HashSize)
		copy(d, data)
		t.right = append(t.right, Tile{L: L, N: n, Data: d})
	}
	return t, nil
}

// TileHashReader returns a tlog.HashReader that computes any stored hash
// of the log from its tiles, read with read(L, N). It does not check the
// tiles against a tree hash: it serves the log's own store, which the
// offline verifier checks independently.
func TileHashReader(read func(L int, N int64) ([]byte, error)) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		cache := map[[2]int64][]byte{}
		for i, x := range idx {
			tile := tlog.TileForIndex(TileHeight, x)
			key := [2]int64{int64(tile.L), tile.N}
			data, ok := cache[key]
			if !ok {
				var err error
				if data, err = read(tile.L, tile.N); err != nil {
					return nil, err
				}
				cache[key] = data
			}
			if len(data) < tile.W*tlog.HashSize {
				return nil, fmt.Errorf("auditlog: tile %d/%d holds %d hashes, hash %d needs %d", tile.L, tile.N, len(data)/tlog.HashSize, x, tile.W)
			}
			h, err := tlog.HashFromTile(tile, data[:tile.W*tlog.HashSize], x)
			if err != nil {
				return nil, err
			}
			out[i] = h
		}
		return out, nil
	})
}

// TileRoot returns the hash a full tile stands for: the root of the
// subtree of its 256 hashes, TileHeight levels above them (the hash the
// tile level above holds for it).
func TileRoot(data []byte) (tlog.Hash, error) {
	if len(data) != tileWidth*tlog.HashSize {
		return tlog.Hash{}, fmt.Errorf("auditlog: a tile of %d bytes is not full", len(data))
	}
	level := make([]tlog.Hash, tileWidth)
	for i := range level {
		copy(level[i][:], data[i*tlog.HashSize:])
	}
	for len(level) > 1 {
		for i := 0; i < len(level)/2; i++ {
			level[i] = tlog.NodeHash(level[2*i], level[2*i+1])
		}
		level = level[:len(level)/2]
	}
	return level[0], nil
}
