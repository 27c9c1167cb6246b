//go:build race

package main

// raceEnabled: the race detector slows the request-heavy tests down
// several times, so they scale down under it (.ci/run runs them at full
// size without it too).
const raceEnabled = true
