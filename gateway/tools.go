package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/mandatehq/mandate"
)

// Scan modes for tool definitions (Config.ScanMode).
const (
	// ScanBlock blocks a tool whose definition the scan flags, until an
	// operator approves it. The default.
	ScanBlock = "block"
	// ScanFlag records what the scan found, and lets the tool be used.
	ScanFlag = "flag"
)

// pins is the gateway's view of the pinned tool definitions, loaded from
// the store a server at a time and written through.
type pins struct {
	store       mandate.ToolPinStore
	mu          sync.Mutex
	loaded      map[string]map[string]*mandate.ToolPin // server → name → pin
	discovered  map[string]time.Time                   // when the gateway last listed a server itself
	discovering map[string]chan struct{}               // closed when the listing running now ends
}

// discoverEvery is how often the gateway lists a server's tools itself.
const discoverEvery = 10 * time.Second

func (p *pins) server(ctx context.Context, server string) (map[string]*mandate.ToolPin, error) {
	if m, ok := p.loaded[server]; ok {
		return m, nil
	}
	list, err := p.store.ToolPins(ctx, server)
	if err != nil {
		return nil, err
	}
	m := make(map[string]*mandate.ToolPin, len(list))
	for _, t := range list {
		m[t.Name] = t
	}
	if p.loaded == nil {
		p.loaded = map[string]map[string]*mandate.ToolPin{}
	}
	p.loaded[server] = m
	return m, nil
}

// definition is a tool as the gateway pins it.
type definition struct {
	name, hash string
	canonical  []byte
	findings   []string
}

// canonicalTool reads one tool of a tools/list answer: its name,
// description and input schema, in canonical JSON (keys sorted, numbers
// as written), and the SHA-256 of that.
func canonicalTool(raw json.RawMessage) (definition, error) {
	var t struct {
		Name        string `json:"name"`
		Description string `json:"description"`
		InputSchema any    `json:"inputSchema"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&t); err != nil || t.Name == "" {
		return definition{}, fmt.Errorf("a tool without a name, or not an object")
	}
	c, err := json.Marshal(map[string]any{"name": t.Name, "description": t.Description, "inputSchema": t.InputSchema})
	if err != nil {
		return definition{}, err
	}
	h := sha256.Sum256(c)
	return definition{name: t.Name, hash: hex.EncodeToString(h[:]), canonical: c, findings: scanDefinition(c)}, nil
}

// observe pins the tools a server lists at first sight, notices changed
// definitions, and returns the names of the tools that may be used: those
// whose definition is the pinned one and not blocked.
func (g *Gateway) observe(ctx context.Context, rt *route, c *mandate.Claims, tools []json.RawMessage) map[string]bool {
	usable := map[string]bool{}
	g.pins.mu.Lock()
	defer g.pins.mu.Unlock()
	known, err := g.pins.server(ctx, rt.Name)
	if err != nil {
		g.cfg.Logger.Error("gateway: tool pins unavailable: hiding every tool", "server", rt.Name, "err", err)
		return usable
	}
	now := g.cfg.Now()
	for _, raw := range tools {
		d, err := canonicalTool(raw)
		if err != nil {
			continue
		}
		pin := known[d.name]
		switch {
		case pin == nil:
			pin = &mandate.ToolPin{Server: rt.Name, Name: d.name, Status: mandate.ToolPinned, Hash: d.hash, Definition: d.canonical,
				Findings: d.findings, FirstSeen: now, UpdatedAt: now}
			outcome := mandate.OutcomeOK
			if len(d.findings) > 0 && g.cfg.ScanMode == ScanBlock {
				pin.Status, outcome = mandate.ToolFlagged, mandate.OutcomeDeny
			}
			ev := g.event(mandate.EventToolPinned, c, "tools/list", "mcp:"+rt.Name+":"+d.name, outcome, findingsReason(d.findings),
				map[string]any{"hash": d.hash, "findings": d.findings, "status": string(pin.Status)})
			if err := g.cfg.Tools.SaveToolPin(ctx, pin, ev); err != nil {
				g.cfg.Logger.Error("gateway: tool not pinned: hiding it", "server", rt.Name, "tool", d.name, "err", err)
				continue
			}
			known[d.name] = pin
		case d.hash == pin.Hash:
			// The pinned definition (a server that changed back, too).
		case d.hash != pin.PendingHash:
			changed := *pin
			changed.Status, changed.PendingHash, changed.PendingDefinition = mandate.ToolChanged, d.hash, d.canonical
			changed.Findings, changed.UpdatedAt = d.findings, now
			ev := g.event(mandate.EventToolChanged, c, "tools/list", "mcp:"+rt.Name+":"+d.name, mandate.OutcomeDeny,
				"the definition differs from the one pinned on "+pin.FirstSeen.UTC().Format("2006-01-02")+": blocked until an operator approves it",
				map[string]any{"hash": d.hash, "pinned_hash": pin.Hash, "findings": d.findings})
			if err := g.cfg.Tools.SaveToolPin(ctx, &changed, ev); err != nil {
				g.cfg.Logger.Error("gateway: changed tool not recorded", "server", rt.Name, "tool", d.name, "err", err)
			} else {
				known[d.name] = &changed
			}
			continue
		default:
			continue // the changed definition, already recorded
		}
		if pin.Status != mandate.ToolFlagged && d.hash == pin.Hash {
			usable[d.name] = true
		}
	}
	return usable
}

// maxDiscoverPages bounds the pages of tools the gateway reads itself.
const maxDiscoverPages = 20

// discover lists the upstream's tools in the session of r and pins what
// it sees, for a tool called before it was ever listed. It reports
// whether it learnt anything.
func (g *Gateway) discover(r *http.Request, rt *route, c *mandate.Claims) bool {
	// At most once per server every discoverEvery: a caller naming tools
	// that do not exist must not make the gateway list the server again
	// and again. Calls that arrive while a listing runs wait for it.
	g.pins.mu.Lock()
	if running := g.pins.discovering[rt.Name]; running != nil {
		g.pins.mu.Unlock()
		select {
		case <-running:
			return true
		case <-r.Context().Done():
			return false
		}
	}
	if last := g.pins.discovered[rt.Name]; !last.IsZero() && g.cfg.Now().Sub(last) < discoverEvery {
		g.pins.mu.Unlock()
		return false
	}
	if g.pins.discovered == nil {
		g.pins.discovered, g.pins.discovering = map[string]time.Time{}, map[string]chan struct{}{}
	}
	done := make(chan struct{})
	g.pins.discovering[rt.Name] = done
	g.pins.mu.Unlock()
	defer func() {
		g.pins.mu.Lock()
		g.pins.discovered[rt.Name] = g.cfg.Now()
		delete(g.pins.discovering, rt.Name)
		g.pins.mu.Unlock()
		close(done)
	}()
	var tools []json.RawMessage
	cursor := ""
	for page := 0; page < maxDiscoverPages; page++ {
		params := "{}"
		if cursor != "" {
			b, _ := json.Marshal(map[string]string{"cursor": cursor})
			params = string(b)
		}
		body := []byte(`{"jsonrpc":"2.0","id":"mandate-gateway-pin","method":"tools/list","params":` + params + `}`)
		req := r.Clone(r.Context())
		req.Method = http.MethodPost
		req.Header = r.Header.Clone()
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json, text/event-stream")
		resp, end, err := g.forward(req, rt, c, body)
		if err != nil {
			return false
		}
		var result struct {
			Tools      []json.RawMessage `json:"tools"`
			NextCursor string            `json:"nextCursor"`
		}
		found := false
		g.answer(discard{}, resp, func(m *message) []byte {
			if string(m.ID) == `"mandate-gateway-pin"` && json.Unmarshal(m.Result, &result) == nil {
				found = true
			}
			return nil
		})
		resp.Body.Close()
		end()
		if !found {
			return false
		}
		tools = append(tools, result.Tools...)
		if cursor = result.NextCursor; cursor == "" {
			break
		}
	}
	g.observe(r.Context(), rt, c, tools)
	return len(tools) > 0
}

// discard is a ResponseWriter that keeps nothing: the gateway reading an
// answer for itself.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// toolUsable says whether a tool may be called: its pinned definition is
// the one the server last showed, and it is not blocked.
func (g *Gateway) toolUsable(ctx context.Context, rt *route, name string) (bool, string) {
	g.pins.mu.Lock()
	defer g.pins.mu.Unlock()
	known, err := g.pins.server(ctx, rt.Name)
	if err != nil {
		return false, "the gateway cannot read its tool pins now: try again later"
	}
	switch pin := known[name]; {
	case pin == nil:
		return false, "the gateway has not seen the definition of tool " + name + ": list the tools first (tools/list)"
	case pin.Status == mandate.ToolChanged && pin.PendingHash != "":
		return false, "the definition of tool " + name + " changed since it was pinned: an operator must approve it (mandate tools diff " + rt.Name + " " + name + ")"
	case pin.Status == mandate.ToolFlagged:
		return false, "the definition of tool " + name + " looks like it instructs the model (" + strings.Join(pin.Findings, "; ") + "): an operator must approve it"
	}
	return true, ""
}

// ApproveTool makes the definition with hash the pinned one of a tool, and
// unblocks it: an operator's decision, recorded as a tool.approved event by
// by. hash must be the definition the operator saw (the pending one of a
// changed tool, or the pinned one of a flagged tool).
func (g *Gateway) ApproveTool(ctx context.Context, server, name, hash, by string) (*mandate.ToolPin, error) {
	if g.routes[server] == nil {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "no MCP server %q behind this gateway", server)
	}
	g.pins.mu.Lock()
	defer g.pins.mu.Unlock()
	known, err := g.pins.server(ctx, server)
	if err != nil {
		return nil, err
	}
	pin := known[name]
	if pin == nil {
		return nil, mandate.Errorf(mandate.ENOTFOUND, "tool %s of %s has not been seen", name, server)
	}
	next := *pin
	switch {
	case pin.Status == mandate.ToolChanged && hash == pin.PendingHash:
		next.Hash, next.Definition = pin.PendingHash, pin.PendingDefinition
	case pin.Status != mandate.ToolChanged && hash == pin.Hash:
	default:
		return nil, mandate.Errorf(mandate.ECONFLICT, "tool %s of %s: %s is not the definition waiting for approval; hint: look again with `mandate tools diff %s %s`", name, server, hash, server, name)
	}
	next.Status, next.PendingHash, next.PendingDefinition = mandate.ToolPinned, "", nil
	next.ApprovedBy, next.UpdatedAt = by, g.cfg.Now()
	ev := &mandate.Event{V: mandate.EventVersion, Time: g.cfg.Now().UnixNano(), Type: mandate.EventToolApproved,
		Action: "approve", Resource: "mcp:" + server + ":" + name, Outcome: mandate.OutcomeOK, By: by,
		Details: map[string]any{"hash": next.Hash, "previous_hash": pin.Hash, "findings": pin.Findings}}
	if err := g.cfg.Tools.SaveToolPin(ctx, &next, ev); err != nil {
		return nil, err
	}
	known[name] = &next
	return &next, nil
}

func findingsReason(f []string) string {
	if len(f) == 0 {
		return ""
	}
	return "the definition " + strings.Join(f, "; ")
}

// The scan of tool definitions: markers that a description addresses the
// model rather than describes the tool, hides text, or reaches for
// secrets (docs/gateway.md, "Tool integrity"). A finding is a hint for an
// operator, not proof: the point is that nobody approved it.
var scanRules = []struct {
	what string
	re   *regexp.Regexp
}{
	{"tells the model to ignore or override its instructions", regexp.MustCompile(`(?i)\b(ignore|disregard|forget|override)\b.{0,40}\b(previous|prior|above|earlier|all|system|other)\b.{0,20}\b(instructions?|prompts?|rules|messages?)\b`)},
	{"addresses the model with hidden or urgent directives", regexp.MustCompile(`(?i)<\s*(important|system|instructions?|secret|hidden)\s*>|\b(do not|don't|never)\s+(tell|mention|reveal|inform|show)\b.{0,30}\b(user|human|anyone)\b`)},
	{"asks for secrets or credentials", regexp.MustCompile(`(?i)\b(read|include|send|pass|provide|attach|append|add|paste|put|give)\b.{0,40}\b(private[ _-]?keys?|api[ _-]?keys?|secret[ _-]?keys?|access[ _-]?tokens?|passwords?|credentials?|mnemonic|seed phrase)\b`)},
	{"names files outside a tool's purpose", regexp.MustCompile(`(?i)(~/\.ssh|id_rsa|id_ed25519|\.aws/credentials|\.env\b|/etc/(passwd|shadow)|\.netrc|\.npmrc|\.git-credentials|kubeconfig)`)},
	{"tells the model to send data elsewhere", regexp.MustCompile(`(?i)\b(send|forward|upload|post|exfiltrate|copy)\b.{0,40}\b(to|into)\b.{0,20}(https?://|\b[\w.-]+@[\w.-]+\.\w+)`)},
}

// scanDefinition returns what the scan finds in a tool's canonical
// definition (its description, and the descriptions in its schema).
func scanDefinition(canonical []byte) []string {
	var text string
	var walk func(v any)
	var sb strings.Builder
	walk = func(v any) {
		switch x := v.(type) {
		case string:
			sb.WriteString(x)
			sb.WriteByte('\n')
		case []any:
			for _, e := range x {
				walk(e)
			}
		case map[string]any:
			for k, e := range x {
				sb.WriteString(k)
				sb.WriteByte('\n')
				walk(e)
			}
		}
	}
	var v any
	if json.Unmarshal(canonical, &v) == nil {
		walk(v)
	}
	text = sb.String()
	var found []string
	if hidden := hiddenRunes(text); hidden != "" {
		found = append(found, "holds invisible characters ("+hidden+")")
	}
	for _, r := range scanRules {
		if r.re.MatchString(text) {
			found = append(found, r.what)
		}
	}
	return found
}

// hiddenRunes names the invisible or direction-changing characters in s:
// zero-width characters, bidirectional controls and Unicode tag
// characters, with which a description can say to a model what a person
// reading it does not see.
func hiddenRunes(s string) string {
	var names []string
	seen := map[string]bool{}
	for _, r := range s {
		var n string
		switch {
		case r >= 0xE0000 && r <= 0xE007F:
			n = "tag characters"
		case r == 0x200B || r == 0x200C || r == 0x200D || r == 0x2060 || r == 0xFEFF:
			n = "zero-width characters"
		case (r >= 0x202A && r <= 0x202E) || (r >= 0x2066 && r <= 0x2069) || r == 0x200E || r == 0x200F:
			n = "bidirectional controls"
		case unicode.Is(unicode.Cf, r) && r != 0xAD:
			n = fmt.Sprintf("format character U+%04X", r)
		}
		if n != "" && !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}
