// Package clock gives the time to code that forgets by time: a wall clock
// that never runs ahead of the time elapsed since start.
//
// Pruning a revocation once its mandate has expired is safe only if "now"
// is not ahead of the verifiers' clock. A wall clock that jumps forward
// (an NTP step, an operator's date command) and is corrected later would
// otherwise make a pruner forget the revocations of mandates that are
// live again once the clock is back. The wall time at start plus the
// monotonic time elapsed since cannot jump, so the minimum of the two
// never runs ahead of the true time by more than the wall clock was ahead
// at start.
//
// # What it is not for
//
// It is not the clock of issuance or verification: those follow the wall
// clock, as the verifiers do. A backward jump makes NotAhead follow the
// wall clock back, which keeps state longer: never less safe.
package clock

import "time"

// NotAhead returns a clock that reads now, but never later than now's
// reading at the call plus elapsed(): the time elapsed since the call on a
// clock that cannot jump. elapsed nil means the monotonic clock
// (time.Since of a time.Now taken at the call). Tests whose injected now
// stands for time that truly passes inject an elapsed that follows it.
func NotAhead(now func() time.Time, elapsed func() time.Duration) func() time.Time {
	anchor := now()
	if elapsed == nil {
		start := time.Now()
		elapsed = func() time.Duration { return time.Since(start) }
	}
	return func() time.Time {
		w, steady := now(), anchor.Add(elapsed())
		if w.After(steady) {
			return steady
		}
		return w
	}
}
