// Package auditlog is Mandate's tamper-evident audit log: an append-only
// RFC 6962 Merkle tree over canonical event entries, with checkpoints in
// the C2SP tlog-checkpoint / signed-note format, read through the C2SP
// tlog-tiles layout (package auditlog/layout) and verified offline by
// package auditcheck.
//
// This package holds the log's logic, free of storage: the right edge of
// the tree (Frontier) that lets an appender compute the hashes to store
// without reading any, the checkpoint signer, and the publisher that signs
// a checkpoint at least every second while entries arrive. The store
// (package sqlite) appends entries in the same transaction as the change
// they record, so an event is durable before its effect is released.
package auditlog

import (
	"crypto/sha256"

	"golang.org/x/mod/sumdb/tlog"
)

// Frontier is the right edge of an RFC 6962 tree: for each level, the hash
// of the last complete subtree whose parent is not complete yet. With it,
// appending an entry computes the hashes to store (as tlog.StoredHashes
// would) without reading earlier ones, and the root of the tree.
//
// A Frontier is a small value (at most 64 hashes): copy it to keep a
// snapshot, e.g. to roll back an append whose transaction failed.
type Frontier struct {
	size  int64
	nodes []tlog.Hash // nodes[l] is valid when bit l of size is set
}

// Size is the number of entries appended.
func (f *Frontier) Size() int64 { return f.size }

// Clone returns an independent copy.
func (f *Frontier) Clone() Frontier {
	return Frontier{size: f.size, nodes: append([]tlog.Hash(nil), f.nodes...)}
}

// StoredHash is a hash to store, at its tlog.StoredHashIndex.
type StoredHash struct {
	Index int64
	Hash  tlog.Hash
}

// Append adds the entry data as leaf f.Size() and returns the hashes the
// store must keep for it: the leaf hash and the hashes of the subtrees it
// completes, at their tlog.StoredHashIndex positions. It appends them to
// out and returns the extended slice.
func (f *Frontier) Append(out []StoredHash, data []byte) []StoredHash {
	n := f.size
	h := tlog.RecordHash(data)
	out = append(out, StoredHash{tlog.StoredHashIndex(0, n), h})
	level := 0
	for ; n>>uint(level)&1 == 1; level++ {
		h = tlog.NodeHash(f.nodes[level], h)
		out = append(out, StoredHash{tlog.StoredHashIndex(level+1, n>>uint(level+1)), h})
	}
	if level == len(f.nodes) {
		f.nodes = append(f.nodes, h)
	} else {
		f.nodes[level] = h
	}
	f.size++
	return out
}

// Root returns the tree hash (RFC 6962 §2.1) of the entries appended.
func (f *Frontier) Root() tlog.Hash {
	if f.size == 0 {
		return sha256.Sum256(nil)
	}
	var root tlog.Hash
	have := false
	for l := 0; l < len(f.nodes); l++ {
		if f.size>>uint(l)&1 == 0 {
			continue
		}
		if !have {
			root, have = f.nodes[l], true
		} else {
			root = tlog.NodeHash(f.nodes[l], root)
		}
	}
	return root
}

// Restore rebuilds the frontier of a tree of size n from its stored
// hashes, reading at most 64 of them.
func Restore(n int64, r tlog.HashReader) (Frontier, error) {
	f := Frontier{size: n}
	var idx []int64
	var levels []int
	start := int64(0)
	for l := 63; l >= 0; l-- {
		if n>>uint(l)&1 == 0 {
			continue
		}
		// The complete subtree of 2^l leaves starting at start.
		idx = append(idx, tlog.StoredHashIndex(l, start>>uint(l)))
		levels = append(levels, l)
		start += 1 << uint(l)
	}
	hashes, err := r.ReadHashes(idx)
	if err != nil {
		return Frontier{}, err
	}
	if len(levels) > 0 {
		f.nodes = make([]tlog.Hash, levels[0]+1)
	}
	for i, l := range levels {
		f.nodes[l] = hashes[i]
	}
	return f, nil
}
