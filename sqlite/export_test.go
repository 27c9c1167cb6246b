package sqlite

// SetSyncHook makes every fsync of the audit log and of the WAL call fn
// first, failing with its error: for tests of what happens when the disk
// does not confirm a write.
func (s *Store) SetSyncHook(fn func() error) {
	s.syncHook = fn
	s.files.SetSyncHook(fn)
}

// FlushIndex writes the event index's full in-memory tables as runs now.
func (s *Store) FlushIndex() error { return s.index.Flush() }

// PruneOnce runs one pass of RunPruner now.
func (s *Store) PruneOnce() int { return s.pruneOnce() }

// Recover makes the committer try to recover a degraded store now, and
// returns the outcome (nil: the store is ok).
func (s *Store) Recover() error {
	reply := make(chan error)
	s.recoverNow <- reply
	return <-reply
}

// SetDerivedSyncHook makes every sync of the audit log's offsets and tiles
// call fn first, failing with its error.
func (s *Store) SetDerivedSyncHook(fn func() error) { s.files.SetDerivedSyncHook(fn) }
