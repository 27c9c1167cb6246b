package gateway

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

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
// the store a server at a time and written through, and of what each
// server lists now.
type pins struct {
	store       mandate.ToolPinStore
	mu          sync.Mutex
	loaded      map[string]map[string]*mandate.ToolPin // server → name → pin
	views       map[string]*serverView                 // server → what it lists
	discovered  map[string]time.Time                   // when the gateway last listed a server itself
	discovering map[string]chan struct{}               // closed when the listing running now ends
}

// serverView is what the gateway knows of the tools a server lists now.
// It lives in memory: after a restart no server has one, so the first
// call to each lists its tools again (it fails closed).
type serverView struct {
	notified uint64          // the server's notifications/tools/list_changed so far
	listedAt uint64          // notified as it was when the latest complete list was asked
	complete bool            // a complete list was read (all its pages)
	listed   map[string]bool // the tools of that list, and those of pages read since
}

// fresh says whether the latest complete list was asked after the
// server last said its tools changed.
func (v *serverView) fresh() bool { return v != nil && v.complete && v.listedAt >= v.notified }

func (p *pins) view(server string) *serverView {
	if p.views == nil {
		p.views = map[string]*serverView{}
	}
	v := p.views[server]
	if v == nil {
		v = &serverView{listed: map[string]bool{}}
		p.views[server] = v
	}
	return v
}

// generation is the number of list_changed notifications of a server so
// far: a list asked at generation n is current until the next one.
func (p *pins) generation(server string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.view(server).notified
}

// toolsChanged records that a server said its tools changed: the next
// call to any of them waits for a new list.
func (g *Gateway) toolsChanged(server string) {
	g.pins.mu.Lock()
	defer g.pins.mu.Unlock()
	g.pins.view(server).notified++
}

// discoverEvery is how often the gateway lists a server's tools itself.
const discoverEvery = 10 * time.Second

// Bounds of the pins: tools pinned per server (past it, a server's new
// tools are hidden and refused), the size of one tool's definition (a
// larger one is hidden, not pinned), and the new or changed definitions
// one list scans (the others are hidden until a later list).
const (
	maxPinsPerServer    = 10_000
	maxToolDefinition   = 256 << 10
	maxScanBytesPerList = 2 << 20
)

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

// toolMembers are the members MCP defines for a Tool (schema 2025-06-18,
// 2025-11-25 and the 2026-07-28 draft), each with the JSON type it must
// have. The gateway pins, scans and relays these and nothing else: a
// member MCP does not define is text no one pinned or scanned, so it does
// not reach the client (extensions belong in _meta, which is pinned).
var toolMembers = map[string]func(any) bool{
	"name":         isString,
	"title":        isString,
	"description":  isString,
	"inputSchema":  isObject,
	"outputSchema": isObject,
	"annotations":  isObject,
	"icons":        func(v any) bool { _, ok := v.([]any); return ok },
	"execution":    isObject,
	"_meta":        isObject,
}

func isString(v any) bool { _, ok := v.(string); return ok }
func isObject(v any) bool { _, ok := v.(map[string]any); return ok }

// definition is a tool as the gateway pins it.
type definition struct {
	name, hash string
	canonical  []byte
	// legacyHash is the hash a pin made before whole definitions were
	// pinned would have: of the name, description and input schema.
	legacyHash string
	tool       map[string]any
	// What the scan finds, once scan has run: it runs only for a
	// definition about to be pinned.
	scanned  bool
	findings []string
	score    int
}

// scan runs the scan of d, once.
func (d *definition) scan() {
	if !d.scanned {
		r := scanTool(d.tool)
		d.findings, d.score, d.scanned = r.findings(), r.Score, true
	}
}

// pinHash is the hash of a canonical definition: SHA-256, domain
// separated, so that it never equals the hash of a pin of the earlier
// format (a plain SHA-256 of three members), which tells those apart.
func pinHash(canonical []byte) string {
	h := sha256.New()
	h.Write([]byte("mandate tool pin v2\n"))
	h.Write(canonical)
	return hex.EncodeToString(h.Sum(nil))
}

// legacyPin says whether p was made before whole definitions were pinned.
func legacyPin(p *mandate.ToolPin) bool {
	h := sha256.Sum256(p.Definition)
	return hex.EncodeToString(h[:]) == p.Hash
}

// canonicalTool reads one tool of a tools/list answer: the members MCP
// defines for a tool (toolMembers; a null one as if absent), in canonical
// JSON (keys sorted, numbers as written, no HTML escaping), and its hash.
func canonicalTool(raw json.RawMessage) (definition, error) {
	if len(raw) > maxToolDefinition {
		return definition{}, fmt.Errorf("a tool definition of %d bytes, over the limit of %d", len(raw), maxToolDefinition)
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return definition{}, fmt.Errorf("a tool that is not an object")
	}
	tool := map[string]any{}
	for k, v := range obj {
		check, ok := toolMembers[k]
		if !ok {
			continue
		}
		var val any
		dec := json.NewDecoder(bytes.NewReader(v))
		dec.UseNumber()
		if dec.Decode(&val) != nil {
			return definition{}, fmt.Errorf("a tool whose %s does not parse", k)
		}
		if val == nil {
			continue
		}
		if !check(val) {
			return definition{}, fmt.Errorf("a tool whose %s is of the wrong type", k)
		}
		tool[k] = val
	}
	name, _ := tool["name"].(string)
	if name == "" {
		return definition{}, fmt.Errorf("a tool without a name")
	}
	c := marshal(tool)
	desc, _ := tool["description"].(string)
	legacy, err := json.Marshal(map[string]any{"name": name, "description": desc, "inputSchema": tool["inputSchema"]})
	if err != nil {
		return definition{}, err
	}
	lh := sha256.Sum256(legacy)
	return definition{name: name, hash: pinHash(c), canonical: c, legacyHash: hex.EncodeToString(lh[:]), tool: tool}, nil
}

// toolList is what the gateway makes of one tools/list answer.
type toolList struct {
	order []string          // the tools listed, as first listed
	relay map[string][]byte // the pinned definitions of those that may be used
	twice string            // a tool listed more than once, if any
}

// observe pins the tools a server lists at first sight, notices changed
// definitions, and returns what may be relayed: the pinned definition of
// each tool whose definition is the pinned one and not blocked. complete
// says whether tools is the server's whole list, asked when its
// generation was gen.
func (g *Gateway) observe(ctx context.Context, rt *route, c *mandate.Claims, tools []json.RawMessage, complete bool, gen uint64) toolList {
	out := toolList{relay: map[string][]byte{}}
	var defs []definition
	count := map[string]int{}
	for _, raw := range tools {
		d, err := canonicalTool(raw)
		if err != nil {
			g.cfg.Logger.Warn("gateway: a tool the server lists is not pinned, and hidden", "server", rt.Name, "err", err)
			continue
		}
		if sc, err := mandate.ParseScope("mcp:" + rt.Name + ":" + d.name); err != nil || !sc.IsConcrete() {
			continue // no scope can name it: it can be neither listed nor called
		}
		defs = append(defs, d)
		if count[d.name]++; count[d.name] == 1 {
			out.order = append(out.order, d.name)
		} else {
			out.twice = d.name
		}
	}
	// The definitions about to be pinned are scanned, outside the lock:
	// at most maxScanBytesPerList of them in one list (the others wait for
	// the next).
	g.pins.mu.Lock()
	known, err := g.pins.server(ctx, rt.Name)
	var toScan []int
	for i, d := range defs {
		if pin := known[d.name]; err == nil && (pin == nil || (d.hash != pin.Hash && d.hash != pin.PendingHash)) {
			toScan = append(toScan, i)
		}
	}
	g.pins.mu.Unlock()
	if err != nil {
		g.logError("gateway: tool pins unavailable: hiding every tool", err, "server", rt.Name)
		return out
	}
	budget := maxScanBytesPerList
	for _, i := range toScan {
		if budget -= len(defs[i].canonical); budget < 0 {
			g.cfg.Logger.Warn("gateway: more new tool definitions than one list pins: the rest wait for the next list", "server", rt.Name,
				"new", len(toScan), "max_bytes", maxScanBytesPerList)
			break
		}
		defs[i].scan()
	}
	g.pins.mu.Lock()
	defer g.pins.mu.Unlock()
	if known, err = g.pins.server(ctx, rt.Name); err != nil {
		return out
	}
	now := g.cfg.Now()
	seen := map[string]bool{}
	for _, d := range defs {
		pin := g.pin(ctx, rt, c, known, d, count[d.name] > 1, now)
		if pin != nil {
			seen[d.name] = true // what the server lists, of what can be called (bounded by the pins)
		}
		if pin != nil && pin.Status == mandate.ToolPinned && d.hash == pin.Hash {
			out.relay[d.name] = pin.Definition
		} else {
			delete(out.relay, d.name) // a second definition that is not the pinned one
		}
	}
	v := g.pins.view(rt.Name)
	if complete && (!v.complete || gen >= v.listedAt) {
		v.listed, v.listedAt, v.complete = seen, gen, true
	} else {
		for name := range seen {
			v.listed[name] = true
		}
	}
	return out
}

// pin records what the server shows of one tool against its pin, and
// returns the pin as it is now (nil if there is none).
// twice says the server lists the tool more than once.
func (g *Gateway) pin(ctx context.Context, rt *route, c *mandate.Claims, known map[string]*mandate.ToolPin, d definition, twice bool, now time.Time) *mandate.ToolPin {
	return g.pinFrom(ctx, "tools/list", rt, c, known, d, twice, now)
}

// pinFrom is pin, for what the answer to action showed.
func (g *Gateway) pinFrom(ctx context.Context, action string, rt *route, c *mandate.Claims, known map[string]*mandate.ToolPin, d definition, twice bool, now time.Time) *mandate.ToolPin {
	pin := known[d.name]
	resource := "mcp:" + rt.Name + ":" + d.name
	needsScan := pin == nil || (d.hash != pin.Hash && d.hash != pin.PendingHash)
	if needsScan && !d.scanned {
		return nil // not scanned in this list: hidden until the next
	}
	blocked := len(d.findings) > 0 && g.cfg.ScanMode == ScanBlock
	switch {
	case pin == nil:
		if len(known) >= maxPinsPerServer {
			g.cfg.Logger.Error("gateway: too many tools pinned for this server: a new one is hidden", "server", rt.Name, "tool", d.name, "max", maxPinsPerServer)
			return nil
		}
		pin = &mandate.ToolPin{Server: rt.Name, Name: d.name, Status: mandate.ToolPinned, Hash: d.hash, Definition: d.canonical,
			Findings: d.findings, FirstSeen: now, UpdatedAt: now}
		outcome := mandate.OutcomeOK
		if blocked {
			pin.Status, outcome = mandate.ToolFlagged, mandate.OutcomeDeny
		}
		ev := g.event(mandate.EventToolPinned, c, action, resource, outcome, findingsReason(d.findings),
			map[string]any{"hash": d.hash, "findings": d.findings, "scan_score": d.score, "status": string(pin.Status)})
		if err := g.cfg.Tools.SaveToolPin(ctx, pin, ev); err != nil {
			g.logError("gateway: tool not pinned: hiding it", err, "server", rt.Name, "tool", d.name)
			return nil
		}
		known[d.name] = pin
	case d.hash == pin.Hash && pin.Status == mandate.ToolChanged && !twice:
		// The server shows the pinned definition again: what was pinned
		// is what it shows, and the tool is served again.
		back := *pin
		back.Status, back.PendingHash, back.PendingDefinition, back.UpdatedAt = mandate.ToolPinned, "", nil, now
		ev := g.event(mandate.EventToolChanged, c, action, resource, mandate.OutcomeOK,
			"the server shows the pinned definition again", map[string]any{"hash": d.hash, "pending_hash": pin.PendingHash, "restored": true})
		if err := g.cfg.Tools.SaveToolPin(ctx, &back, ev); err != nil {
			g.logError("gateway: restored tool not recorded: hiding it", err, "server", rt.Name, "tool", d.name)
			return nil
		}
		known[d.name] = &back
	case d.hash == pin.Hash || d.hash == pin.PendingHash:
		// The pinned definition, or the changed one, recorded already.
	case legacyPin(pin) && d.legacyHash == pin.Hash:
		// A pin of the earlier format, of the name, description and input
		// schema only, and those are unchanged: the rest of the definition
		// is pinned now, as at first sight, and scanned with the rest.
		next := *pin
		next.Hash, next.Definition, next.Findings, next.UpdatedAt = d.hash, d.canonical, d.findings, now
		outcome := mandate.OutcomeOK
		if blocked && pin.Status == mandate.ToolPinned {
			next.Status, outcome = mandate.ToolFlagged, mandate.OutcomeDeny
		}
		ev := g.event(mandate.EventToolPinned, c, action, resource, outcome, findingsReason(d.findings),
			map[string]any{"hash": d.hash, "upgraded_from": pin.Hash, "findings": d.findings, "scan_score": d.score, "status": string(next.Status)})
		if err := g.cfg.Tools.SaveToolPin(ctx, &next, ev); err != nil {
			g.logError("gateway: tool pin not carried over: hiding it", err, "server", rt.Name, "tool", d.name)
			return nil
		}
		known[d.name] = &next
	default:
		changed := *pin
		changed.Status, changed.PendingHash, changed.PendingDefinition = mandate.ToolChanged, d.hash, d.canonical
		changed.Findings, changed.UpdatedAt = d.findings, now
		ev := g.event(mandate.EventToolChanged, c, action, resource, mandate.OutcomeDeny,
			"the definition differs from the one pinned on "+pin.FirstSeen.UTC().Format("2006-01-02")+": blocked until an operator approves it",
			map[string]any{"hash": d.hash, "pinned_hash": pin.Hash, "findings": d.findings, "scan_score": d.score})
		if err := g.cfg.Tools.SaveToolPin(ctx, &changed, ev); err != nil {
			g.logError("gateway: changed tool not recorded: hiding it", err, "server", rt.Name, "tool", d.name)
			return nil
		}
		known[d.name] = &changed
	}
	return known[d.name]
}

// instructionsPin is the name of the pin of a server's instructions: a
// name no tool can have (':' is not in a tool's name).
const instructionsPin = ":instructions"

// filterInstructions pins and scans the instructions of an initialize or
// server/discover result, which clients give the model as part of its
// prompt: they reach the client only as pinned and not blocked; the
// result goes without them otherwise (the session still opens). It
// returns nil to relay m as it is.
func (g *Gateway) filterInstructions(ctx context.Context, m *message, c *mandate.Claims, rt *route) []byte {
	var res map[string]json.RawMessage
	if len(m.Error) > 0 || json.Unmarshal(m.Result, &res) != nil || res["instructions"] == nil {
		return nil
	}
	var text string
	if json.Unmarshal(res["instructions"], &text) == nil && text != "" {
		tool := map[string]any{"instructions": text}
		canonical := marshal(tool)
		d := definition{name: instructionsPin, hash: pinHash(canonical), canonical: canonical, tool: tool}
		d.scan()
		g.pins.mu.Lock()
		known, err := g.pins.server(ctx, rt.Name)
		var pin *mandate.ToolPin
		if err == nil {
			pin = g.pinFrom(ctx, "initialize", rt, c, known, d, false, g.cfg.Now())
		}
		g.pins.mu.Unlock()
		if pin != nil && pin.Status == mandate.ToolPinned && pin.Hash == d.hash {
			return nil
		}
		g.cfg.Logger.Warn("gateway: the MCP server's instructions are not the pinned ones, or flagged: not relayed", "server", rt.Name)
	}
	delete(res, "instructions")
	m.Result = marshal(res)
	return marshal(m)
}

// maxDiscoverPages bounds the pages of tools the gateway reads itself.
const maxDiscoverPages = 20

// discover lists the upstream's tools in the session of r and pins what
// it sees: for a tool called before it was ever listed, and before any
// call once the server has said its tools changed (or since a restart).
// It reports whether it read a list.
func (g *Gateway) discover(r *http.Request, rt *route, c *mandate.Claims) bool {
	// At most once per server every discoverEvery, unless what the
	// gateway knows of the server's list is stale: a caller naming tools
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
	view := g.pins.view(rt.Name)
	if last := g.pins.discovered[rt.Name]; view.fresh() && !last.IsZero() && g.cfg.Now().Sub(last) < discoverEvery {
		g.pins.mu.Unlock()
		return false
	}
	gen := view.notified
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
	complete := false
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
		g.answer(discard{}, resp, &relay{rt: rt, asked: []json.RawMessage{json.RawMessage(`"mandate-gateway-pin"`)}, hook: func(m *message) []byte {
			if m.isResponse() && json.Unmarshal(m.Result, &result) == nil {
				found = true
			}
			return nil
		}})
		resp.Body.Close()
		end()
		if !found {
			return false
		}
		tools = append(tools, result.Tools...)
		if cursor = result.NextCursor; cursor == "" {
			complete = true
			break
		}
	}
	g.observe(r.Context(), rt, c, tools, complete, gen)
	return true
}

// discard is a ResponseWriter that keeps nothing: the gateway reading an
// answer for itself.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

// toolUsable says whether a tool may be called: its pinned definition is
// the one the server last showed, it is not blocked, and the server's
// latest list, asked after it last said its tools changed, holds it.
func (g *Gateway) toolUsable(ctx context.Context, rt *route, name string) (bool, string) {
	g.pins.mu.Lock()
	defer g.pins.mu.Unlock()
	known, err := g.pins.server(ctx, rt.Name)
	if err != nil {
		return false, "the gateway cannot read its tool pins now: try again later"
	}
	view := g.pins.view(rt.Name)
	switch pin := known[name]; {
	case pin == nil:
		return false, "the gateway has not seen the definition of tool " + name + ": list the tools first (tools/list)"
	case pin.Status == mandate.ToolChanged:
		return false, "the definition of tool " + name + " changed since it was pinned: an operator must approve it (mandate tools diff " + rt.Name + " " + name + ")"
	case pin.Status == mandate.ToolFlagged:
		return false, "the scan flagged the definition of tool " + name + " (" + strings.Join(pin.Findings, "; ") + "): an operator must approve it"
	case !view.fresh():
		return false, "the MCP server's tools changed (or the gateway restarted) and the gateway could not list them again: try again later"
	case !view.listed[name]:
		return false, "the MCP server no longer lists tool " + name + ": list the tools again (tools/list)"
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
