package auditlog

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mandatehq/mandate/auditlog/layout"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func TestPublisher(t *testing.T) {
	dir := t.TempDir()
	key, err := OpenLogKey(filepath.Join(dir, "log.key"), "mandate.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	again, err := OpenLogKey(filepath.Join(dir, "log.key"), "another.origin/audit")
	if err != nil || again.VKey != key.VKey || again.Origin() != "mandate.test/audit" {
		t.Fatalf("reopened key differs (%v): the origin must stay the key's name", err)
	}
	var f Frontier
	saved := map[int64][]byte{}
	stored := memHashes{}
	p := &Publisher{Key: key, Head: func() (int64, tlog.Hash) { return f.Size(), f.Root() },
		TreeHash: func(n int64) (tlog.Hash, error) { return tlog.TreeHash(n, stored) },
		Save:     func(_ context.Context, size int64, n []byte) error { saved[size] = n; return nil }}
	ctx := context.Background()
	for i := range 10 {
		for _, h := range f.Append(nil, []byte{byte(i)}) {
			stored[h.Index] = h.Hash
		}
	}
	signed, err := p.Publish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(signed, note.VerifierList(key.Verifier))
	if err != nil {
		t.Fatal(err)
	}
	origin, size, root, err := layout.ParseCheckpoint([]byte(n.Text))
	if err != nil || origin != "mandate.test/audit" || size != 10 || root != f.Root() || saved[10] == nil {
		t.Fatalf("checkpoint %q %d %v (%v)", origin, size, root, err)
	}
	// Unchanged log: the same checkpoint, not a new signature.
	if again, _ := p.Publish(ctx); string(again) != string(signed) {
		t.Error("re-signed an unchanged log")
	}
	// A restarted publisher over a store that lost entries refuses.
	p2 := &Publisher{Key: key, Head: func() (int64, tlog.Hash) { var g Frontier; g.Append(nil, []byte{0}); return g.Size(), g.Root() },
		Save: p.Save}
	if err := p2.Restore(signed); err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Publish(ctx); err == nil || !strings.Contains(err.Error(), "fewer than the 10") {
		t.Fatalf("signed a shorter log: %v", err)
	}
	// The log grows: signed. A different history of a larger size (a
	// fork): refused.
	for _, h := range f.Append(nil, []byte("more")) {
		stored[h.Index] = h.Hash
	}
	if _, err := p.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	var forked Frontier
	forkHashes := memHashes{}
	for i := range 12 {
		for _, h := range forked.Append(nil, []byte{byte(100 + i)}) {
			forkHashes[h.Index] = h.Hash
		}
	}
	p4 := &Publisher{Key: key, Head: func() (int64, tlog.Hash) { return forked.Size(), forked.Root() },
		TreeHash: func(n int64) (tlog.Hash, error) { return tlog.TreeHash(n, forkHashes) }, Save: p.Save}
	if err := p4.Restore(saved[11]); err != nil {
		t.Fatal(err)
	}
	if _, err := p4.Publish(ctx); err == nil || !strings.Contains(err.Error(), "fork") {
		t.Fatalf("signed a fork: %v", err)
	}
	// A checkpoint by another key is not restored.
	other, _ := OpenLogKey(filepath.Join(t.TempDir(), "k"), "mandate.test/audit")
	p3 := &Publisher{Key: other}
	if err := p3.Restore(signed); err == nil {
		t.Error("restored a checkpoint signed by another key")
	}
}
