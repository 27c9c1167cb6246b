package logfile

import (
	"os"
	"syscall"
)

// Datasync flushes f's data, and the metadata needed to read it back, to
// the disk: fdatasync(2). The WAL is reused in place, so its size rarely
// changes, and fdatasync then skips the journal commit that fsync would
// force for the modification time alone. SQLite syncs its WAL the same way.
func Datasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
