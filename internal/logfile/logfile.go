// Package logfile keeps an append-only log's entries and full hash tiles
// in plain files, written once each: the audit log's storage.
//
// A directory holds:
//
//	entries   every entry as a C2SP tlog-tiles entry bundle frames it
//	          (two-byte big-endian length, then the bytes), one after the
//	          other: the only file that must be durable
//	offsets   the end offset of each entry in entries, 8 bytes each
//	tile-L    the full hash tiles of tile level L, 8 KiB each, tile N at
//	          N·8 KiB (partial tiles are never written)
//	synced    how many entries offsets and the tiles cover durably
//
// Sync makes the entries durable (fdatasync of one file): a writer's
// group commit. The offsets and tiles are derived from the entries; they
// are written beside them without a sync, and SyncDerived, called from
// time to time off the write path, makes them durable and moves the synced
// mark. After a crash, Open trusts them up to the mark and rebuilds the
// rest from the entries, which it reads frame by frame, checking each with
// the caller's validator, and cuts at the first frame that is torn or
// invalid: it was never made durable, so nothing of it was released.
//
// Before, entries and tiles were rows in SQLite: every entry went into
// SQLite's WAL, was copied into the database by a checkpoint, and cost a
// B-tree insert in the committer. Here an entry costs a copy into the
// batch's one write.
package logfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/mandatehq/mandate/internal/atomicfile"
)

// TileSize is the size of a full hash tile: 256 hashes of 32 bytes.
const TileSize = 256 * 32

// MaxEntrySize is the largest entry a frame can hold.
const MaxEntrySize = 1<<16 - 1

// Files is one log's files. One goroutine appends (Append, WriteTile);
// any number read concurrently what the appender reported durable.
type Files struct {
	dir     string
	entries *os.File
	offsets *os.File
	synced  atomic.Int64 // the mark last written (SyncDerived runs beside the appender)

	mu    sync.Mutex // guards tiles (opened lazily)
	tiles []*os.File

	// Appender only.
	size int64 // entries written
	end  int64 // bytes of entries written
	buf  []byte
	obuf []byte

	syncHook, derivedHook atomic.Pointer[func() error]
	// derivedErr is the first failed sync of the offsets or tiles: after
	// it the mark never moves again in this process (SyncDerived).
	derivedErr error
	// damaged says what recover found damaged within the synced mark and
	// rebuilt from the entries; empty if nothing.
	damaged string
}

// Open opens (creating) the files in dir, recovers them after a crash as
// the package doc says, and returns them with the number of entries and
// the synced mark. valid checks an entry's bytes.
func Open(dir string, valid func([]byte) error) (*Files, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("logfile: %w", err)
	}
	f := &Files{dir: dir}
	var err error
	if f.entries, err = os.OpenFile(filepath.Join(dir, "entries"), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("logfile: %w", err)
	}
	if f.offsets, err = os.OpenFile(filepath.Join(dir, "offsets"), os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		f.entries.Close()
		return nil, fmt.Errorf("logfile: %w", err)
	}
	if err := f.recover(valid); err != nil {
		f.Close()
		return nil, err
	}
	// The files exist durably before anything in them is called durable.
	syncDir(dir)
	syncDir(filepath.Dir(dir))
	return f, nil
}

// recover finds the log's size and end, trusting the derived files up to
// the synced mark and rebuilding the rest from the entries.
func (f *Files) recover(valid func([]byte) error) error {
	mark, err := readMark(filepath.Join(f.dir, "synced"))
	if err != nil {
		return err
	}
	est, err := f.entries.Stat()
	if err != nil {
		return err
	}
	// Each entry takes at least 3 bytes: a mark beyond that is damaged
	// (and bounding it keeps the arithmetic below from overflowing).
	if mark > est.Size()/3 {
		return fmt.Errorf("logfile: %s says %d entries were synced, more than %s can hold: the log's files were changed",
			filepath.Join(f.dir, "synced"), mark, filepath.Join(f.dir, "entries"))
	}
	ost, err := f.offsets.Stat()
	if err != nil {
		return err
	}
	if ost.Size() < mark*8 {
		return fmt.Errorf("logfile: %s holds %d offsets, fewer than the %d it synced: the log's files were truncated",
			f.dir, ost.Size()/8, mark)
	}
	// The first trusted frames were synced: they need no validation
	// (only a rebuild of damaged offsets reads them).
	var trusted int64
	end, err := f.checkOffsets(mark, est.Size())
	if err != nil {
		return err
	}
	if end < 0 {
		// The offsets within the mark are damaged (a lost page reads as
		// zeros): they are derived, so rebuild them, and the tiles, from
		// the entries, which are the truth.
		f.damaged = "offsets"
		if err := f.dropDerived(true); err != nil {
			return err
		}
		trusted, mark, end = mark, 0, 0
	}
	// Read the frames after the mark, a chunk at a time.
	size := mark
	var offs []byte
	const chunk = 4 << 20
	pos := end
	buf := make([]byte, 0, chunk)
	for pos < est.Size() {
		n := min(chunk, est.Size()-pos)
		buf = buf[:n]
		if _, err := f.entries.ReadAt(buf, pos); err != nil {
			return fmt.Errorf("logfile: %w", err)
		}
		used, torn := 0, false
		for used+2 <= len(buf) {
			l := int(binary.BigEndian.Uint16(buf[used:]))
			if l == 0 {
				torn = true
				break
			}
			if used+2+l > len(buf) {
				if pos+int64(used)+2+int64(l) > est.Size() {
					torn = true
				}
				break
			}
			if size >= trusted && valid(buf[used+2:used+2+l]) != nil {
				torn = true
				break
			}
			used += 2 + l
			size++
			offs = binary.LittleEndian.AppendUint64(offs, uint64(pos+int64(used)))
		}
		pos += int64(used)
		if torn || used == 0 {
			break
		}
	}
	if pos < est.Size() {
		// A torn or invalid tail: it was never synced. Cut it.
		if err := f.entries.Truncate(pos); err != nil {
			return fmt.Errorf("logfile: cutting the log's torn tail: %w", err)
		}
		if err := Datasync(f.entries); err != nil {
			return fmt.Errorf("logfile: %w", err)
		}
	}
	if err := f.offsets.Truncate(mark * 8); err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	if _, err := f.offsets.WriteAt(offs, mark*8); err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	f.size, f.end = size, pos
	f.synced.Store(mark)
	// Full tiles past the mark may be torn: drop them; the caller writes
	// them again from the entries.
	for L := 0; ; L++ {
		p := filepath.Join(f.dir, "tile-"+strconv.Itoa(L))
		st, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("logfile: %w", err)
		}
		keep := (mark >> (8 * uint(L+1))) * TileSize
		if st.Size() > keep {
			if err := os.Truncate(p, keep); err != nil {
				return fmt.Errorf("logfile: %w", err)
			}
		}
	}
	return nil
}

func readMark(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("logfile: %w", err)
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("logfile: %s does not hold a count of entries", path)
	}
	return n, nil
}

// checkOffsets returns the end of the first mark entries from the offsets
// file, which must be there, after checking cheaply that the offsets are
// whole: each one past the one before by a frame's size at most, the last
// within the entries file, at the end of a frame. It returns -1 if they are
// damaged, an error if the entries file is shorter than the durable
// offsets say (entries were removed: that is not for a rebuild to hide).
func (f *Files) checkOffsets(mark, entriesSize int64) (int64, error) {
	if mark == 0 {
		return 0, nil
	}
	const chunk = 1 << 16 // offsets per read
	buf := make([]byte, min(mark, chunk)*8)
	var prev int64
	for start := int64(0); start < mark; start += chunk {
		b := buf[:min(mark-start, chunk)*8]
		if _, err := f.offsets.ReadAt(b, start*8); err != nil {
			return 0, fmt.Errorf("logfile: %w", err)
		}
		for i := 0; i < len(b); i += 8 {
			o := int64(binary.LittleEndian.Uint64(b[i:]))
			if o-prev < 3 || o-prev > MaxEntrySize+2 {
				return -1, nil
			}
			prev = o
		}
	}
	if entriesSize < prev {
		return 0, fmt.Errorf("logfile: %s is %d bytes, shorter than the %d bytes of its first %d entries, which were durable: the log was truncated",
			filepath.Join(f.dir, "entries"), entriesSize, prev, mark)
	}
	// The last entry's frame header must say its length.
	var last [8]byte
	from := int64(0)
	if mark > 1 {
		if _, err := f.offsets.ReadAt(last[:], (mark-2)*8); err != nil {
			return 0, fmt.Errorf("logfile: %w", err)
		}
		from = int64(binary.LittleEndian.Uint64(last[:]))
	}
	var h [2]byte
	if _, err := f.entries.ReadAt(h[:], from); err != nil {
		return 0, fmt.Errorf("logfile: %w", err)
	}
	if int64(binary.BigEndian.Uint16(h[:]))+2 != prev-from {
		return -1, nil
	}
	return prev, nil
}

// dropDerived forgets the tiles, durably, and the offsets if offsets: the
// mark goes to 0 first, so that a crash in the middle finds nothing
// trusted.
func (f *Files) dropDerived(offsets bool) error {
	if err := atomicfile.Write(filepath.Join(f.dir, "synced"), []byte("0"), 0o600); err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	if offsets {
		if err := f.offsets.Truncate(0); err != nil {
			return fmt.Errorf("logfile: %w", err)
		}
	}
	for L := 0; ; L++ {
		err := os.Truncate(filepath.Join(f.dir, "tile-"+strconv.Itoa(L)), 0)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("logfile: %w", err)
		}
	}
}

// Damaged says what Open found damaged among the derived files within the
// synced mark, and rebuilt from the entries ("offsets"), or what
// DropTiles was told; empty if nothing.
func (f *Files) Damaged() string { return f.damaged }

// DropTiles forgets every stored tile, and the mark, durably: for the
// caller that found them damaged, before it writes them again from the
// entries. Only before the first Append.
func (f *Files) DropTiles(what string) error {
	f.damaged = what
	f.mu.Lock()
	for _, t := range f.tiles {
		t.Close()
	}
	f.tiles = nil
	f.mu.Unlock()
	if err := f.dropDerived(false); err != nil {
		return err
	}
	// The offsets were checked at Open and stay: a crash before the next
	// SyncDerived rebuilds them from the entries, the mark being 0.
	f.synced.Store(0)
	return nil
}

// Dir returns the directory of the files.
func (f *Files) Dir() string { return f.dir }

// Size returns the number of entries written (durable or not).
func (f *Files) Size() int64 { return f.size }

// Synced returns the synced mark: the offsets and tiles of the first
// Synced() entries are durable.
func (f *Files) Synced() int64 { return f.synced.Load() }

// Append writes entries after the ones before, in one write of the entries
// file and one of the offsets. They are durable once Sync returns.
func (f *Files) Append(entries [][]byte) error {
	f.buf, f.obuf = f.buf[:0], f.obuf[:0]
	end := f.end
	for _, e := range entries {
		if len(e) == 0 || len(e) > MaxEntrySize {
			return fmt.Errorf("logfile: an entry of %d bytes (1 to %d)", len(e), MaxEntrySize)
		}
		f.buf = binary.BigEndian.AppendUint16(f.buf, uint16(len(e)))
		f.buf = append(f.buf, e...)
		end += 2 + int64(len(e))
		f.obuf = binary.LittleEndian.AppendUint64(f.obuf, uint64(end))
	}
	if _, err := f.entries.WriteAt(f.buf, f.end); err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	if _, err := f.offsets.WriteAt(f.obuf, f.size*8); err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	f.end = end
	f.size += int64(len(entries))
	if cap(f.buf) > 1<<22 { // do not keep a burst's buffers
		f.buf, f.obuf = nil, nil
	}
	return nil
}

// Cut drops the entries from size on, with their offsets and full tiles:
// what a write that failed (ENOSPC, EIO) left of a batch that was never
// synced, so never released. Truncating also drops the page cache's
// copy of those pages. size must not be below what Sync made durable.
func (f *Files) Cut(size int64) error {
	if size < f.synced.Load() || size > f.size {
		return fmt.Errorf("logfile: cannot cut the log at %d entries: %d are synced, %d written", size, f.synced.Load(), f.size)
	}
	var end int64
	if size > 0 {
		var b [8]byte
		if _, err := f.offsets.ReadAt(b[:], (size-1)*8); err != nil {
			return fmt.Errorf("logfile: %w", err)
		}
		end = int64(binary.LittleEndian.Uint64(b[:]))
	}
	if err := f.entries.Truncate(end); err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	if err := f.offsets.Truncate(size * 8); err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	f.mu.Lock()
	tiles := append([]*os.File(nil), f.tiles...)
	f.mu.Unlock()
	for L, t := range tiles {
		keep := (size >> (8 * uint(L+1))) * TileSize
		if st, err := t.Stat(); err == nil && st.Size() > keep {
			if err := t.Truncate(keep); err != nil {
				return fmt.Errorf("logfile: %w", err)
			}
		}
	}
	f.size, f.end = size, end
	return nil
}

// SetSyncHook makes every Sync call fn first and fail with its error: for
// tests of a disk that does not confirm a write.
func (f *Files) SetSyncHook(fn func() error) { f.syncHook.Store(&fn) }

// SetDerivedSyncHook makes every SyncDerived call fn first and fail with
// its error, as a failed fdatasync of the offsets would: for tests.
func (f *Files) SetDerivedSyncHook(fn func() error) { f.derivedHook.Store(&fn) }

// Sync makes the entries written so far durable.
func (f *Files) Sync() error {
	if fn := f.syncHook.Load(); fn != nil && *fn != nil {
		if err := (*fn)(); err != nil {
			return err
		}
	}
	return Datasync(f.entries)
}

// WriteTile writes full tile (L, N).
func (f *Files) WriteTile(L int, N int64, data []byte) error {
	if len(data) != TileSize {
		return fmt.Errorf("logfile: tile %d/%d of %d bytes: only full tiles are written", L, N, len(data))
	}
	t, err := f.tile(L)
	if err != nil {
		return err
	}
	if _, err := t.WriteAt(data, N*TileSize); err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	return nil
}

// ReadTile reads full tile (L, N); os.ErrNotExist if it is not written.
func (f *Files) ReadTile(L int, N int64) ([]byte, error) {
	t, err := f.tile(L)
	if err != nil {
		return nil, err
	}
	b := make([]byte, TileSize)
	n, err := t.ReadAt(b, N*TileSize)
	if n == TileSize {
		return b, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("logfile: tile %d/%d: %w", L, N, os.ErrNotExist)
	}
	return nil, fmt.Errorf("logfile: %w", err)
}

func (f *Files) tile(L int) (*os.File, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.tiles) <= L {
		t, err := os.OpenFile(filepath.Join(f.dir, "tile-"+strconv.Itoa(len(f.tiles))), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("logfile: %w", err)
		}
		f.tiles = append(f.tiles, t)
	}
	return f.tiles[L], nil
}

// SyncDerived makes the offsets and tiles of the first upTo entries
// durable and records the mark, so that Open need not rebuild them. upTo
// must not exceed what Sync made durable, and their tiles must be written.
//
// After a failed sync it never moves the mark again in this process, and
// returns that first error: Linux reports a writeback error once and may
// drop the pages that did not reach the disk, so a later sync that
// succeeds says nothing of them. The mark stays where the last good sync
// left it, and the next start rebuilds what lies past it from the
// entries. (Writing the derived data past the mark again before the next
// sync would also do, but costs a second copy of code that recover
// already is, for a fault after which the process should be restarted.)
func (f *Files) SyncDerived(upTo int64) error {
	if f.derivedErr != nil {
		return f.derivedErr
	}
	if upTo <= f.synced.Load() {
		return nil
	}
	fail := func(err error) error {
		f.derivedErr = fmt.Errorf("logfile: syncing the offsets and tiles failed, the synced mark stays at %d entries until a restart rebuilds them from the entries: %w", f.synced.Load(), err)
		return f.derivedErr
	}
	if fn := f.derivedHook.Load(); fn != nil && *fn != nil {
		if err := (*fn)(); err != nil {
			return fail(err)
		}
	}
	if err := Datasync(f.offsets); err != nil {
		return fail(err)
	}
	f.mu.Lock()
	tiles := append([]*os.File(nil), f.tiles...)
	f.mu.Unlock()
	for _, t := range tiles {
		if err := Datasync(t); err != nil {
			return fail(err)
		}
	}
	if err := atomicfile.Write(filepath.Join(f.dir, "synced"), []byte(strconv.FormatInt(upTo, 10)), 0o600); err != nil {
		return fmt.Errorf("logfile: %w", err)
	}
	f.synced.Store(upTo)
	return nil
}

// ReadEntries returns entries [start, start+n), which must be written.
func (f *Files) ReadEntries(start, n int64) ([][]byte, error) {
	if start < 0 || n < 0 {
		return nil, fmt.Errorf("logfile: entries %d+%d", start, n)
	}
	if n == 0 {
		return nil, nil
	}
	from, ends, err := f.bounds(start, n)
	if err != nil {
		return nil, err
	}
	data := make([]byte, ends[len(ends)-1]-from)
	if _, err := f.entries.ReadAt(data, from); err != nil {
		return nil, fmt.Errorf("logfile: reading entries %d..%d: %w", start, start+n-1, err)
	}
	out := make([][]byte, n)
	pos := from
	for i, e := range ends {
		frame := data[pos-from : e-from]
		if len(frame) < 3 || int(binary.BigEndian.Uint16(frame)) != len(frame)-2 {
			return nil, fmt.Errorf("logfile: entry %d does not match its offsets: the entries file was changed", start+int64(i))
		}
		out[i] = frame[2:]
		pos = e
	}
	return out, nil
}

// bounds returns the start offset of entry start and the end offsets of
// entries [start, start+n).
func (f *Files) bounds(start, n int64) (int64, []int64, error) {
	first := start - 1
	b := make([]byte, (n+1)*8)
	if first < 0 {
		first, b = 0, b[8:]
	}
	if _, err := f.offsets.ReadAt(b, first*8); err != nil {
		return 0, nil, fmt.Errorf("logfile: entries %d..%d are not all there: %w", start, start+n-1, err)
	}
	var from int64
	if start > 0 {
		from, b = int64(binary.LittleEndian.Uint64(b)), b[8:]
	}
	ends := make([]int64, n)
	prev := from
	for i := range ends {
		ends[i] = int64(binary.LittleEndian.Uint64(b[i*8:]))
		if ends[i] <= prev || ends[i]-prev > MaxEntrySize+2 {
			return 0, nil, fmt.Errorf("logfile: the offsets of entry %d are damaged", start+int64(i))
		}
		prev = ends[i]
	}
	return from, ends, nil
}

// Close closes the files.
func (f *Files) Close() error {
	err := errors.Join(f.entries.Close(), f.offsets.Close())
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range f.tiles {
		err = errors.Join(err, t.Close())
	}
	f.tiles = nil
	return err
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
