// Package layout is the byte format of Mandate's audit log as it is served
// and exported: the [C2SP tlog-tiles] read layout (tile paths, entry
// bundles) and the [C2SP tlog-checkpoint] note body.
//
// Both the server (which writes tiles, bundles and checkpoints) and the
// offline verifier (which reads them) use this package, so that the two
// cannot drift apart. It does no I/O, no signing and no Merkle hashing:
// hashes come from [golang.org/x/mod/sumdb/tlog] (RFC 6962, tile height
// [TileHeight]), signatures from [golang.org/x/mod/sumdb/note]. The format
// is described for users in docs/auditlog.md.
//
// # Paths
//
// Paths are relative to the log's prefix (for example
// "https://mandate.example/audit/"), never start with a slash, and are the
// same on disk (mandate audit export) and over HTTP:
//
//	checkpoint                 the signed checkpoint (CheckpointPath)
//	vkey                       the log's note verifier key (VerifierKeyPath; ours, not C2SP)
//	tile/<L>/<N>[.p/<W>]       hash tiles (HashTilePath)
//	tile/entries/<N>[.p/<W>]   entry bundles (EntriesPath)
//
// # Parsers
//
// [ParseTilePath], [DecodeBundle], [SplitBundle] and [ParseCheckpoint] take
// untrusted bytes. They are strict: every value has exactly one accepted
// encoding, so what parses re-encodes to the same bytes.
//
// [C2SP tlog-tiles]: https://c2sp.org/tlog-tiles
// [C2SP tlog-checkpoint]: https://c2sp.org/tlog-checkpoint
package layout

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/mod/sumdb/tlog"
)

const (
	// TileHeight is the height of every tile: a full tile holds
	// 2^TileHeight hashes, a full entry bundle as many entries.
	TileHeight = 8
	// TileWidth is the number of hashes in a full tile and of entries in a
	// full bundle.
	TileWidth = 1 << TileHeight
	// MaxEntrySize is the largest entry a bundle can hold: its length is
	// stored in two bytes.
	MaxEntrySize = 65535
	// MaxLevel is the highest tile level a path may name (C2SP: 0 to 63).
	MaxLevel = 63

	// CheckpointPath is where the signed checkpoint is.
	CheckpointPath = "checkpoint"
	// VerifierKeyPath is where the log's note verifier key
	// ("<name>+<hash>+<key>") is. It is not part of C2SP tlog-tiles: it
	// lets a first verification learn the key (trust on first use).
	VerifierKeyPath = "vkey"
)

// ErrMalformed is wrapped by every parsing error of this package.
var ErrMalformed = errors.New("malformed")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w "+format, append([]any{ErrMalformed}, args...)...)
}

// HashTilePath returns the path of the hash tile at level, index n, holding
// width hashes: "tile/<level>/<N>" when width is TileWidth, else the partial
// tile "tile/<level>/<N>.p/<width>".
//
// HashTilePath panics if level > MaxLevel or width is not in 1..TileWidth:
// such a tile cannot exist, and asking for it is a bug of the caller.
func HashTilePath(level, n uint64, width int) string {
	if level > MaxLevel {
		panic(fmt.Sprintf("layout: tile level %d > %d", level, MaxLevel))
	}
	return tilePath(strconv.FormatUint(level, 10), n, width)
}

// EntriesPath returns the path of the entry bundle with index n holding
// width entries: "tile/entries/<N>" when width is TileWidth, else the
// partial bundle "tile/entries/<N>.p/<width>".
//
// EntriesPath panics if width is not in 1..TileWidth.
func EntriesPath(n uint64, width int) string {
	return tilePath("entries", n, width)
}

func tilePath(level string, n uint64, width int) string {
	if width < 1 || width > TileWidth {
		panic(fmt.Sprintf("layout: tile width %d not in 1..%d", width, TileWidth))
	}
	var b strings.Builder
	b.WriteString("tile/")
	b.WriteString(level)
	b.WriteByte('/')
	b.WriteString(encodeIndex(n))
	if width < TileWidth {
		b.WriteString(".p/")
		b.WriteString(strconv.Itoa(width))
	}
	return b.String()
}

// encodeIndex writes n in groups of three digits, all but the last
// prefixed by "x": 1234067 is "x001/x234/067".
func encodeIndex(n uint64) string {
	groups := []string{fmt.Sprintf("%03d", n%1000)}
	for n /= 1000; n > 0; n /= 1000 {
		groups = append(groups, fmt.Sprintf("x%03d", n%1000))
	}
	var b strings.Builder
	for i := len(groups) - 1; i >= 0; i-- {
		b.WriteString(groups[i])
		if i > 0 {
			b.WriteByte('/')
		}
	}
	return b.String()
}

// ParseTilePath parses a hash tile or entry bundle path, as HashTilePath
// and EntriesPath write it. level is -1 for an entry bundle; width is
// TileWidth for a full tile.
//
// Only the canonical encoding is accepted: no leading "x000" group, no
// missing zero padding, no leading zeros in the level or the width, width
// 1..255 after ".p/", level at most MaxLevel, no empty, "." or ".."
// elements, no N beyond 2^64-1. Errors wrap [ErrMalformed].
func ParseTilePath(p string) (level int, n uint64, width int, err error) {
	bad := func(why string) (int, uint64, int, error) {
		return 0, 0, 0, malformed("tile path %q: %s", p, why)
	}
	rest, ok := strings.CutPrefix(p, "tile/")
	if !ok {
		return bad(`does not start with "tile/"`)
	}
	levelStr, rest, ok := strings.Cut(rest, "/")
	if !ok {
		return bad("no index")
	}
	if levelStr == "entries" {
		level = -1
	} else {
		l, ok := parseDecimal(levelStr, MaxLevel)
		if !ok {
			return bad(fmt.Sprintf("level %q is not a decimal from 0 to %d without leading zeros", levelStr, MaxLevel))
		}
		level = int(l)
	}
	width = TileWidth
	if idx, w, ok := strings.Cut(rest, ".p/"); ok {
		wv, ok := parseDecimal(w, TileWidth-1)
		if !ok || wv == 0 {
			return bad(fmt.Sprintf("width %q is not a decimal from 1 to %d without leading zeros", w, TileWidth-1))
		}
		rest, width = idx, int(wv)
	}
	groups := strings.Split(rest, "/")
	for i, g := range groups {
		last := i == len(groups)-1
		if !last {
			var ok bool
			if g, ok = strings.CutPrefix(g, "x"); !ok {
				return bad(fmt.Sprintf("index element %q does not start with x", groups[i]))
			}
		}
		if len(g) != 3 || g[0] < '0' || g[0] > '9' || g[1] < '0' || g[1] > '9' || g[2] < '0' || g[2] > '9' {
			return bad(fmt.Sprintf("index element %q is not three digits", groups[i]))
		}
		if i == 0 && !last && g == "000" {
			return bad("index has a leading x000 element")
		}
		d := uint64(g[0]-'0')*100 + uint64(g[1]-'0')*10 + uint64(g[2]-'0')
		if n > (1<<64-1-d)/1000 {
			return bad("index does not fit in 64 bits")
		}
		n = n*1000 + d
	}
	return level, n, width, nil
}

// parseDecimal parses a non-negative decimal with no sign, no leading zeros
// (except "0" itself) and no other characters, up to max.
func parseDecimal(s string, max uint64) (uint64, bool) {
	if s == "" || len(s) > 20 || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > max {
		return 0, false
	}
	return v, true
}

// PartialWidth returns the width of the rightmost tile at level (-1, the
// entry bundles, counts as level 0) for a tree of size entries: the number
// of hashes (or entries) in the partial tile that a checkpoint of that size
// needs, floor(size / 256^level) mod 256. 0 means that no partial tile is
// needed at that level. The partial tile's index is
// size / 256^(level+1).
func PartialWidth(level int, size uint64) int {
	if level < 0 {
		level = 0
	}
	if level*TileHeight >= 64 {
		return 0
	}
	return int((size >> (uint(level) * TileHeight)) % TileWidth)
}

// EncodeBundle returns the entry bundle holding entries: for each, its
// length as a 2-byte big-endian number, then its bytes. A bundle holds 1 to
// TileWidth entries, each at most MaxEntrySize bytes.
func EncodeBundle(entries [][]byte) ([]byte, error) {
	if len(entries) == 0 || len(entries) > TileWidth {
		return nil, fmt.Errorf("layout: a bundle holds 1 to %d entries, not %d", TileWidth, len(entries))
	}
	size := 0
	for i, e := range entries {
		if len(e) > MaxEntrySize {
			return nil, fmt.Errorf("layout: entry %d is %d bytes, more than %d", i, len(e), MaxEntrySize)
		}
		size += 2 + len(e)
	}
	b := make([]byte, 0, size)
	for _, e := range entries {
		b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
		b = append(b, e...)
	}
	return b, nil
}

// DecodeBundle splits an entry bundle that must hold exactly want entries
// (1 to TileWidth) and nothing else. The entries alias b. Errors wrap
// [ErrMalformed].
func DecodeBundle(b []byte, want int) ([][]byte, error) {
	if want < 1 || want > TileWidth {
		return nil, fmt.Errorf("layout: a bundle holds 1 to %d entries, not %d", TileWidth, want)
	}
	entries := make([][]byte, 0, want)
	for len(b) > 0 {
		if len(entries) == want {
			return nil, malformed("bundle: %d bytes after entry %d, want %d entries", len(b), want-1, want)
		}
		e, rest, err := nextEntry(b, len(entries))
		if err != nil {
			return nil, err
		}
		entries, b = append(entries, e), rest
	}
	if len(entries) != want {
		return nil, malformed("bundle: %d entries, want %d", len(entries), want)
	}
	return entries, nil
}

// SplitBundle splits an entry bundle into its entries, however many there
// are (even none, or more than a bundle may hold): it is for verifiers
// that want to count what is there. Each entry must be complete. The
// entries alias b. Errors wrap [ErrMalformed].
func SplitBundle(b []byte) ([][]byte, error) {
	var entries [][]byte
	for len(b) > 0 {
		e, rest, err := nextEntry(b, len(entries))
		if err != nil {
			return nil, err
		}
		entries, b = append(entries, e), rest
	}
	return entries, nil
}

func nextEntry(b []byte, i int) (entry, rest []byte, err error) {
	if len(b) < 2 {
		return nil, nil, malformed("bundle: entry %d: 1 byte left, want a 2-byte length", i)
	}
	n := int(binary.BigEndian.Uint16(b))
	if len(b)-2 < n {
		return nil, nil, malformed("bundle: entry %d: length %d, only %d bytes left", i, n, len(b)-2)
	}
	return b[2 : 2+n : 2+n], b[2+n:], nil
}

// FormatCheckpoint returns the note body of a C2SP checkpoint:
// "<origin>\n<size>\n<base64 root>\n", with no extension lines. origin
// must be a valid note key name (non-empty, no spaces, no "+"), as
// Mandate's log names its key after its origin.
func FormatCheckpoint(origin string, size uint64, root tlog.Hash) []byte {
	b := make([]byte, 0, len(origin)+1+20+1+44+1)
	b = append(b, origin...)
	b = append(b, '\n')
	b = strconv.AppendUint(b, size, 10)
	b = append(b, '\n')
	b = base64.StdEncoding.AppendEncode(b, root[:])
	return append(b, '\n')
}

// ParseCheckpoint parses the note body of a C2SP checkpoint (the text of
// the signed note, without signatures; check the signature first). It
// requires valid UTF-8 without control characters other than newlines, a
// final newline, a non-empty origin line, a tree size in decimal without
// leading zeros, and a root hash of 32 bytes in canonical standard base64.
// Extension lines after the third are accepted and ignored, as the
// specification says, but must not be empty. Errors wrap [ErrMalformed].
func ParseCheckpoint(body []byte) (origin string, size uint64, root tlog.Hash, err error) {
	bad := func(format string, args ...any) (string, uint64, tlog.Hash, error) {
		return "", 0, tlog.Hash{}, malformed("checkpoint: "+format, args...)
	}
	if !utf8.Valid(body) {
		return bad("not UTF-8")
	}
	for _, c := range body {
		if c < 0x20 && c != '\n' {
			return bad("control character %#02x", c)
		}
	}
	if len(body) == 0 || body[len(body)-1] != '\n' {
		return bad("does not end with a newline")
	}
	lines := bytes.Split(body[:len(body)-1], []byte("\n"))
	if len(lines) < 3 {
		return bad("%d lines, want at least 3 (origin, size, root hash)", len(lines))
	}
	for i, l := range lines {
		if len(l) == 0 {
			return bad("line %d is empty", i+1)
		}
	}
	size, ok := parseDecimal(string(lines[1]), 1<<64-1)
	if !ok {
		return bad("tree size %q is not a decimal without leading zeros", lines[1])
	}
	// Strict: no non-zero padding bits; the length check refuses the
	// newlines that the decoder would otherwise skip.
	if len(lines[2]) != base64.StdEncoding.EncodedLen(tlog.HashSize) {
		return bad("root hash %q is not 32 bytes in base64", lines[2])
	}
	var buf [tlog.HashSize + 1]byte
	n, err := base64.StdEncoding.Strict().Decode(buf[:], lines[2])
	if err != nil || n != tlog.HashSize {
		return bad("root hash %q is not 32 bytes in base64", lines[2])
	}
	copy(root[:], buf[:n])
	return string(lines[0]), size, root, nil
}
