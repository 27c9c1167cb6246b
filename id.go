package mandate

import (
	"crypto/rand"
	"encoding/binary"
	"strings"
	"time"
)

// crockford is the Crockford base32 alphabet used by ULIDs.
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// NewID returns prefix followed by a ULID: 48 bits of Unix milliseconds and
// 80 random bits, 26 characters of Crockford base32. IDs sort by creation
// time, which keeps store indexes append-mostly.
func NewID(prefix string, now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:]) // never fails (crypto/rand, Go 1.24+)
	return encodeID(prefix, b)
}

// FirstID returns the smallest ID with prefix that NewID can make at t or
// later: IDs compare as strings in time order, so it bounds range scans.
func FirstID(prefix string, t time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(t.UnixMilli())<<16)
	return encodeID(prefix, b)
}

func encodeID(prefix string, b [16]byte) string {
	var out [26]byte
	// 128 bits -> 26 base32 characters, the first carrying 3 bits.
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	for i := 25; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | hi<<59
		hi >>= 5
	}
	return prefix + string(out[:])
}

// Prefixes of the IDs Mandate mints.
const (
	TaskIDPrefix     = "t_"
	MandateIDPrefix  = "m_"
	ApprovalIDPrefix = "ap_"
)

// IDTime returns the time NewID encoded in id, which must start with
// prefix and be followed by a ULID (26 Crockford base32 characters); false
// if it is not such an ID.
func IDTime(prefix, id string) (time.Time, bool) {
	rest, ok := strings.CutPrefix(id, prefix)
	if !ok || len(rest) != 26 || rest[0] > '7' {
		return time.Time{}, false
	}
	var ms uint64
	for i := 0; i < 26; i++ {
		v := strings.IndexByte(crockford, rest[i])
		if v < 0 {
			return time.Time{}, false
		}
		if i < 10 { // 3 + 9×5 = 48 bits of milliseconds
			ms = ms<<5 | uint64(v)
		}
	}
	return time.UnixMilli(int64(ms)), true
}
