package verify

// CacheLen is how many mandates v remembers, for tests.
func CacheLen(v *Verifier) int {
	v.cache.mu.Lock()
	defer v.cache.mu.Unlock()
	return len(v.cache.m)
}
