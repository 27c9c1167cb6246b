//go:build race

package issuer_test

// raceEnabled: the race detector slows the signature-heavy tests down
// several times, so they scale down under it (.ci/run runs them at full
// size without it too).
const raceEnabled = true
