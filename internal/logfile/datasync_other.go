//go:build !linux

package logfile

import "os"

// Datasync flushes f to the disk.
func Datasync(f *os.File) error { return f.Sync() }
