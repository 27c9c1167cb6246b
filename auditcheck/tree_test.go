package auditcheck

import (
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// TestTreeBuilder checks the verifier's compact range against x/mod's
// tlog: the root at every size, and every perfect subtree it reports,
// against tlog's stored hashes.
func TestTreeBuilder(t *testing.T) {
	var stored []tlog.Hash
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	nodes := 0
	tb := treeBuilder{onNode: func(height int, index uint64, h tlog.Hash) {
		nodes++
		if want := stored[tlog.StoredHashIndex(height, int64(index))]; h != want {
			t.Fatalf("node (%d, %d) = %v, tlog has %v", height, index, h, want)
		}
	}}
	const n = 3000
	for i := range int64(n) {
		want, err := tlog.TreeHash(i, r)
		if err != nil {
			t.Fatal(err)
		}
		if got := tb.root(); got != want {
			t.Fatalf("root of %d: %v, want %v", i, got, want)
		}
		e := fmt.Appendf(nil, "entry %d", i)
		hs, err := tlog.StoredHashes(i, e, r)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		tb.append(tlog.RecordHash(e))
	}
	if nodes != len(stored) {
		t.Errorf("%d nodes reported, tlog stores %d", nodes, len(stored))
	}
}
