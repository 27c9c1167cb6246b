package replay

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// A snapshot is the unexpired entries of a Cache, written down so that a
// new process can start with them instead of rebuilding the set from its
// durable record, which may be long. It is an accelerator, never the
// truth: the caller says what the snapshot covers (Snapshot.Cover, e.g. a
// position in its log and that log's hash there), checks it before
// Restore, reads from its record whatever came after, and falls back to
// reading all of it when the snapshot is missing or does not check.
//
// The format: snapshotMagic, the time it was taken (int64 Unix ns: the
// cache's clock then), the cover's length (uint32) and bytes, the entry
// count (uint64), each entry as its 16-byte digest and its expiry
// (int64 Unix ns), then the SHA-256 of everything before it. Integers are
// big-endian. Keys are digests, so a snapshot holds no identifier in clear.
const snapshotMagic = "mandate replay snapshot v1\n"

const entrySize = 16 + 8

// ErrSnapshot means a snapshot is damaged (torn, truncated, altered) or
// is not one: the caller rebuilds the set from its durable record.
var ErrSnapshot = errors.New("replay: not a usable snapshot")

// Snapshot is a read snapshot: what it covers, when it was taken, and its
// entries.
type Snapshot struct {
	Cover []byte
	// Taken is the cache's clock when the snapshot was taken: entries that
	// had expired by it are not in the snapshot. A caller whose clock is
	// before it (the wall clock went back) cannot restore from it alone:
	// to its clock, some of those have not expired.
	Taken   time.Time
	entries []entry
}

// Len is the number of entries in the snapshot.
func (s *Snapshot) Len() int { return len(s.entries) }

// AppendSnapshot appends to b a snapshot of c's entries that are
// unexpired at now (and at the latest now c has seen), with cover, and
// returns it. The entries are copied under the lock, and encoded outside
// it, so that Use waits for a copy of at most Capacity entries.
func (c *Cache) AppendSnapshot(b, cover []byte, now time.Time) []byte {
	n := unixNano(now)
	c.mu.Lock()
	n = max(n, c.clock)
	q := append([]entry(nil), c.queue...)
	c.mu.Unlock()
	live := 0
	for _, e := range q {
		if e.exp > n {
			live++
		}
	}
	start := len(b)
	b = append(b, snapshotMagic...)
	b = binary.BigEndian.AppendUint64(b, uint64(n))
	b = binary.BigEndian.AppendUint32(b, uint32(len(cover)))
	b = append(b, cover...)
	b = binary.BigEndian.AppendUint64(b, uint64(live))
	for _, e := range q {
		if e.exp > n {
			b = append(b, e.key[:]...)
			b = binary.BigEndian.AppendUint64(b, uint64(e.exp))
		}
	}
	sum := sha256.Sum256(b[start:])
	return append(b, sum[:]...)
}

// ReadSnapshot parses a snapshot that AppendSnapshot wrote, of at most
// maxEntries entries. Any damage is ErrSnapshot, saying what.
func ReadSnapshot(data []byte, maxEntries int) (*Snapshot, error) {
	fail := func(format string, args ...any) (*Snapshot, error) {
		return nil, fmt.Errorf("%w: "+format, append([]any{ErrSnapshot}, args...)...)
	}
	if len(data) < len(snapshotMagic)+8+4+8+sha256.Size || string(data[:len(snapshotMagic)]) != snapshotMagic {
		return fail("no snapshot header")
	}
	body, sum := data[:len(data)-sha256.Size], data[len(data)-sha256.Size:]
	if got := sha256.Sum256(body); string(got[:]) != string(sum) {
		return fail("checksum does not match: the file is torn or was altered")
	}
	p := body[len(snapshotMagic):]
	taken := time.Unix(0, int64(binary.BigEndian.Uint64(p)))
	p = p[8:]
	nc := binary.BigEndian.Uint32(p)
	p = p[4:]
	if uint64(nc) > uint64(len(p))-8 {
		return fail("cover of %d bytes overruns the file", nc)
	}
	s := &Snapshot{Cover: append([]byte(nil), p[:nc]...), Taken: taken}
	p = p[nc:]
	count := binary.BigEndian.Uint64(p)
	p = p[8:]
	if count > uint64(maxEntries) {
		return fail("%d entries, more than the %d allowed", count, maxEntries)
	}
	if uint64(len(p)) != count*entrySize {
		return fail("%d bytes of entries for %d entries", len(p), count)
	}
	s.entries = make([]entry, count)
	for i := range s.entries {
		copy(s.entries[i].key[:], p[:16])
		s.entries[i].exp = int64(binary.BigEndian.Uint64(p[16:]))
		p = p[entrySize:]
	}
	return s, nil
}

// Restore adds to c the entries of s that have not expired at now, and
// returns how many it added (an entry c holds already is not counted).
// It stops with ErrFull when c holds its capacity.
func (c *Cache) Restore(s *Snapshot, now time.Time) (int, error) {
	n := unixNano(now)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock = max(c.clock, n)
	c.expire()
	added := 0
	for _, e := range s.entries {
		if e.exp <= c.clock {
			continue
		}
		if _, ok := c.keys[e.key]; ok {
			continue
		}
		if len(c.keys) >= c.capacity {
			return added, fmt.Errorf("%w: %d unexpired identifiers, the capacity", ErrFull, len(c.keys))
		}
		c.keys[e.key] = struct{}{}
		c.push(e)
		added++
	}
	return added, nil
}

// Capacity is the most unexpired keys c holds.
func (c *Cache) Capacity() int { return c.capacity }
