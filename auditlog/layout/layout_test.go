package layout_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/mandatehq/mandate/auditlog/layout"
)

func TestPaths(t *testing.T) {
	for _, tc := range []struct {
		level int // -1: entries
		n     uint64
		width int
		want  string
	}{
		// The examples of c2sp.org/tlog-tiles.
		{0, 1234067, 256, "tile/0/x001/x234/067"},
		{-1, 1234067, 256, "tile/entries/x001/x234/067"},
		{0, 0, 256, "tile/0/000"},
		{0, 0, 1, "tile/0/000.p/1"},
		{0, 273, 112, "tile/0/273.p/112"},
		{1, 1, 17, "tile/1/001.p/17"},
		{2, 0, 1, "tile/2/000.p/1"},
		{-1, 999, 255, "tile/entries/999.p/255"},
		{-1, 1000, 256, "tile/entries/x001/000"},
		{63, 1, 256, "tile/63/001"},
		{0, 1<<64 - 1, 256, "tile/0/x018/x446/x744/x073/x709/x551/615"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			var got string
			if tc.level < 0 {
				got = layout.EntriesPath(tc.n, tc.width)
			} else {
				got = layout.HashTilePath(uint64(tc.level), tc.n, tc.width)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			level, n, width, err := layout.ParseTilePath(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if level != tc.level || n != tc.n || width != tc.width {
				t.Errorf("ParseTilePath = %d, %d, %d; want %d, %d, %d", level, n, width, tc.level, tc.n, tc.width)
			}
		})
	}
}

func TestParseTilePathRejects(t *testing.T) {
	for _, p := range []string{
		"", "checkpoint", "vkey", "tile", "tile/", "tile/0", "tile/0/", "/tile/0/000", "tile/0/000/",
		"tile/0/1", "tile/0/01", "tile/0/0001", "tile/0/x1/234", "tile/0/x001/x234", "tile/0/001/234",
		"tile/0/x000/001",            // leading zero group
		"tile/0/x000/x001/002",       // leading zero group
		"tile/00/000", "tile/-1/000", // level
		"tile/+1/000", "tile/64/000", "tile/1000/000", "tile/a/000", "tile/data/000", "tile/Entries/000",
		"tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/01", "tile/0/000.p/", "tile/0/000.p/+1", "tile/0/000.p/1/",
		"tile/0/000.p/1.p/2", "tile/0/000.p", "tile/0/000.p/x1",
		"tile/0/../000", "tile/0/./000", "tile/0/x001/../000", "tile/0//000", "tile/0/x001//000",
		"tile/0/x018/x446/x744/x073/x709/x551/616", // 2^64
		"tile/0/x999/x999/x999/x999/x999/x999/x999/999",
		"tile/0/X001/000", "tile/0/ 001", "tile/0/00a", "tile/0/0x1", "tile/0/-01",
		"tile/entries/000.p/256", "tile/entries/0", "tile\\0\\000",
	} {
		if level, n, w, err := layout.ParseTilePath(p); err == nil {
			t.Errorf("ParseTilePath(%q) = %d, %d, %d; want an error", p, level, n, w)
		} else if !errors.Is(err, layout.ErrMalformed) {
			t.Errorf("ParseTilePath(%q): %v does not wrap ErrMalformed", p, err)
		}
	}
}

func TestPathPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"width 0":   func() { layout.HashTilePath(0, 0, 0) },
		"width 257": func() { layout.EntriesPath(0, 257) },
		"level 64":  func() { layout.HashTilePath(64, 0, 1) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			f()
		})
	}
}

// TestPartialWidth checks the examples of c2sp.org/tlog-tiles ("a tree of
// size 70,000 will be represented by 273 full level 0 tiles, one partial
// level 0 tile of width 112, one full level 1 tile, one partial level 1
// tile of width 17, and one partial level 2 tile of width 1"), and that
// tlog.NewTiles with height 8 gives the same tiles.
func TestPartialWidth(t *testing.T) {
	for _, tc := range []struct {
		size uint64
		want []string // the tiles, as paths
	}{
		{0, nil},
		{1, []string{"tile/0/000.p/1"}},
		{256, []string{"tile/0/000", "tile/1/000.p/1"}},
		{70000, append(fullTiles(0, 273), "tile/0/273.p/112", "tile/1/000", "tile/1/001.p/17", "tile/2/000.p/1")},
	} {
		var got []string
		for _, tile := range tlog.NewTiles(layout.TileHeight, 0, int64(tc.size)) {
			got = append(got, layout.HashTilePath(uint64(tile.L), uint64(tile.N), tile.W))
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("size %d: tlog.NewTiles gives %v\nwant %v", tc.size, got, tc.want)
		}
		// The partial tiles, from PartialWidth.
		var partial []string
		for level := 0; level < 8; level++ {
			if w := layout.PartialWidth(level, tc.size); w > 0 {
				n := tc.size >> (layout.TileHeight * (level + 1))
				partial = append(partial, layout.HashTilePath(uint64(level), n, w))
			}
		}
		var wantPartial []string
		for _, p := range tc.want {
			if strings.Contains(p, ".p/") {
				wantPartial = append(wantPartial, p)
			}
		}
		if strings.Join(partial, " ") != strings.Join(wantPartial, " ") {
			t.Errorf("size %d: PartialWidth gives %v, want %v", tc.size, partial, wantPartial)
		}
	}
	if w := layout.PartialWidth(-1, 70000); w != 112 {
		t.Errorf("PartialWidth(-1, 70000) = %d, want 112", w)
	}
	if w := layout.PartialWidth(7, 1<<64-1); w != 255 {
		t.Errorf("PartialWidth(7, 2^64-1) = %d, want 255", w)
	}
	if w := layout.PartialWidth(8, 1<<64-1); w != 0 {
		t.Errorf("PartialWidth(8, 2^64-1) = %d, want 0", w)
	}
}

func fullTiles(level uint64, n int) []string {
	var p []string
	for i := range n {
		p = append(p, layout.HashTilePath(level, uint64(i), layout.TileWidth))
	}
	return p
}

func TestBundle(t *testing.T) {
	entries := [][]byte{[]byte("a"), {}, bytes.Repeat([]byte("z"), layout.MaxEntrySize), []byte(`{"v":1}`)}
	b, err := layout.EncodeBundle(entries)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte{0, 1, 'a', 0, 0, 0xff, 0xff, 'z'}) || len(b) != 2+1+2+2+65535+2+7 {
		t.Fatalf("bundle starts %x, length %d", b[:8], len(b))
	}
	got, err := layout.DecodeBundle(b, len(entries))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(entries) {
		t.Fatalf("got %d entries", len(got))
	}
	for i := range entries {
		if !bytes.Equal(got[i], entries[i]) {
			t.Errorf("entry %d: got %q", i, got[i])
		}
	}
	split, err := layout.SplitBundle(b)
	if err != nil || len(split) != len(entries) {
		t.Errorf("SplitBundle: %d entries, %v", len(split), err)
	}

	full := make([][]byte, layout.TileWidth)
	for i := range full {
		full[i] = []byte{byte(i)}
	}
	if b, err := layout.EncodeBundle(full); err != nil || len(b) != 3*layout.TileWidth {
		t.Errorf("full bundle: %d bytes, %v", len(b), err)
	}
	for name, bad := range map[string][][]byte{
		"no entries":  nil,
		"257 entries": append(full, []byte("x")),
		"too large":   {make([]byte, layout.MaxEntrySize+1)},
	} {
		if _, err := layout.EncodeBundle(bad); err == nil {
			t.Errorf("EncodeBundle, %s: no error", name)
		}
	}
}

func TestDecodeBundleRejects(t *testing.T) {
	two := []byte{0, 1, 'a', 0, 2, 'b', 'c'}
	for _, tc := range []struct {
		name string
		b    []byte
		want int
	}{
		{"fewer entries", two, 3},
		{"more entries", two, 1},
		{"trailing byte", append(two[:len(two):len(two)], 0), 2},
		{"trailing length", append(two[:len(two):len(two)], 0, 0), 2},
		{"short entry", two[:len(two)-1], 2},
		{"empty", nil, 1},
		{"want 0", nil, 0},
		{"want 257", two, 257},
		{"length overruns", []byte{0xff, 0xff, 1, 2, 3}, 1},
	} {
		if _, err := layout.DecodeBundle(tc.b, tc.want); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
	if _, err := layout.SplitBundle([]byte{0, 5, 'a'}); !errors.Is(err, layout.ErrMalformed) {
		t.Errorf("SplitBundle of a cut entry: %v", err)
	}
	if e, err := layout.SplitBundle(nil); err != nil || len(e) != 0 {
		t.Errorf("SplitBundle(nil) = %d, %v", len(e), err)
	}
}

func TestCheckpoint(t *testing.T) {
	root := tlog.RecordHash([]byte("x"))
	body := layout.FormatCheckpoint("mandate.example/audit", 1234, root)
	want := "mandate.example/audit\n1234\n" + base64.StdEncoding.EncodeToString(root[:]) + "\n"
	if string(body) != want {
		t.Fatalf("got %q, want %q", body, want)
	}
	origin, size, got, err := layout.ParseCheckpoint(body)
	if err != nil || origin != "mandate.example/audit" || size != 1234 || got != root {
		t.Fatalf("ParseCheckpoint = %q, %d, %v, %v", origin, size, got, err)
	}
	// Extension lines are accepted and ignored.
	origin, size, got, err = layout.ParseCheckpoint(append(body, "ext one\next two\n"...))
	if err != nil || origin != "mandate.example/audit" || size != 1234 || got != root {
		t.Fatalf("with extension lines: %q, %d, %v, %v", origin, size, got, err)
	}
	// The empty tree, and the largest size.
	empty := tlog.Hash(sha256.Sum256(nil))
	if _, size, _, err := layout.ParseCheckpoint(layout.FormatCheckpoint("o", 0, empty)); err != nil || size != 0 {
		t.Errorf("size 0: %d, %v", size, err)
	}
	if _, size, _, err := layout.ParseCheckpoint(layout.FormatCheckpoint("o", 1<<64-1, empty)); err != nil || size != 1<<64-1 {
		t.Errorf("size 2^64-1: %d, %v", size, err)
	}
}

func TestParseCheckpointRejects(t *testing.T) {
	r := "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
	for _, body := range []string{
		"",
		"\n",
		"o\n1\n" + r,                           // no final newline
		"o\n1\n",                               // no root
		"o\n1\n\n",                             // empty root
		"\n1\n" + r + "\n",                     // empty origin
		"o\n\n" + r + "\n",                     // empty size
		"o\n01\n" + r + "\n",                   // leading zero
		"o\n00\n" + r + "\n",                   // leading zero
		"o\n+1\n" + r + "\n",                   // sign
		"o\n-1\n" + r + "\n",                   // sign
		"o\n0x1\n" + r + "\n",                  // hex
		"o\n1_0\n" + r + "\n",                  // underscore
		"o\n1 \n" + r + "\n",                   // space
		"o\n 1\n" + r + "\n",                   // space
		"o\n18446744073709551616\n" + r + "\n", // 2^64
		"o\n1\n" + r + "\n\n",                  // empty extension line
		"o\n1\n" + r + "\next\n\n",             // empty extension line
		"o\n1\n" + r + "\r\n",                  // CR
		"o\r\n1\n" + r + "\n",                  // CR
		"o\x00\n1\n" + r + "\n",                // NUL
		"o\tx\n1\n" + r + "\n",                 // tab
		"o\xff\n1\n" + r + "\n",                // not UTF-8
		"o\n1\n" + strings.TrimRight(r, "=") + "\n",                          // unpadded
		"o\n1\n" + strings.NewReplacer("+", "-", "/", "_").Replace(r) + "\n", // URL alphabet
		"o\n1\n" + r[:43] + "V\n",                                            // non-zero padding bits
		"o\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n",
		"o\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 33)) + "\n",
		"o\n1\n" + r[:20] + "\n" + r[20:] + "\n", // root split over two lines
		"o\n1\n " + r + "\n",
	} {
		if o, s, h, err := layout.ParseCheckpoint([]byte(body)); err == nil {
			t.Errorf("ParseCheckpoint(%q) = %q, %d, %v; want an error", body, o, s, h)
		} else if !errors.Is(err, layout.ErrMalformed) {
			t.Errorf("ParseCheckpoint(%q): %v does not wrap ErrMalformed", body, err)
		}
	}
}

type checkpointVector struct {
	Name   string `json:"name"`
	VKey   string `json:"vkey"`
	Note   string `json:"note"`
	Origin string `json:"origin"`
	Size   uint64 `json:"size"`
	Root   string `json:"root"`
}

// TestCheckpointVectors parses checkpoints written by others: the example
// of the C2SP specification and a checkpoint signed by x/mod's sumdb test
// server, whose signature is checked too.
func TestCheckpointVectors(t *testing.T) {
	var file struct{ Vectors []checkpointVector }
	readJSON(t, "testdata/checkpoints.json", &file)
	if len(file.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range file.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			text := v.Note[:strings.Index(v.Note, "\n\n")+1]
			if v.VKey != "" {
				verifier, err := note.NewVerifier(v.VKey)
				if err != nil {
					t.Fatal(err)
				}
				n, err := note.Open([]byte(v.Note), note.VerifierList(verifier))
				if err != nil {
					t.Fatal(err)
				}
				text = n.Text
			}
			origin, size, root, err := layout.ParseCheckpoint([]byte(text))
			if err != nil {
				t.Fatal(err)
			}
			if origin != v.Origin || size != v.Size || base64.StdEncoding.EncodeToString(root[:]) != v.Root {
				t.Errorf("got %q, %d, %v", origin, size, root)
			}
			if got := layout.FormatCheckpoint(origin, size, root); string(got) != text {
				t.Errorf("FormatCheckpoint = %q, want %q", got, text)
			}
		})
	}
}

// TestRFC6962 checks the hashes that tlog computes, and so the log's, with
// the test vectors of the Certificate Transparency reference
// implementation.
func TestRFC6962(t *testing.T) {
	var v struct {
		Leaves     []string `json:"leaves"`
		LeafHashes []string `json:"leaf_hashes"`
		Roots      []string `json:"roots"`
	}
	readJSON(t, "testdata/rfc6962.json", &v)
	if len(v.Leaves) != 8 || len(v.LeafHashes) != 8 || len(v.Roots) != 9 {
		t.Fatal("incomplete vectors")
	}
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	for n := 0; n <= len(v.Leaves); n++ {
		root, err := tlog.TreeHash(int64(n), r)
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(root[:]); got != v.Roots[n] {
			t.Errorf("root of %d leaves: %s, want %s", n, got, v.Roots[n])
		}
		if n == len(v.Leaves) {
			break
		}
		leaf := unhex(t, v.Leaves[n])
		if got := tlog.RecordHash(leaf); hex.EncodeToString(got[:]) != v.LeafHashes[n] {
			t.Errorf("leaf %d hash: %x, want %s", n, got, v.LeafHashes[n])
		}
		hashes, err := tlog.StoredHashes(int64(n), leaf, r)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hashes...)
	}
}

// TestTilesAreC2SP checks that tlog's tiles of height 8 hold what
// c2sp.org/tlog-tiles says: hash i of tile n at level l is
// MTH(D[(n*256+i)*256^l : (n*256+i+1)*256^l]), computed here directly from
// RFC 6962's definition.
func TestTilesAreC2SP(t *testing.T) {
	const size = 256*256 + 3*256 + 7 // full level 0 and 1 tiles, partials at levels 0, 1, 2
	var leaves []tlog.Hash
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	for i := range size {
		e := fmt.Appendf(nil, "entry %d", i)
		leaves = append(leaves, tlog.RecordHash(e))
		h, err := tlog.StoredHashes(int64(i), e, r)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, h...)
	}
	tiles := tlog.NewTiles(layout.TileHeight, 0, size)
	if len(tiles) != 259+1+1+1+1 { // level 0: 259 full, 1 partial; level 1: 1 full, 1 partial; level 2: 1 partial
		t.Fatalf("%d tiles", len(tiles))
	}
	for _, tile := range tiles {
		if tile.N > 2 && tile.N < 255 && tile.L == 0 {
			continue // enough of level 0
		}
		data, err := tlog.ReadTileData(tile, r)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != tile.W*tlog.HashSize {
			t.Fatalf("%v: %d bytes", tile, len(data))
		}
		span := 1 << (layout.TileHeight * tile.L)
		for i := range tile.W {
			start := (int(tile.N)*layout.TileWidth + i) * span
			want := mth(leaves[start : start+span])
			if !bytes.Equal(data[i*32:(i+1)*32], want[:]) {
				t.Fatalf("%s: hash %d differs", layout.HashTilePath(uint64(tile.L), uint64(tile.N), tile.W), i)
			}
		}
	}
}

// mth is RFC 6962's MTH over leaf hashes, written from section 2.1.
func mth(leaves []tlog.Hash) tlog.Hash {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := 1
	for k*2 < len(leaves) {
		k *= 2
	}
	l, r := mth(leaves[:k]), mth(leaves[k:])
	return sha256.Sum256(append(append([]byte{1}, l[:]...), r[:]...))
}

func readJSON(t *testing.T, name string, v any) {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzParseTilePath(f *testing.F) {
	for _, p := range []string{"tile/0/000", "tile/entries/x001/x234/067.p/255", "tile/63/x018/x446/x744/x073/x709/x551/615", "tile/1/000.p/01", "tile/0/x000/001"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		level, n, width, err := layout.ParseTilePath(p)
		if err != nil {
			return
		}
		// Non-malleable: what parses is exactly its canonical encoding.
		var again string
		if level == -1 {
			again = layout.EntriesPath(n, width)
		} else {
			again = layout.HashTilePath(uint64(level), n, width)
		}
		if again != p {
			t.Fatalf("%q parses as (%d, %d, %d), which encodes as %q", p, level, n, width, again)
		}
	})
}

func FuzzDecodeBundle(f *testing.F) {
	f.Add([]byte{0, 1, 'a', 0, 0}, 2)
	f.Add([]byte{0, 1, 'a', 0, 0, 0}, 2)
	f.Add([]byte{}, 1)
	f.Fuzz(func(t *testing.T, b []byte, want int) {
		split, splitErr := layout.SplitBundle(b)
		entries, err := layout.DecodeBundle(b, want)
		if err != nil {
			if splitErr == nil && len(split) == want && want >= 1 && want <= layout.TileWidth {
				t.Fatalf("SplitBundle finds %d entries, DecodeBundle(%d) fails: %v", len(split), want, err)
			}
			return
		}
		if splitErr != nil || len(split) != len(entries) {
			t.Fatalf("DecodeBundle finds %d entries, SplitBundle %d (%v)", len(entries), len(split), splitErr)
		}
		again, err := layout.EncodeBundle(entries)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("%x decodes to %d entries that encode as %x (%v)", b, len(entries), again, err)
		}
	})
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add([]byte("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"))
	f.Add([]byte("o\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nextension\n"))
	f.Add([]byte("o\n01\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		origin, size, root, err := layout.ParseCheckpoint(body)
		if err != nil {
			return
		}
		// Non-malleable: the three lines are exactly their canonical
		// encoding; what follows is extension lines.
		again := layout.FormatCheckpoint(origin, size, root)
		if !bytes.HasPrefix(body, again) {
			t.Fatalf("%q parses as (%q, %d, %v), which formats as %q", body, origin, size, root, again)
		}
		if ext := body[len(again):]; len(ext) > 0 && (ext[0] == '\n' || bytes.Contains(ext, []byte("\n\n"))) {
			t.Fatalf("%q: accepted an empty extension line", body)
		}
	})
}
