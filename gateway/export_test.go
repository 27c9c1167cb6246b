package gateway

// StdioURL is the loopback URL of a stdio route's bridge, for tests.
func StdioURL(g *Gateway, name string) string {
	if rt := g.routes[name]; rt != nil && rt.auth != "" {
		return rt.upstream.String()
	}
	return ""
}
