package evindex

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
)

// A run file holds the index of the log entries [from, to):
//
//	header  64 bytes: magic, from, to, pair count, CRC-32C of the pairs,
//	        CRC-32C of the header's first 44 bytes, the blocks and the fences
//	pairs   16 bytes each (key hash, position), little-endian, sorted
//	blocks  16 bytes each (earliest, latest event time) per BlockSize entries
//	fences  16 bytes each: every fenceEvery-th pair, to find a key with one
//	        read of fenceEvery pairs
//
// Open reads the header, blocks and fences and checks their CRC; the
// pairs' CRC is checked whenever a merge reads them whole.
const (
	runMagic   = "mandate-evidx-1\n"
	headerSize = 64
	pairSize   = 16
	fenceEvery = 256
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type run struct {
	path     string
	f        *os.File
	from, to int64
	npairs   int64
	pairsCRC uint32
	blocks   []timeRange
	span     timeRange // of all its blocks: a walk skips a run outside its times
	fences   []pair
	refs     atomic.Int32 // the index's own reference plus the walks using it
}

func (r *run) acquire() { r.refs.Add(1) }

// release drops a reference; the last one closes the file.
func (r *run) release() {
	if r.refs.Add(-1) == 0 {
		r.f.Close()
	}
}

func (r *run) close() { r.f.Close() }

type header struct {
	from, to, npairs  int64
	pairsCRC, metaCRC uint32
}

func (h *header) encode() []byte {
	b := make([]byte, headerSize)
	copy(b, runMagic)
	binary.LittleEndian.PutUint64(b[16:], uint64(h.from))
	binary.LittleEndian.PutUint64(b[24:], uint64(h.to))
	binary.LittleEndian.PutUint64(b[32:], uint64(h.npairs))
	binary.LittleEndian.PutUint32(b[40:], h.pairsCRC)
	binary.LittleEndian.PutUint32(b[44:], h.metaCRC)
	return b
}

// metaCRC is the CRC-32C of the header's first 44 bytes, the encoded
// blocks and the encoded fences.
func metaCRC(head []byte, blocks, fences []byte) uint32 {
	c := crc32.Update(0, castagnoli, head[:44])
	c = crc32.Update(c, castagnoli, blocks)
	return crc32.Update(c, castagnoli, fences)
}

func nblocks(from, to int64) int64 { return (to - from + BlockSize - 1) / BlockSize }
func nfences(npairs int64) int64   { return (npairs + fenceEvery - 1) / fenceEvery }

// openRun opens the run file at path and checks its structure.
func openRun(path string) (*run, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := readRunMeta(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.path, r.f = path, f
	r.refs.Store(1)
	return r, nil
}

// readRunMeta reads and checks a run's header, blocks and fences.
func readRunMeta(f *os.File) (*run, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	head := make([]byte, headerSize)
	if _, err := f.ReadAt(head, 0); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	if string(head[:16]) != runMagic {
		return nil, errors.New("not a run file")
	}
	h := header{
		from:     int64(binary.LittleEndian.Uint64(head[16:])),
		to:       int64(binary.LittleEndian.Uint64(head[24:])),
		npairs:   int64(binary.LittleEndian.Uint64(head[32:])),
		pairsCRC: binary.LittleEndian.Uint32(head[40:]),
		metaCRC:  binary.LittleEndian.Uint32(head[44:]),
	}
	if h.from < 0 || h.to <= h.from || h.npairs < 0 || h.npairs > (h.to-h.from)*keysPerEntry {
		return nil, fmt.Errorf("header out of range: [%d, %d), %d pairs", h.from, h.to, h.npairs)
	}
	// Every count is checked against the file's size before it is
	// multiplied, so that no header makes a size overflow.
	size := st.Size()
	if h.npairs > size/pairSize || h.to-h.from > size/16*BlockSize {
		return nil, fmt.Errorf("header out of range for a file of %d bytes", size)
	}
	nb, nf := nblocks(h.from, h.to), nfences(h.npairs)
	metaOff := headerSize + h.npairs*pairSize
	if want := metaOff + (nb+nf)*16; size != want {
		return nil, fmt.Errorf("%d bytes, want %d", size, want)
	}
	meta := make([]byte, (nb+nf)*16)
	if _, err := f.ReadAt(meta, metaOff); err != nil {
		return nil, err
	}
	if metaCRC(head, meta[:nb*16], meta[nb*16:]) != h.metaCRC {
		return nil, errors.New("checksum mismatch")
	}
	r := &run{from: h.from, to: h.to, npairs: h.npairs, pairsCRC: h.pairsCRC,
		blocks: make([]timeRange, nb), fences: make([]pair, nf)}
	for i := range r.blocks {
		r.blocks[i] = timeRange{int64(binary.LittleEndian.Uint64(meta[i*16:])), int64(binary.LittleEndian.Uint64(meta[i*16+8:]))}
	}
	r.span = spanOfBlocks(r.blocks)
	fb := meta[nb*16:]
	for i := range r.fences {
		r.fences[i] = pair{binary.LittleEndian.Uint64(fb[i*16:]), binary.LittleEndian.Uint64(fb[i*16+8:])}
	}
	return r, nil
}

// runWriter writes a run file: pairs as they come, in order, then the
// blocks and fences.
type runWriter struct {
	dir, tmp  string
	f         *os.File
	w         *bufio.Writer
	from, to  int64
	n         int64
	crc       uint32
	fences    []pair
	last      pair
	buf       [pairSize]byte
	blockData []byte
}

func newRunWriter(dir string, from, to int64) (*runWriter, error) {
	f, err := os.CreateTemp(dir, "tmp-")
	if err != nil {
		return nil, err
	}
	w := &runWriter{dir: dir, tmp: f.Name(), f: f, w: bufio.NewWriterSize(f, 1<<20), from: from, to: to}
	if _, err := w.w.Write(make([]byte, headerSize)); err != nil { // the header goes in last
		w.abort()
		return nil, err
	}
	return w, nil
}

func (w *runWriter) add(p pair) error {
	if w.n > 0 && comparePairs(w.last, p) >= 0 {
		return fmt.Errorf("evindex: pairs out of order writing run [%d, %d)", w.from, w.to)
	}
	if w.n%fenceEvery == 0 {
		w.fences = append(w.fences, p)
	}
	binary.LittleEndian.PutUint64(w.buf[:], p.h)
	binary.LittleEndian.PutUint64(w.buf[8:], p.idx)
	w.crc = crc32.Update(w.crc, castagnoli, w.buf[:])
	w.last = p
	w.n++
	_, err := w.w.Write(w.buf[:])
	return err
}

// finish writes the blocks, fences and header, fsyncs the file and
// renames it into place, then fsyncs the directory: a run that is there
// after a crash is whole.
func (w *runWriter) finish(blocks []timeRange) (*run, error) {
	if int64(len(blocks)) != nblocks(w.from, w.to) {
		w.abort()
		return nil, fmt.Errorf("evindex: %d blocks for [%d, %d)", len(blocks), w.from, w.to)
	}
	bb := make([]byte, 0, len(blocks)*16)
	for _, b := range blocks {
		bb = binary.LittleEndian.AppendUint64(bb, uint64(b.min))
		bb = binary.LittleEndian.AppendUint64(bb, uint64(b.max))
	}
	fb := make([]byte, 0, len(w.fences)*16)
	for _, p := range w.fences {
		fb = binary.LittleEndian.AppendUint64(fb, p.h)
		fb = binary.LittleEndian.AppendUint64(fb, p.idx)
	}
	h := header{from: w.from, to: w.to, npairs: w.n, pairsCRC: w.crc}
	head := h.encode()
	h.metaCRC = metaCRC(head, bb, fb)
	head = h.encode()
	err := errors.Join(write(w.w, bb), write(w.w, fb), w.w.Flush())
	if err == nil {
		_, err = w.f.WriteAt(head, 0)
	}
	if err == nil {
		err = w.f.Sync()
	}
	if err != nil {
		w.abort()
		return nil, err
	}
	path := filepath.Join(w.dir, runName(w.from, w.to))
	if err := os.Rename(w.tmp, path); err != nil {
		w.abort()
		return nil, err
	}
	syncDir(w.dir)
	r := &run{path: path, f: w.f, from: w.from, to: w.to, npairs: w.n, pairsCRC: w.crc, blocks: blocks, span: spanOfBlocks(blocks), fences: w.fences}
	r.refs.Store(1)
	return r, nil
}

func write(w io.Writer, b []byte) error { _, err := w.Write(b); return err }

func (w *runWriter) abort() {
	w.f.Close()
	os.Remove(w.tmp)
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// writeRun writes a full in-memory table as a run.
func (ix *Index) writeRun(m *memtable) (*run, error) {
	ps, blocks := m.pairs()
	w, err := newRunWriter(ix.cfg.Dir, m.from, m.from+int64(m.len()))
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if err := w.add(p); err != nil {
			w.abort()
			return nil, err
		}
	}
	return w.finish(blocks)
}

// mergeRuns writes the adjacent runs rs as one, checking each input's
// pairs against its checksum as it reads them.
func mergeRuns(dir string, rs []*run) (*run, error) {
	w, err := newRunWriter(dir, rs[0].from, rs[len(rs)-1].to)
	if err != nil {
		return nil, err
	}
	type cursor struct {
		r    *bufio.Reader
		left int64
		cur  pair
		crc  uint32
		want uint32
	}
	cs := make([]*cursor, len(rs))
	var blocks []timeRange
	next := func(c *cursor) (bool, error) {
		if c.left == 0 {
			if c.crc != c.want {
				return false, errors.New("evindex: a run's pairs do not match their checksum")
			}
			return false, nil
		}
		var b [pairSize]byte
		if _, err := io.ReadFull(c.r, b[:]); err != nil {
			return false, err
		}
		c.crc = crc32.Update(c.crc, castagnoli, b[:])
		c.cur = pair{binary.LittleEndian.Uint64(b[:]), binary.LittleEndian.Uint64(b[8:])}
		c.left--
		return true, nil
	}
	var live []*cursor
	for i, r := range rs {
		if i > 0 && rs[i-1].to != r.from {
			w.abort()
			return nil, fmt.Errorf("evindex: merging runs that are not adjacent")
		}
		blocks = append(blocks, r.blocks...)
		cs[i] = &cursor{r: bufio.NewReaderSize(io.NewSectionReader(r.f, headerSize, r.npairs*pairSize), 1<<16), left: r.npairs, want: r.pairsCRC}
		ok, err := next(cs[i])
		if err != nil {
			w.abort()
			return nil, err
		}
		if ok {
			live = append(live, cs[i])
		}
	}
	for len(live) > 0 {
		best := 0
		for i := 1; i < len(live); i++ {
			if comparePairs(live[i].cur, live[best].cur) < 0 {
				best = i
			}
		}
		if err := w.add(live[best].cur); err != nil {
			w.abort()
			return nil, err
		}
		ok, err := next(live[best])
		if err != nil {
			w.abort()
			return nil, err
		}
		if !ok {
			live = append(live[:best], live[best+1:]...)
		}
	}
	return w.finish(blocks)
}

// readPairs reads pairs [i, j) of the run.
func (r *run) readPairs(i, j int64) ([]pair, error) {
	b := make([]byte, (j-i)*pairSize)
	if _, err := r.f.ReadAt(b, headerSize+i*pairSize); err != nil {
		return nil, fmt.Errorf("evindex: reading %s: %w", filepath.Base(r.path), err)
	}
	ps := make([]pair, j-i)
	for k := range ps {
		ps[k] = pair{binary.LittleEndian.Uint64(b[k*pairSize:]), binary.LittleEndian.Uint64(b[k*pairSize+8:])}
	}
	return ps, nil
}

// lowerBound returns the number of pairs less than p.
func (r *run) lowerBound(p pair) (int64, error) {
	// The first fence not less than p; the answer is in the block before
	// it, or is that fence.
	k := sort.Search(len(r.fences), func(i int) bool { return comparePairs(r.fences[i], p) >= 0 })
	if k == 0 {
		return 0, nil
	}
	start := int64(k-1) * fenceEvery
	end := min(start+fenceEvery, r.npairs)
	ps, err := r.readPairs(start, end)
	if err != nil {
		return 0, err
	}
	return start + int64(sort.Search(len(ps), func(i int) bool { return comparePairs(ps[i], p) >= 0 })), nil
}

// spanOfBlocks is the time range of all of blocks.
func spanOfBlocks(blocks []timeRange) timeRange {
	if len(blocks) == 0 {
		return timeRange{}
	}
	tr := blocks[0]
	for _, b := range blocks[1:] {
		tr.min, tr.max = min(tr.min, b.min), max(tr.max, b.max)
	}
	return tr
}

// blockMatches reports whether the block of position idx may hold an
// event in [since, until).
func (r *run) blockMatches(idx, since, until int64) bool {
	b := r.blocks[(idx-r.from)/BlockSize]
	return b.max >= since && b.min < until
}

// walk calls fn with the positions in [lo, hi) that hold key h (every
// position if !keyed) and whose block's times overlap [since, until).
func (r *run) walk(h uint64, keyed bool, since, until, lo, hi int64, desc bool, fn func(int64) error) error {
	if r.span.max < since || r.span.min >= until {
		return nil // no event of the run is in the time range
	}
	if !keyed {
		return r.walkAll(since, until, lo, hi, desc, fn)
	}
	a, err := r.lowerBound(pair{h, uint64(lo)})
	if err != nil {
		return err
	}
	b, err := r.lowerBound(pair{h, uint64(hi)})
	if err != nil {
		return err
	}
	const chunk = 1024
	for a < b {
		var i, j int64
		if desc {
			i, j = max(a, b-chunk), b
		} else {
			i, j = a, min(b, a+chunk)
		}
		ps, err := r.readPairs(i, j)
		if err != nil {
			return err
		}
		if desc {
			for k := len(ps) - 1; k >= 0; k-- {
				if err := r.visit(int64(ps[k].idx), since, until, fn); err != nil {
					return err
				}
			}
			b = i
		} else {
			for _, p := range ps {
				if err := r.visit(int64(p.idx), since, until, fn); err != nil {
					return err
				}
			}
			a = j
		}
	}
	return nil
}

func (r *run) visit(idx, since, until int64, fn func(int64) error) error {
	if idx < r.from || idx >= r.to {
		return fmt.Errorf("evindex: %s names position %d, outside its range: it is damaged", filepath.Base(r.path), idx)
	}
	if !r.blockMatches(idx, since, until) {
		return nil
	}
	return fn(idx)
}

// walkAll visits every position in [lo, hi) whose block may match.
func (r *run) walkAll(since, until, lo, hi int64, desc bool, fn func(int64) error) error {
	if desc {
		for idx := hi - 1; idx >= lo; idx-- {
			if !r.blockMatches(idx, since, until) {
				idx = r.from + (idx-r.from)/BlockSize*BlockSize // skip the block
				continue
			}
			if err := fn(idx); err != nil {
				return err
			}
		}
		return nil
	}
	for idx := lo; idx < hi; idx++ {
		if !r.blockMatches(idx, since, until) {
			idx = r.from + ((idx-r.from)/BlockSize+1)*BlockSize - 1 // skip the block
			continue
		}
		if err := fn(idx); err != nil {
			return err
		}
	}
	return nil
}

// checkPairs reads the run's pairs and checks them against their CRC.
func (r *run) checkPairs() error {
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(r.f, headerSize, r.npairs*pairSize)); err != nil {
		return fmt.Errorf("evindex: reading %s: %w", filepath.Base(r.path), err)
	}
	if h.Sum32() != r.pairsCRC {
		return fmt.Errorf("evindex: %s: its pairs do not match their checksum", filepath.Base(r.path))
	}
	return nil
}
