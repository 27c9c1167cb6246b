package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/monitor"
	"go.yaml.in/yaml/v3"
)

// fileConfig is `mandate serve --config FILE` (docs/gateway.md,
// "Configuration file"): the gateway's routes and what the gateway says
// of their tools, and the monitor's responses. Flags add to it.
type fileConfig struct {
	Gateway struct {
		// Scan is what a suspicious tool definition does: block or flag.
		Scan string `yaml:"scan"`
		// UpstreamTimeout and CallTimeout are --upstream-timeout and
		// --call-timeout (a flag given after --config wins).
		UpstreamTimeout *time.Duration `yaml:"upstream_timeout"`
		CallTimeout     *time.Duration `yaml:"call_timeout"`
		MCP             []mcpConfig    `yaml:"mcp"`
		HTTP            []struct {
			Name string `yaml:"name"`
			URL  string `yaml:"url"`
			// AllowEncodedSlashes is gateway.HTTPRoute.AllowEncodedSlashes.
			AllowEncodedSlashes bool `yaml:"allow_encoded_slashes"`
			// Labels are what policy sees on every request of the route;
			// without them it is an external sink (external_send).
			Labels []string `yaml:"labels"`
		} `yaml:"http"`
	} `yaml:"gateway"`
	Monitor struct {
		// Responses replace detectors' default responses (docs/monitor.md).
		Responses map[string][]monitor.Response `yaml:"responses"`
		// RevokeAt revokes a task whose risk reaches it (0: never).
		RevokeAt int `yaml:"revoke_at"`
	} `yaml:"monitor"`
}

type mcpConfig struct {
	Name string `yaml:"name"`
	// URL is a Streamable HTTP upstream; Command a stdio server to run.
	URL     string   `yaml:"url"`
	Command []string `yaml:"command"`
	Env     []string `yaml:"env"`
	Dir     string   `yaml:"dir"`
	// Tools are the labels policy sees on each tool (resource.labels).
	Tools map[string][]string `yaml:"tools"`
	// Internal says, by tool, when a send is internal (gateway.InternalRule).
	Internal map[string]internalConfig `yaml:"internal"`
}

// internalConfig is a tool's rule of internal sends.
type internalConfig struct {
	Recipients []string `yaml:"recipients"`
	Domains    []string `yaml:"domains"`
	Content    []string `yaml:"content"`
}

// internalRules converts a route's rules, checking each as the gateway
// will, so that a mistake is refused with where it is.
func internalRules(where string, r mcpConfig) (map[string]gateway.InternalRule, error) {
	if len(r.Internal) == 0 {
		return nil, nil
	}
	out := map[string]gateway.InternalRule{}
	for tool, c := range r.Internal {
		rule := gateway.InternalRule{Recipients: c.Recipients, Domains: c.Domains, Content: c.Content}
		if err := rule.Validate(tool, r.Tools[tool]); err != nil {
			return nil, fmt.Errorf("%s: internal: %v\nhint: see docs/gateway.md, \"Internal destinations\"", where, err)
		}
		out[tool] = rule
	}
	return out, nil
}

// maxConfigSize bounds a configuration file.
const maxConfigSize = 1 << 20

// loadConfig reads a configuration file into m's gateway routes,
// refusing unknown keys and contradictions with the file and line.
func (m *Main) loadConfig(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	if len(b) > maxConfigSize {
		return fmt.Errorf("--config %s: over %d bytes", path, maxConfigSize)
	}
	var c fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("--config %s: %w\nhint: see docs/gateway.md, \"Configuration file\"", path, err)
	}
	m.ScanMode = c.Gateway.Scan
	for _, b := range []struct {
		key  string
		from *time.Duration
		to   *time.Duration
	}{{"upstream_timeout", c.Gateway.UpstreamTimeout, &m.UpstreamTimeout}, {"call_timeout", c.Gateway.CallTimeout, &m.CallTimeout}} {
		if b.from == nil {
			continue
		}
		if *b.from <= 0 {
			return fmt.Errorf("--config %s: gateway.%s: %v is no bound\nhint: give a duration such as 30s or 10m, or leave it out for the default", path, b.key, *b.from)
		}
		*b.to = *b.from
	}
	if err := monitor.CheckResponses(c.Monitor.Responses); err != nil {
		return fmt.Errorf("--config %s: monitor.responses: %v\nhint: see docs/monitor.md, \"Responses\"", path, err)
	}
	if c.Monitor.RevokeAt < 0 || c.Monitor.RevokeAt > 100 {
		return fmt.Errorf("--config %s: monitor.revoke_at: %d is not a risk from 0 (never) to 100", path, c.Monitor.RevokeAt)
	}
	m.MonitorResponses, m.RevokeAt = c.Monitor.Responses, c.Monitor.RevokeAt
	for i, r := range c.Gateway.MCP {
		where := fmt.Sprintf("--config %s: gateway.mcp[%d] (%s)", path, i, r.Name)
		switch {
		case r.Name == "":
			return fmt.Errorf("--config %s: gateway.mcp[%d] has no name", path, i)
		case (r.URL == "") == (len(r.Command) == 0):
			return fmt.Errorf("%s: give exactly one of url (a Streamable HTTP server) or command (a stdio server)", where)
		case r.URL != "" && (len(r.Env) > 0 || r.Dir != ""):
			return fmt.Errorf("%s: env and dir are for a command", where)
		}
		internal, err := internalRules(where, r)
		if err != nil {
			return err
		}
		if r.URL != "" {
			m.MCPUpstreams = append(m.MCPUpstreams, gateway.Route{Name: r.Name, URL: r.URL, ToolLabels: r.Tools, Internal: internal})
		} else {
			m.MCPStdio = append(m.MCPStdio, gateway.StdioRoute{Name: r.Name, Command: r.Command, Env: r.Env, Dir: r.Dir, ToolLabels: r.Tools, Internal: internal})
		}
	}
	for i, r := range c.Gateway.HTTP {
		if r.Name == "" || r.URL == "" {
			return fmt.Errorf("--config %s: gateway.http[%d] needs a name and a url", path, i)
		}
		m.HTTPUpstreams = append(m.HTTPUpstreams, gateway.HTTPRoute{Name: r.Name, URL: r.URL, AllowEncodedSlashes: r.AllowEncodedSlashes, Labels: r.Labels})
	}
	return nil
}
