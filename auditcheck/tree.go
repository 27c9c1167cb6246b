package auditcheck

import (
	"crypto/sha256"

	"golang.org/x/mod/sumdb/tlog"
)

// emptyRoot is the RFC 6962 hash of the empty tree: SHA-256 of nothing.
var emptyRoot = tlog.Hash(sha256.Sum256(nil))

// treeBuilder is a compact range over a log's leaves: it appends leaf
// hashes in order, keeping only the roots of the perfect subtrees that
// cover them (at most 64), and computes the tree hash of what it has seen.
// It calls onNode for every perfect subtree as it completes: height 0 is
// the leaf itself, and index counts the subtrees of that height from the
// left, as tlog.StoredHashIndex does.
type treeBuilder struct {
	n      uint64
	stack  []tlog.Hash // roots of perfect subtrees, left to right, heights decreasing
	onNode func(height int, index uint64, h tlog.Hash)
}

func (t *treeBuilder) append(leaf tlog.Hash) {
	h := leaf
	if t.onNode != nil {
		t.onNode(0, t.n, h)
	}
	height := 0
	for m := t.n; m&1 == 1; m >>= 1 {
		h = tlog.NodeHash(t.stack[len(t.stack)-1], h)
		t.stack = t.stack[:len(t.stack)-1]
		height++
		if t.onNode != nil {
			t.onNode(height, t.n>>height, h)
		}
	}
	t.stack = append(t.stack, h)
	t.n++
}

// root returns the tree hash of the leaves appended so far.
func (t *treeBuilder) root() tlog.Hash {
	if t.n == 0 {
		return emptyRoot
	}
	h := t.stack[len(t.stack)-1]
	for i := len(t.stack) - 2; i >= 0; i-- {
		h = tlog.NodeHash(t.stack[i], h)
	}
	return h
}
