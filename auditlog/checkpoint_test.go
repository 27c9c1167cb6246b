package auditlog

import (
	"context"
	"errors"
	"os"
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
	if err := p2.Restore(signed); !errors.Is(err, ErrLogReplaced) || !strings.Contains(err.Error(), "holds 1 entries, but its last checkpoint") {
		t.Fatalf("restored over a shorter log: %v", err)
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
	if err := p4.Restore(saved[11]); !errors.Is(err, ErrLogReplaced) || !strings.Contains(err.Error(), "history was rewritten") {
		t.Fatalf("restored over a fork: %v", err)
	}
	// Publish refuses too, if the store changes under a running publisher.
	p4.latest.Store(p.latest.Load())
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

// The checkpoint kept apart from the store (HeadFile) catches what the
// store's own cannot: its checkpoints deleted and the log rewritten. A
// store's checkpoint newer than the kept one (a crash before the file was
// written, or a data directory from before it) is accepted if the log
// extends both, and kept.
func TestPublisherHeadFile(t *testing.T) {
	dir := t.TempDir()
	key, err := OpenLogKey(filepath.Join(dir, "log.key"), "mandate.test/audit")
	if err != nil {
		t.Fatal(err)
	}
	type log struct {
		f      Frontier
		hashes memHashes
	}
	grow := func(l *log, tag byte, n int) {
		for i := range n {
			for _, h := range l.f.Append(nil, []byte{tag, byte(i)}) {
				l.hashes[h.Index] = h.Hash
			}
		}
	}
	head := filepath.Join(dir, "log.head")
	saved := map[int64][]byte{}
	newPublisher := func(l *log) *Publisher {
		return &Publisher{Key: key, HeadFile: head, Head: func() (int64, tlog.Hash) { return l.f.Size(), l.f.Root() },
			TreeHash: func(n int64) (tlog.Hash, error) { return tlog.TreeHash(n, l.hashes) },
			Save:     func(_ context.Context, size int64, n []byte) error { saved[size] = n; return nil }}
	}
	ctx := context.Background()
	// A new log: its first checkpoint is signed before it has entries.
	real := &log{hashes: memHashes{}}
	p := newPublisher(real)
	if err := p.Restore(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	grow(real, 0, 5)
	if _, err := p.Publish(ctx); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(head); err != nil || string(b) != string(saved[5]) {
		t.Fatalf("head file after Publish: %q, %v", b, err)
	}

	// The store's checkpoints deleted, the log rewritten: refused.
	forged := &log{hashes: memHashes{}}
	grow(forged, 1, 7)
	if err := newPublisher(forged).Restore(nil); !errors.Is(err, ErrLogReplaced) || !strings.Contains(err.Error(), head) {
		t.Fatalf("Restore over a rewritten log: %v", err)
	}
	// Wiped: refused, naming the sizes.
	if err := newPublisher(&log{hashes: memHashes{}}).Restore(nil); !errors.Is(err, ErrLogReplaced) || !strings.Contains(err.Error(), "holds 0 entries, but its last checkpoint ("+head+") signed 5") {
		t.Fatalf("Restore over a wiped log: %v", err)
	}

	// Both checkpoints deleted, the log rewritten: a log with entries has
	// a checkpoint somewhere, so refused too.
	os.Rename(head, head+".aside")
	if err := newPublisher(forged).Restore(nil); !errors.Is(err, ErrLogReplaced) || !strings.Contains(err.Error(), "the checkpoints were deleted") {
		t.Fatalf("Restore over a rewritten log with no checkpoint: %v", err)
	}
	os.Rename(head+".aside", head)

	// A checkpoint the store saved but the file missed (a crash between
	// the two): accepted, and kept.
	grow(real, 0, 3)
	body := layout.FormatCheckpoint(key.Origin(), 8, real.f.Root())
	newer, err := note.Sign(&note.Note{Text: string(body)}, key.Signer)
	if err != nil {
		t.Fatal(err)
	}
	p = newPublisher(real)
	if err := p.Restore(newer); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(head); string(b) != string(newer) {
		t.Error("the store's newer checkpoint was not kept")
	}
	if _, size := p.Latest(); size != 8 {
		t.Errorf("latest size %d, want 8", size)
	}

	// A data directory from before the head file: the store's trusted
	// once, and kept.
	os.Remove(head)
	if err := newPublisher(real).Restore(newer); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(head); string(b) != string(newer) {
		t.Error("the store's checkpoint was not kept on upgrade")
	}
}
