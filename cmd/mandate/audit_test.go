package main

import (
	"slices"
	"testing"
)

// The files of a 1,000-entry log, as docs/auditlog.md lists them.
func TestTilePaths(t *testing.T) {
	got := tilePaths(1000)
	want := []string{
		"tile/entries/000", "tile/entries/001", "tile/entries/002", "tile/entries/003.p/232",
		"tile/0/000", "tile/0/001", "tile/0/002", "tile/0/003.p/232",
		"tile/1/000.p/3",
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("tilePaths(1000) = %v\nwant %v", got, want)
	}
}
