package layout_test

import (
	"fmt"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/mandatehq/mandate/auditlog/layout"
)

// The files that a checkpoint of 1,000 entries needs.
func Example() {
	const size = 1000
	for n := uint64(0); n*layout.TileWidth < size; n++ {
		fmt.Println(layout.EntriesPath(n, int(min(size-n*layout.TileWidth, layout.TileWidth))))
	}
	for _, t := range tlog.NewTiles(layout.TileHeight, 0, size) {
		fmt.Println(layout.HashTilePath(uint64(t.L), uint64(t.N), t.W))
	}
	// Output:
	// tile/entries/000
	// tile/entries/001
	// tile/entries/002
	// tile/entries/003.p/232
	// tile/0/000
	// tile/0/001
	// tile/0/002
	// tile/0/003.p/232
	// tile/1/000.p/3
}

func ExampleParseTilePath() {
	level, n, width, err := layout.ParseTilePath("tile/entries/x001/x234/067.p/8")
	fmt.Println(level, n, width, err)
	_, _, _, err = layout.ParseTilePath("tile/0/x000/067")
	fmt.Println(err)
	// Output:
	// -1 1234067 8 <nil>
	// malformed tile path "tile/0/x000/067": index has a leading x000 element
}

func ExampleEncodeBundle() {
	b, _ := layout.EncodeBundle([][]byte{[]byte(`{"v":1}`), []byte("x")})
	fmt.Printf("%q\n", b)
	entries, _ := layout.DecodeBundle(b, 2)
	fmt.Printf("%q\n", entries)
	// Output:
	// "\x00\a{\"v\":1}\x00\x01x"
	// ["{\"v\":1}" "x"]
}
