package gateway

// StdioURL is the loopback URL of a stdio route's bridge, for tests.
func StdioURL(g *Gateway, name string) string {
	if rt := g.routes[name]; rt != nil && rt.auth != "" {
		return rt.upstream.String()
	}
	return ""
}

// OnSettle has fn called when Settle begins to wait, with the number of
// requests it waits for.
func OnSettle(g *Gateway, fn func(n int)) { g.settling = fn }

// TaskState is what g holds of task for policy: its labels and counters.
func TaskState(g *Gateway, task string) ([]string, map[string]int64) {
	return g.tasks.get(task, g.cfg.Now())
}

// InFlight is the number of requests in g's registry of flights (the
// requests Settle would look at).
func InFlight(g *Gateway) int { return len(g.flights.snapshot()) }
