package mandate

import (
	"crypto/rand"
	"encoding/binary"
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
