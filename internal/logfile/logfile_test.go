package logfile

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// valid stands for the store's event check: an entry is a JSON object.
func valid(b []byte) error {
	if len(b) < 2 || b[0] != '{' || b[len(b)-1] != '}' {
		return errors.New("not an object")
	}
	return nil
}

func entry(i int) []byte {
	return []byte(fmt.Sprintf(`{"i":%d,"pad":%q}`, i, strings.Repeat("x", i%300)))
}

func open(t *testing.T, dir string) *Files {
	t.Helper()
	f, err := Open(dir, valid)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func appendN(t *testing.T, f *Files, from, n int) {
	t.Helper()
	var batch [][]byte
	for i := from; i < from+n; i++ {
		batch = append(batch, entry(i))
	}
	if err := f.Append(batch); err != nil {
		t.Fatal(err)
	}
}

func checkEntries(t *testing.T, f *Files, n int) {
	t.Helper()
	if f.Size() != int64(n) {
		t.Fatalf("size %d, want %d", f.Size(), n)
	}
	for start := 0; start < n; start += 97 {
		k := min(97, n-start)
		got, err := f.ReadEntries(int64(start), int64(k))
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range got {
			if !bytes.Equal(e, entry(start+i)) {
				t.Fatalf("entry %d: %q", start+i, e)
			}
		}
	}
}

// Entries read back as written, in any range, before and after a clean
// reopen; the entries file is exactly the entry bundles' framing.
func TestAppendReadReopen(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir)
	for i := 0; i < 1000; i += 100 {
		appendN(t, f, i, 100)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	checkEntries(t, f, 1000)
	if err := f.SyncDerived(1000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	f = open(t, dir)
	defer f.Close()
	if f.Synced() != 1000 {
		t.Fatalf("synced %d", f.Synced())
	}
	checkEntries(t, f, 1000)
	raw, _ := os.ReadFile(filepath.Join(dir, "entries"))
	var want []byte
	for i := range 1000 {
		want = binary.BigEndian.AppendUint16(want, uint16(len(entry(i))))
		want = append(want, entry(i)...)
	}
	if !bytes.Equal(raw, want) {
		t.Error("the entries file is not the entries framed one after the other")
	}
	for _, name := range []string{"entries", "offsets", "synced"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v, want mode 0600", name, st.Mode(), err)
		}
	}
}

// After a crash, what follows the last synced mark is read frame by frame
// and cut at the first frame that is torn, empty or invalid; the offsets
// are rebuilt for what stays.
func TestRecoverCutsTheUnsyncedTail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(b []byte, syncedEnd int) []byte
		keep   int
	}{
		{"torn in a frame", func(b []byte, end int) []byte { return b[:len(b)-5] }, 799},
		{"torn in a length", func(b []byte, end int) []byte { return append(b, 0) }, 800},
		{"zeros, as after a power loss", func(b []byte, end int) []byte { return append(b, make([]byte, 4096)...) }, 800},
		{"an invalid entry", func(b []byte, end int) []byte {
			e := entry(600)
			i := bytes.Index(b[end:], e)
			b[end+i] = 'X'
			return b
		}, 600},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f := open(t, dir)
			appendN(t, f, 0, 500)
			f.Sync()
			f.SyncDerived(500)
			end := f.end
			appendN(t, f, 500, 300) // written, never synced
			f.Close()
			p := filepath.Join(dir, "entries")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, tc.damage(b, int(end)), 0o600)
			f = open(t, dir)
			defer f.Close()
			checkEntries(t, f, tc.keep)
			// Appends go on after what was kept.
			appendN(t, f, tc.keep, 10)
			checkEntries(t, f, tc.keep+10)
		})
	}
}

// Entries that were synced and are gone (a cut-out entry, a deleted tail)
// are refused at Open, with a message that says so.
func TestRecoverRefusesALostSyncedPart(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir)
	appendN(t, f, 0, 300)
	f.Sync()
	f.SyncDerived(300)
	f.Close()
	p := filepath.Join(dir, "entries")
	b, _ := os.ReadFile(p)
	os.WriteFile(p, b[:len(b)-100], 0o600)
	if _, err := Open(dir, valid); err == nil || !strings.Contains(err.Error(), "the log was truncated") {
		t.Fatalf("Open after losing synced entries: %v", err)
	}
}

// Full tiles written past the synced mark may be torn: Open drops them
// for the store to write again; tiles below the mark stay.
func TestRecoverDropsTilesPastTheMark(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir)
	appendN(t, f, 0, 3*256)
	tile := bytes.Repeat([]byte{7}, TileSize)
	for n := range 3 {
		if err := f.WriteTile(0, int64(n), tile); err != nil {
			t.Fatal(err)
		}
	}
	f.Sync()
	f.SyncDerived(256 + 10) // the first tile is covered, the others not
	f.Close()
	f = open(t, dir)
	defer f.Close()
	if got, err := f.ReadTile(0, 0); err != nil || !bytes.Equal(got, tile) {
		t.Errorf("tile 0/0: %v", err)
	}
	if _, err := f.ReadTile(0, 1); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("tile 0/1 past the mark: %v, want ErrNotExist", err)
	}
	if err := f.WriteTile(0, 1, tile[:100]); err == nil {
		t.Error("a partial tile was written")
	}
}

// FuzzRecover: any content of the entries file opens without a panic and
// keeps only a prefix of whole, valid frames, which read back.
func FuzzRecover(f *testing.F) {
	var good []byte
	for i := range 5 {
		good = binary.BigEndian.AppendUint16(good, uint16(len(entry(i))))
		good = append(good, entry(i)...)
	}
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte{0, 0, 0})
	f.Add([]byte{0xff, 0xff, '{'})
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "entries"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		fl, err := Open(dir, valid)
		if err != nil {
			t.Fatal(err) // nothing was synced: nothing can be refused
		}
		defer fl.Close()
		got, err := fl.ReadEntries(0, fl.Size())
		if err != nil {
			t.Fatal(err)
		}
		var framed []byte
		for _, e := range got {
			if valid(e) != nil {
				t.Fatalf("kept an invalid entry %q", e)
			}
			framed = binary.BigEndian.AppendUint16(framed, uint16(len(e)))
			framed = append(framed, e...)
		}
		if !bytes.HasPrefix(b, framed) {
			t.Fatal("what was kept is not a prefix of the file")
		}
		if st, _ := os.Stat(filepath.Join(dir, "entries")); st.Size() != int64(len(framed)) {
			t.Fatalf("the file is %d bytes, %d kept", st.Size(), len(framed))
		}
	})
}

// After a failed sync of the derived files, the mark never moves again in
// this process, even when a later sync succeeds: the pages that failed may
// have been dropped, and only a restart's rebuild from the entries makes
// them good again.
func TestSyncDerivedMarkStaysAfterAFailure(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir)
	appendN(t, f, 0, 300)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.SyncDerived(300); err != nil {
		t.Fatal(err)
	}
	appendN(t, f, 300, 300)
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	fail := true
	f.SetDerivedSyncHook(func() error {
		if fail {
			fail = false // Linux reports a writeback error once
			return errors.New("EIO")
		}
		return nil
	})
	if err := f.SyncDerived(600); err == nil {
		t.Fatal("a failed sync of the offsets was not reported")
	}
	if err := f.SyncDerived(600); err == nil || f.Synced() != 300 {
		t.Fatalf("the sync after a failed one: %v, mark %d; want an error and the mark at 300", err, f.Synced())
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "synced")); string(b) != "300" {
		t.Fatalf("the synced file says %q, want 300", b)
	}
	f.Close()
	f = open(t, dir)
	defer f.Close()
	if f.Synced() != 300 {
		t.Fatalf("mark %d after a restart, want 300", f.Synced())
	}
	checkEntries(t, f, 600)
}

// A lost page of offsets within the synced mark (it reads as zeros) is
// found at open, and the offsets and tiles are rebuilt from the entries:
// the log opens whole, and says what it rebuilt.
func TestRecoverRebuildsDamagedOffsets(t *testing.T) {
	for _, tc := range []struct {
		name string
		at   int64 // byte offset in offsets of the damage
	}{{"a page in the middle", 4096}, {"the last offset", 2999 * 8}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f := open(t, dir)
			appendN(t, f, 0, 3000)
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			if err := f.SyncDerived(3000); err != nil {
				t.Fatal(err)
			}
			f.Close()
			o, err := os.OpenFile(filepath.Join(dir, "offsets"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := o.WriteAt(make([]byte, min(4096, 3000*8-tc.at)), tc.at); err != nil {
				t.Fatal(err)
			}
			o.Close()
			f = open(t, dir)
			defer f.Close()
			if f.Damaged() != "offsets" {
				t.Errorf("Damaged() = %q, want offsets", f.Damaged())
			}
			if f.Synced() != 0 {
				t.Errorf("mark %d after the rebuild, want 0 until the next SyncDerived", f.Synced())
			}
			checkEntries(t, f, 3000)
		})
	}
}
