// Package gateway is Mandate's policy enforcement point for MCP servers:
// an HTTP handler that MCP clients reach with the Streamable HTTP
// transport at /mcp/{server}, and that forwards what their mandate and
// policy allow to the server's upstream.
//
// For every request it verifies the mandate (Bearer or DPoP, audience
// mcp:<server>, RFC 9449 and the MCP authorization spec, with RFC 9728
// protected resource metadata and a WWW-Authenticate challenge on 401),
// binds the MCP session to the mandate's task and agent, and decides
// each JSON-RPC message: tools/call needs a scope covering
// mcp:<server>:<tool> and a permit of policy with the call's arguments in
// context, tools/list is answered with the tools the mandate may call,
// resources/read and prompts/get need scopes covering
// mcp:<server>:resource:<uri> and mcp:<server>:prompt:<name> and a
// permit of policy, their lists show only what the scopes reach, and an
// unknown method is denied. A denial is a JSON-RPC error the client can show. Every call
// and every denial is in the audit log, and an allowed call is recorded
// before it is forwarded (write-ahead): no audit, no call.
//
// It is not an MCP server or client of its own: it passes messages
// through, and reads only what it must decide on (the request, and the
// responses to tools/list and tools/call).
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/internal/bucket"
	"github.com/mandatehq/mandate/internal/clock"
	"github.com/mandatehq/mandate/internal/noredirect"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/replay"
	"github.com/mandatehq/mandate/verify"
)

// Route is one MCP server behind the gateway.
type Route struct {
	// Name is the server's name, as scopes and audiences name it
	// (mcp:<Name>:<tool>, aud mcp:<Name>): a scope name without '*'.
	Name string
	// URL is the upstream's Streamable HTTP endpoint.
	URL string
	// ToolLabels are the labels policy sees on each tool
	// (resource.labels), by tool name: the gateway's own word about the
	// tools, not the server's.
	ToolLabels map[string][]string
	// Internal, by tool name, says when a call of a tool labelled
	// external_send is an internal send instead (InternalRule): where
	// the tool can reach both, internal mail is not exfiltration.
	Internal map[string]InternalRule
}

// Decider is the policy decision point: *policy.Engine.
type Decider interface {
	Decide(ctx context.Context, r policy.Request) policy.Decision
}

// Config configures a Gateway. Zero values mean defaults.
type Config struct {
	Routes []Route
	// HTTPRoutes are plain HTTP APIs, enforced the same way.
	HTTPRoutes []HTTPRoute
	// StdioRoutes are MCP servers the gateway runs as child processes,
	// served at /mcp/{name} like the others. Close stops them.
	StdioRoutes []StdioRoute
	// Issuer is the iss of the mandates, and the authorization server
	// named in the protected resource metadata.
	Issuer string
	// Keys finds the issuer's public keys.
	Keys verify.KeySource
	// PublicURL is the gateway's base URL as clients address it, e.g.
	// https://mandate.example: DPoP proofs must name PublicURL/mcp/<server>.
	PublicURL string
	// Revoked, if set, is asked for every mandate (see verify.Config),
	// again at the moment of effect, once a call is on record and just
	// before it is sent, and by Settle: it must answer from memory, and a
	// change it reports must be in force before any later event is
	// durable (mandate.RevocationStore.Revoke).
	Revoked func(ctx context.Context, c *mandate.Claims) error
	// Agents, if set, gives policy the labels and owners of the chain's
	// registered agents.
	Agents mandate.AgentGetter
	// Policy decides every message that needs a decision. Required.
	Policy Decider
	// Events records calls and denials, write-ahead. Required.
	Events mandate.EventLog
	// Risk, if set, is the risk score (0-100, from the monitor) of a task
	// and of the agent calling in it, which policy sees as context.risk.
	Risk func(task, agent string) int
	// Counters, if set, adds to a task's context.history what the gateway
	// does not see itself (the monitor's count of delegations, spawns).
	Counters func(task string) map[string]int64
	// Hold, if set, says why the monitor asks that every remaining tool
	// call of a task wait for a person's approval ("" if it does not):
	// such a call is held as if policy had asked, whatever policy says.
	Hold func(task string) string
	// Tools keeps the tool definitions pinned at first sight. Required: a
	// tool whose definition changed, or was never seen, is not called.
	Tools mandate.ToolPinStore
	// Approvals keeps the approvals that tool calls wait for, when policy
	// asks a person (@approval("required")); it must also be an
	// ApprovalUser. Without it such calls are denied.
	Approvals mandate.ApprovalStore
	// ApprovalHold is how long a call is held waiting for the decision
	// (DefaultApprovalHold); past it the client is told to call again.
	// ApprovalTimeout is how long a person has (DefaultApprovalTimeout).
	ApprovalHold, ApprovalTimeout time.Duration
	// ApprovalLimits bound the calls waiting for approval per agent and
	// per task (zero fields: mandate.DefaultMaxPendingPerAgent and
	// DefaultMaxPendingPerTask); a call past them is denied, and audited.
	ApprovalLimits mandate.ApprovalLimits
	// Issuances, if set, names the task's purpose to the person asked to
	// approve a held call.
	Issuances mandate.IssuanceGetter
	// ScanMode says what a suspicious tool definition does: ScanBlock
	// (the default) blocks the tool until an operator approves it;
	// ScanFlag only records the findings.
	ScanMode string
	// Client reaches the upstreams; if nil, one made for them. Whatever
	// it is, UpstreamTimeout and CallTimeout bound its answers, and the
	// gateway uses a copy that follows no
	// redirect and keeps no cookies: an upstream's redirect would aim the
	// agent's request, body and all, at another address (an internal
	// service) and relay its answer as the upstream's, and a cookie one
	// agent's call got would go with another agent's.
	Client *http.Client
	// SettleTimeout bounds how long Settle waits for the requests of
	// mandates no longer valid that are still being sent
	// (DefaultSettleTimeout); past it they are cut off.
	SettleTimeout time.Duration
	// UpstreamTimeout bounds every silence of an upstream while the
	// gateway waits for an answer (DefaultUpstreamTimeout): before its
	// headers, and between any two reads of its body once they came (an
	// SSE event, a keep-alive comment, a chunk). CallTimeout bounds the
	// whole answer to one request, from when it is sent, however steadily
	// the upstream keeps sending (DefaultCallTimeout): a tools/call whose
	// stream carries progress notifications may last until then. The GET
	// stream of an MCP session answers no request and is bound by neither.
	// Past either, the client gets an error (docs/gateway.md, "When the
	// upstream fails"), whatever Client is.
	UpstreamTimeout, CallTimeout time.Duration
	// MaxBody bounds a client's POST body (DefaultMaxBody).
	MaxBody int64
	// MaxResponse bounds an upstream response the gateway reads whole, a
	// tools/list or tools/call answer (DefaultMaxResponse).
	MaxResponse int64
	// MaxSessions bounds the sessions remembered (DefaultMaxSessions);
	// past it the least recently used idle one is forgotten (its client
	// must initialize again), and a new one is refused (429) while every
	// one has a request in flight.
	MaxSessions int
	// SessionIdle forgets a session that had no request in flight (no
	// POST being answered, no GET stream open) for this long
	// (DefaultSessionIdle), and ends it upstream: its client, if it comes
	// back, is told 404 and initializes again (MCP Streamable HTTP).
	SessionIdle time.Duration
	// ReplaySince is when the gateway's replay set of DPoP proofs starts
	// (verify.Config.ReplaySince): proofs issued before it are refused, as
	// a previous process may have accepted them. Zero: the millisecond New
	// is called in.
	ReplaySince time.Time
	// MaxTasks bounds the tasks whose state (what policy sees as
	// context.labels and context.history) the gateway holds
	// (DefaultMaxTasks), MaxTasksPerAgent those started by one registered
	// agent (DefaultMaxTasksPerAgent). A live task's state is never
	// dropped: past either bound, the requests of new tasks are refused.
	MaxTasks, MaxTasksPerAgent int
	// TaskEnd, if set, says when the task of a delegated mandate ends: its
	// root mandate's expiry, which no mandate of the task outlives. The
	// task's state is kept until then. Without it, a task is taken to end
	// TaskLife (DefaultTaskLife, the issuer's longest mandate) after it
	// was named, or when c expires if later: an issuer that names a task
	// long before its root is issued (a root mint waiting for approval)
	// needs TaskEnd.
	TaskEnd  func(ctx context.Context, c *mandate.Claims) (time.Time, error)
	TaskLife time.Duration
	Now      func() time.Time
	Logger   *slog.Logger
}

// Defaults for Config.
const (
	DefaultMaxResponse = 8 << 20
	DefaultMaxSessions = 100_000
	// DefaultSessionIdle: a client pausing between calls keeps its
	// session, one connected with its GET stream keeps it however long it
	// idles, and one that left without DELETE frees its place and its
	// upstream session within minutes.
	DefaultSessionIdle = 10 * time.Minute
	// DefaultUpstreamTimeout: an MCP server answering a call with JSON
	// sends its headers once the tool is done, so it is also the longest
	// tool call such a server can make; one answering with SSE keeps it
	// by progress notifications (or SSE comments) at least this often.
	DefaultUpstreamTimeout = 30 * time.Second
	// DefaultCallTimeout: longer than the 60 s that MCP clients wait for
	// an answer by default, for the long tool calls that report progress.
	DefaultCallTimeout   = 10 * time.Minute
	DefaultSettleTimeout = 5 * time.Second
)

// Gateway is the MCP policy enforcement point. It is safe for concurrent use.
type Gateway struct {
	cfg           Config
	routes        map[string]*route // MCP servers
	httpRoutes    map[string]*route // HTTP APIs
	sessions      *sessions
	resultWriters chan struct{} // one token per tool.result being written
	writing       sync.WaitGroup
	pins          pins
	bridges       []*stdioBridge
	approvalUser  ApprovalUser
	tasks         *taskStates
	// sweepNow is the clock by which the task state forgets the tasks that
	// ended: Now, never ahead of the time elapsed since New
	// (internal/clock). A wall clock jumping forward would otherwise drop
	// the labels of live tasks, and a flow rule (no send after reading
	// customer data) would pass once the clock is set right.
	sweepNow func() time.Time
	refusals *bucket.Bucket // of audit events for refused genuine mandates
	// requestRefusals: of audit events for the requests of verified
	// mandates refused before any decision (refuseRequest, admitTask).
	requestRefusals *bucket.Bucket
	refused         *replay.Cache // which mandates' refusals were recorded in the last minute
	// unavailable bounds the log lines of writes the store refused
	// (logError): a bucket per message, of which there are a few.
	unavailable sync.Map
	enders      chan struct{} // one token per forgotten session being ended upstream
	ending      sync.WaitGroup
	flights     flights     // requests in flight to the upstreams, for Settle
	settling    func(n int) // tests: Settle waits for n requests
}

type route struct {
	Route
	kind     string   // "mcp" or "http", as in scopes and audiences
	labels   []string // an HTTP route's labels (HTTPRoute.Labels)
	upstream *url.URL
	verifier *verify.Verifier
	auth     string // the Authorization the upstream takes (a stdio bridge's secret)
	// encodedSlashes is HTTPRoute.AllowEncodedSlashes.
	encodedSlashes bool
}

// HTTPRoute is one plain HTTP API behind the gateway, reached at
// /http/{Name}/… with scopes http:<Name>:<METHOD>:<path>.
type HTTPRoute struct {
	Name string
	URL  string // the upstream's base URL; /http/{Name}/p reaches URL/p
	// AllowEncodedSlashes lets a path segment hold an encoded slash (%2F,
	// forwarded as it is), for an API that takes it as data, such as
	// GitLab's project ids (group%2Fproject). Off by default: most
	// upstreams decode it into a separator, and /public/..%2Fadmin would
	// then leave the scope's /public/**. Dot segments stay refused inside
	// such a segment too.
	AllowEncodedSlashes bool
	// Labels are the labels policy sees on every request of the route
	// (resource.labels), and the monitor reads, as a tool's: the
	// gateway's own word about the API. Empty means DefaultHTTPLabel
	// alone.
	Labels []string
}

// DefaultHTTPLabel is the label of an HTTP route whose configuration
// gives none: an external sink. The gateway cannot tell where an HTTP API
// sends what it is sent, so whatever an agent writes to one (body, path,
// query, headers) is taken to leave the organisation, unless the operator
// says otherwise (docs/gateway.md, "Plain HTTP APIs").
const DefaultHTTPLabel = labelExternalSend

// New returns a Gateway for cfg.
func New(cfg Config) (*Gateway, error) {
	switch {
	case cfg.Issuer == "" || cfg.Keys == nil || cfg.PublicURL == "":
		return nil, errors.New("gateway: Config.Issuer, Keys and PublicURL are required")
	case cfg.Policy == nil || cfg.Events == nil || cfg.Tools == nil:
		return nil, errors.New("gateway: Config.Policy, Events and Tools are required: every call is decided and audited, every tool pinned")
	}
	switch cfg.ScanMode {
	case "":
		cfg.ScanMode = ScanBlock
	case ScanBlock, ScanFlag:
	default:
		return nil, fmt.Errorf("gateway: ScanMode %q: use %q or %q", cfg.ScanMode, ScanBlock, ScanFlag)
	}
	cfg.PublicURL = strings.TrimSuffix(cfg.PublicURL, "/")
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.MaxResponse <= 0 {
		cfg.MaxResponse = DefaultMaxResponse
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = DefaultSessionIdle
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ApprovalHold <= 0 {
		cfg.ApprovalHold = DefaultApprovalHold
	}
	if cfg.ApprovalTimeout <= 0 {
		cfg.ApprovalTimeout = DefaultApprovalTimeout
	}
	lim, err := cfg.ApprovalLimits.WithDefaults()
	if err != nil {
		return nil, fmt.Errorf("gateway: %s", mandate.ErrorMessage(err))
	}
	cfg.ApprovalLimits = lim
	if cfg.UpstreamTimeout <= 0 {
		cfg.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.MaxTasks <= 0 {
		cfg.MaxTasks = DefaultMaxTasks
	}
	if cfg.MaxTasksPerAgent <= 0 {
		cfg.MaxTasksPerAgent = DefaultMaxTasksPerAgent
	}
	if cfg.TaskLife <= 0 {
		cfg.TaskLife = DefaultTaskLife
	}
	if cfg.SettleTimeout <= 0 {
		cfg.SettleTimeout = DefaultSettleTimeout
	}
	if cfg.Client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Keep a connection per call in flight: the default of 2 idle
		// connections per host would open a new one for most calls.
		t.MaxIdleConnsPerHost = 256
		cfg.Client = &http.Client{Transport: t}
	}
	cfg.Client = noredirect.Client(cfg.Client)
	cfg.Client.Jar = nil
	cfg.Client.Transport = &answerBounds{base: cfg.Client.Transport, silence: cfg.UpstreamTimeout, whole: cfg.CallTimeout}
	g := &Gateway{cfg: cfg, routes: map[string]*route{}, httpRoutes: map[string]*route{},
		resultWriters: make(chan struct{}, maxResultWriters), pins: pins{store: cfg.Tools}, tasks: newTaskStates(cfg.MaxTasks, cfg.MaxTasksPerAgent), sweepNow: clock.NotAhead(cfg.Now, nil),
		refusals: bucket.New(refusalRate, refusalRate), requestRefusals: bucket.New(refusalRate, refusalRate), refused: replay.New(refusedMax), enders: make(chan struct{}, maxEnders)}
	g.sessions = newSessions(cfg.MaxSessions, cfg.SessionIdle, g.endUpstream)
	if u, ok := cfg.Approvals.(ApprovalUser); ok {
		g.approvalUser = u
	}
	// One replay set for every route: a proof is used once at the gateway.
	proofs := replay.New(0)
	add := func(into map[string]*route, kind string, r Route) error {
		probe := kind + ":" + r.Name + ":x"
		if kind == "http" {
			probe = kind + ":" + r.Name + ":GET:/"
		}
		if sc, err := mandate.ParseScope(probe); err != nil || !sc.IsConcrete() {
			return fmt.Errorf("gateway: %s name %q: use letters, digits, '_', '.' and '-'", kind, r.Name)
		}
		if into[r.Name] != nil {
			return fmt.Errorf("gateway: %s upstream %q is configured twice", kind, r.Name)
		}
		for tool, rule := range r.Internal {
			if err := rule.Validate(tool, r.ToolLabels[tool]); err != nil {
				return fmt.Errorf("gateway: %s upstream %q: %w", kind, r.Name, err)
			}
		}
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("gateway: %s upstream %q: %q is not an absolute http(s) URL", kind, r.Name, r.URL)
		}
		v, err := verify.New(verify.Config{Issuer: cfg.Issuer, Keys: cfg.Keys, Audience: kind + ":" + r.Name,
			DPoPReplay: proofs, ReplaySince: cfg.ReplaySince, Revoked: cfg.Revoked, Now: cfg.Now, CacheSize: verifiedCacheSize})
		if err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
		into[r.Name] = &route{Route: r, kind: kind, upstream: u, verifier: v}
		return nil
	}
	for _, r := range cfg.Routes {
		if err := add(g.routes, "mcp", r); err != nil {
			return nil, err
		}
	}
	for _, r := range cfg.HTTPRoutes {
		if err := add(g.httpRoutes, "http", Route{Name: r.Name, URL: r.URL}); err != nil {
			return nil, err
		}
		g.httpRoutes[r.Name].encodedSlashes = r.AllowEncodedSlashes
		g.httpRoutes[r.Name].labels = slices.Clone(r.Labels)
		if len(r.Labels) == 0 {
			g.httpRoutes[r.Name].labels = []string{DefaultHTTPLabel}
		}
	}
	for _, r := range cfg.StdioRoutes {
		if g.routes[r.Name] != nil {
			g.Close()
			return nil, fmt.Errorf("gateway: mcp upstream %q is configured twice", r.Name)
		}
		name := r.Name
		b, err := startStdio(r, int(cfg.MaxResponse), cfg.CallTimeout, cfg.Logger, g.flights.admit, func() { g.toolsChanged(name) })
		if err != nil {
			g.Close()
			return nil, err
		}
		g.bridges = append(g.bridges, b)
		if err := add(g.routes, "mcp", Route{Name: r.Name, URL: b.url, ToolLabels: r.ToolLabels, Internal: r.Internal}); err != nil {
			g.Close()
			return nil, err
		}
		g.routes[r.Name].auth = "Bearer " + b.secret
	}
	return g, nil
}

// verifiedCacheSize bounds the mandates each route remembers as verified
// (verify.Config.CacheSize): a session presents the same mandate for many
// calls; its times, proof and revocation are still checked on each.
const verifiedCacheSize = 10_000

// Path prefixes the gateway serves; mount the gateway on all four.
const (
	PathPrefix         = "/mcp/"
	MetadataPrefix     = "/.well-known/oauth-protected-resource/mcp/"
	HTTPPathPrefix     = "/http/"
	HTTPMetadataPrefix = "/.well-known/oauth-protected-resource/http/"
)

// ServeHTTP serves /mcp/{server}, /http/{upstream}/… and their protected
// resource metadata.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if name, ok := strings.CutPrefix(r.URL.Path, MetadataPrefix); ok {
		g.metadata(w, r, g.routes[name])
		return
	}
	if name, ok := strings.CutPrefix(r.URL.Path, HTTPMetadataPrefix); ok {
		g.metadata(w, r, g.httpRoutes[name])
		return
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, HTTPPathPrefix); ok {
		name, _, _ := strings.Cut(rest, "/")
		g.serveHTTPRoute(w, r, g.httpRoutes[name])
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, PathPrefix)
	rt := g.routes[name]
	if !ok || rt == nil {
		textError(w, "no MCP server of that name behind this gateway", http.StatusNotFound)
		return
	}
	c, ok := g.authenticate(w, r, rt, g.resourceURL(rt))
	if !ok {
		return
	}
	id, ok := g.session(w, r, rt, c)
	if !ok {
		return
	}
	if id != "" {
		// Live while this request is in flight: a session is not
		// forgotten under an open stream.
		defer func() { g.sessions.done(id, g.cfg.Now()) }()
	}
	switch r.Method {
	case http.MethodPost:
		g.post(w, r, rt, c)
	case http.MethodGet, http.MethodDelete:
		// The stream of server messages, and the end of a session: passed
		// through for the session's own task and agent only.
		resp, end, err := g.forward(r, rt, c, nil)
		if err != nil {
			g.forwardError(w, rt, err)
			return
		}
		defer end()
		defer resp.Body.Close()
		if r.Method == http.MethodDelete {
			if resp.StatusCode < 300 {
				g.sessions.forget(r.Header.Get(sessionHeader))
			}
			// The status only: the body is the upstream's, unchecked.
			w.WriteHeader(resp.StatusCode)
			return
		}
		// The server's own stream carries its requests and notifications;
		// a response there (a resumed stream, or a server that answers out
		// of band) would escape the filters of the POST it answers, so it
		// is not relayed.
		g.answer(w, resp, &relay{rt: rt})
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		textError(w, "use POST, GET or DELETE (MCP Streamable HTTP)", http.StatusMethodNotAllowed)
	}
}

// endStale ends a session whose client closes it with a mandate that has
// expired or been revoked since (mandates live for minutes, sessions
// longer): ending a session only takes away, so a genuine mandate of the
// session's own task and agent suffices, where every other request needs
// a valid one. Without it the session would count against its agent's
// quota until it idled out, and a stdio server's process would live on.
// err is why the mandate was refused. It reports whether it answered.
func (g *Gateway) endStale(w http.ResponseWriter, r *http.Request, rt *route, err error) bool {
	id := r.Header.Get(sessionHeader)
	var ve *verify.Error
	if rt.kind != "mcp" || id == "" || !errors.As(err, &ve) || ve.Claims == nil || (ve.Check != "exp" && ve.Check != "revocation") ||
		!ve.Claims.Audience.Contains(rt.kind+":"+rt.Name) {
		return false
	}
	b, ok := g.sessions.get(id, g.cfg.Now())
	if !ok || b.route != rt.Name || b.task != ve.Claims.Task || b.agent != ve.Claims.ClientID {
		return false
	}
	g.sessions.forget(id)
	// On behalf of no valid mandate: it only ends the session, which is
	// why it is not checked again, nor waited for by Settle.
	if resp, end, err := g.forward(r, rt, nil, nil); err == nil {
		resp.Body.Close()
		end()
	}
	w.WriteHeader(http.StatusNoContent)
	return true
}

// Close waits for the forgotten sessions being ended upstream, and stops
// the stdio servers the gateway runs. Call it after the HTTP server has
// shut down.
func (g *Gateway) Close() {
	g.ending.Wait()
	for _, b := range g.bridges {
		b.close()
	}
}

// resourceURL is the resource identifier of a route (RFC 9728 §1.2).
func (g *Gateway) resourceURL(rt *route) string {
	return g.cfg.PublicURL + "/" + rt.kind + "/" + rt.Name
}

// metadataURL is where a route's metadata is (RFC 9728 §3.1: the
// well-known path inserted before the resource's path).
func (g *Gateway) metadataURL(rt *route) string {
	return g.cfg.PublicURL + "/.well-known/oauth-protected-resource/" + rt.kind + "/" + rt.Name
}

// metadata serves the RFC 9728 protected resource metadata of a route.
func (g *Gateway) metadata(w http.ResponseWriter, r *http.Request, rt *route) {
	if rt == nil {
		textError(w, "no upstream of that name behind this gateway", http.StatusNotFound)
		return
	}
	name := rt.Name
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		textError(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "max-age=300")
	json.NewEncoder(w).Encode(map[string]any{
		"resource":                          g.resourceURL(rt),
		"authorization_servers":             []string{g.cfg.Issuer},
		"bearer_methods_supported":          []string{"header"},
		"dpop_signing_alg_values_supported": []string{"EdDSA"},
		"resource_name":                     strings.ToUpper(rt.kind) + " upstream " + name + " through Mandate",
		"scopes_supported":                  map[string][]string{"mcp": {"mcp:" + name + ":*", "mcp:" + name + ":prompt:*", "mcp:" + name + ":resource:**"}, "http": {"http:" + name + ":*:/**"}}[rt.kind],
	})
}

// authenticate verifies the request's mandate for rt. On failure it
// answers 401 with a challenge naming the resource metadata (RFC 9728 §5.1,
// RFC 6750 §3, RFC 9449 §7.1).
func (g *Gateway) authenticate(w http.ResponseWriter, r *http.Request, rt *route, htu string) (*mandate.Claims, bool) {
	c, err := rt.verifier.VerifyRequest(r.Context(), r, htu)
	if err == nil {
		return c, true
	}
	if r.Method == http.MethodDelete && g.endStale(w, r, rt, err) {
		return nil, false
	}
	g.auditRefusal(r.Context(), rt, err)
	// What the presenter is told: a verify.Error's text, which leaves its
	// cause out (the log has it).
	why := "the mandate cannot be checked now"
	if ve := (*verify.Error)(nil); errors.As(err, &ve) {
		why = ve.Error()
	}
	desc := strings.NewReplacer(`"`, "'", "\\", "/").Replace(why)
	code := "invalid_token"
	if r.Header.Get("Authorization") == "" {
		code = "" // RFC 6750 §3.1: no error code when no credential was sent
	}
	challenge := func(scheme string) string {
		s := scheme + ` resource_metadata="` + g.metadataURL(rt) + `"`
		if scheme == "DPoP" {
			s += `, algs="EdDSA"`
		}
		if code != "" {
			s += `, error="` + code + `", error_description="` + desc + `"`
		}
		return s
	}
	w.Header().Add("WWW-Authenticate", challenge("Bearer"))
	w.Header().Add("WWW-Authenticate", challenge("DPoP"))
	g.cfg.Logger.InfoContext(r.Context(), "gateway: mandate refused", "server", rt.Name, "err", err)
	textError(w, "mandate refused: "+why, http.StatusUnauthorized)
	return nil, false
}

// refusalRate bounds, per second, the audit events of refusals that the
// holder of a genuine mandate can cause at will: whoever holds an expired
// or stolen mandate can send it as often as they like (g.refusals), and
// so can a client that keeps sending what the gateway refuses before
// deciding, a malformed message, a session over its quota, a new task past
// its bound (g.requestRefusals). The two have a rate each, so that a
// holder flooding the second with its own requests cannot hide in it the
// refusals of the first, a stolen mandate presented without its key. Each
// mandate's (or task's) refusal for a check is recorded once in
// refusedFor, of at most refusedMax at once.
const (
	refusalRate = 100
	refusedFor  = time.Minute
	refusedMax  = 10_000
)

// logError logs a failure at ERROR, with err. A store that refuses writes
// (EUNAVAILABLE: the disk is full, say) refuses every call's record until
// it recovers, thousands a second onto the disk that filled: those lines
// are bounded to one a second per message, each saying how many were
// suppressed before it. The store logs its own state once per change.
func (g *Gateway) logError(msg string, err error, args ...any) {
	if mandate.ErrorCode(err) == mandate.EUNAVAILABLE {
		b, _ := g.unavailable.LoadOrStore(msg, bucket.New(1, 1))
		ok, suppressed := b.(*bucket.Bucket).AllowDropped(g.cfg.Now())
		if !ok {
			return
		}
		if suppressed > 0 {
			args = append(args, "suppressed", suppressed)
		}
	}
	g.cfg.Logger.Error(msg, append(args, "err", err)...)
}

// auditOnce records ev, the refusal of the mandate (or the task) of id
// for check, unless one was recorded within refusedFor or the rate of
// rate is spent; the event says in details dropped how many of rate's were
// not recorded since the last one. It is written in the background where
// it can be: a refusal need not wait for the log (it grants nothing).
func (g *Gateway) auditOnce(ctx context.Context, rt *route, rate *bucket.Bucket, id, check string, ev func() *mandate.Event) {
	now := g.cfg.Now()
	// Once a minute per mandate and check: its holder may retry it in a
	// loop, which must not take the others' share of the rate. (Past
	// refusedMax in a minute the set refuses, ErrFull: a flood, which the
	// rate would cut anyway.)
	if g.refused.Use(id+" "+check, now.Add(refusedFor), now) != nil {
		return
	}
	ok, dropped := rate.AllowDropped(now)
	if !ok {
		return
	}
	e := ev()
	if dropped > 0 {
		e.Details["dropped"] = dropped
	}
	g.recordResults(ctx, rt, []*mandate.Event{e})
}

// auditRefusal records the refusal of a genuine mandate (its signature,
// issuer and audience verified: one that is expired, revoked, presented
// without its key, or refused by a later check), naming its task and
// agent, for the monitor: a revoked mandate still in use, an old one
// replayed, one presented by someone without its key are signs of a
// stolen credential. Forgeries and garbage are not recorded: they name
// nobody, and anyone can send them.
func (g *Gateway) auditRefusal(ctx context.Context, rt *route, err error) {
	var ve *verify.Error
	if !errors.As(err, &ve) || ve.Claims == nil {
		return
	}
	now := g.cfg.Now()
	c := ve.Claims
	check := ve.Check
	if errors.Is(err, verify.ErrExpired) && now.Sub(c.Expiry.Time) >= 5*time.Second {
		check += "-late" // a replay well after expiry is not hidden by a late use
	}
	g.auditOnce(ctx, rt, g.refusals, c.ID, check, func() *mandate.Event {
		details := map[string]any{"refused": ve.Check}
		if errors.Is(err, verify.ErrExpired) {
			details["expired_ms"] = now.Sub(c.Expiry.Time).Milliseconds()
		}
		// ve.Error() is what the presenter was told, without the cause.
		return g.event(mandate.EventDecision, c, "authenticate", rt.kind+":"+rt.Name, mandate.OutcomeDeny, ve.Error(), details)
	})
}

// refuseRequest records the refusal of a request whose mandate was
// verified, before anything was decided on it (a malformed message, a
// body over the limit, a session over its agent's quota or of another
// task): a decision event naming the mandate's task and agent, with
// details check (what refused it, as docs/events.md lists them) and
// http_status. The caller answers the request.
func (g *Gateway) refuseRequest(ctx context.Context, rt *route, c *mandate.Claims, action, check string, status int, reason string) {
	g.auditOnce(ctx, rt, g.requestRefusals, c.ID, check, func() *mandate.Event {
		return g.event(mandate.EventDecision, c, action, rt.kind+":"+rt.Name, mandate.OutcomeDeny, reason,
			map[string]any{"check": check, "http_status": status})
	})
}

const sessionHeader = "Mcp-Session-Id"

// session checks that a request in an MCP session comes from the task
// and agent the session was opened for: another mandate cannot ride it.
// It returns the session's id, whose request the caller must end with
// sessions.done, or "" for a request outside a session.
func (g *Gateway) session(w http.ResponseWriter, r *http.Request, rt *route, c *mandate.Claims) (string, bool) {
	ids := r.Header.Values(sessionHeader)
	if len(ids) > 1 {
		g.refuseRequest(r.Context(), rt, c, r.Method, "session-header", http.StatusBadRequest, "more than one Mcp-Session-Id")
		textError(w, "more than one Mcp-Session-Id", http.StatusBadRequest)
		return "", false
	}
	id := r.Header.Get(sessionHeader)
	if id == "" {
		if len(ids) == 1 {
			g.refuseRequest(r.Context(), rt, c, r.Method, "session-header", http.StatusBadRequest, "an empty Mcp-Session-Id")
			textError(w, "an empty Mcp-Session-Id", http.StatusBadRequest)
			return "", false
		}
		return "", true
	}
	b, ok := g.sessions.acquire(id, g.cfg.Now())
	switch {
	case !ok:
		// Forgotten (idle, or ended), or never opened here: not a
		// refusal to audit, the answer an expired session gets. MCP
		// Streamable HTTP: 404 tells the client to initialize again.
		textError(w, "unknown MCP session: initialize a new one", http.StatusNotFound)
		return "", false
	case b.route != rt.Name || b.task != c.Task || b.agent != c.ClientID:
		g.sessions.done(id, g.cfg.Now())
		if b.route != rt.Name {
			// Another server's session is not this one's: unknown here.
			textError(w, "unknown MCP session: initialize a new one", http.StatusNotFound)
			return "", false
		}
		g.cfg.Logger.WarnContext(r.Context(), "gateway: a mandate tried another session", "agent", c.ClientID, "task", c.Task)
		g.refuseRequest(r.Context(), rt, c, r.Method, "session-owner", http.StatusForbidden,
			"a mandate of another task or agent than the session's")
		textError(w, "this MCP session belongs to another task or agent: initialize your own", http.StatusForbidden)
		return "", false
	}
	return id, true
}

// maxEnders bounds the forgotten sessions being ended upstream at once;
// past it, the upstream's own idle timeout ends them.
const maxEnders = 16

// endUpstream ends, in the background, a session the gateway forgot
// without its client's DELETE (idle, or making room): the upstream frees
// what it holds for it (a stdio server's process).
func (g *Gateway) endUpstream(b binding) {
	rt := g.routes[b.route]
	if rt == nil {
		return
	}
	select {
	case g.enders <- struct{}{}:
	default:
		return
	}
	g.ending.Add(1)
	go func() {
		defer func() { <-g.enders; g.ending.Done() }()
		ctx, cancel := context.WithTimeout(context.Background(), g.cfg.UpstreamTimeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodDelete, rt.upstream.String(), nil)
		if err != nil {
			return
		}
		req.Header.Set(sessionHeader, b.id)
		if rt.auth != "" {
			req.Header.Set("Authorization", rt.auth)
		}
		resp, err := g.cfg.Client.Do(req)
		if err != nil {
			g.cfg.Logger.Debug("gateway: an idle session not ended upstream", "server", rt.Name, "err", err)
			return
		}
		resp.Body.Close()
	}()
}

// forward sends r (with body, if not nil) to rt's upstream on behalf of
// c. The mandate is not forwarded: the upstream is not its audience. The
// request is in flight for Settle, and c is checked once more before it
// goes (begin): a *notValidError if c is no longer valid. Call end once
// the response is read. c is nil only for a request that takes away
// (endStale's DELETE of a session).
func (g *Gateway) forward(r *http.Request, rt *route, c *mandate.Claims, body []byte) (resp *http.Response, end func(), err error) {
	ctx, end := r.Context(), func() {}
	var f *flight
	if c != nil {
		if ctx, f, err = g.begin(ctx, rt, c); err != nil {
			return nil, nil, err
		}
		end = f.finish
	}
	if r.Method == http.MethodGet {
		ctx = asStream(ctx) // the session's stream: silent as long as it likes
	}
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, rt.upstream.String(), rd)
	if err != nil {
		end()
		return nil, nil, err
	}
	// Last-Event-Id is not forwarded: a resumed stream would replay
	// answers the gateway filtered once, unfiltered.
	for _, h := range []string{"Content-Type", "Accept", sessionHeader, "Mcp-Protocol-Version"} {
		if v := r.Header.Values(h); len(v) > 0 {
			req.Header[h] = v
		}
	}
	if rt.auth != "" {
		req.Header.Set("Authorization", rt.auth)
		if f != nil {
			req.Header.Set(flightHeader, strconv.FormatUint(f.id, 10))
		}
	}
	resp, err = g.cfg.Client.Do(req)
	if f != nil {
		// Answered or failed: the request is no longer being sent.
		f.leave(false)
	}
	if err != nil {
		if c := context.Cause(ctx); errors.Is(c, errStopped) {
			err = c
		}
		end()
		return nil, nil, &sendError{err: err, sent: f != nil && f.wrote.Load()}
	}
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		// Not followed (Config.Client), and not an MCP answer: a redirect
		// relayed would send the client where the server says.
		resp.Body.Close()
		end()
		return nil, nil, &redirectError{status: resp.StatusCode, location: resp.Header.Get("Location")}
	}
	return resp, end, nil
}

// forwardError answers a request that forward did not deliver: refused
// (its mandate no longer valid), cut off by a revocation, or the upstream
// unreachable.
func (g *Gateway) forwardError(w http.ResponseWriter, rt *route, err error) {
	var nv *notValidError
	switch {
	case errors.As(err, &nv):
		textError(w, "not forwarded: "+nv.Error(), http.StatusForbidden)
	case errors.Is(err, errStopped):
		textError(w, "not forwarded whole: "+errStopped.Error(), http.StatusForbidden)
	default:
		g.upstreamError(w, rt, err)
	}
}

// redirectError is an upstream's answer that is a redirect (3xx).
type redirectError struct {
	status   int
	location string
}

func (e *redirectError) Error() string {
	return fmt.Sprintf("the upstream redirected (HTTP %d) to %q, which the gateway does not follow", e.status, e.location)
}

// upstreamError answers a request whose upstream did not answer (down,
// silent, the connection closed), or answered with a redirect, with an
// HTTP error: 504 for an upstream that took longer than a bound, 502
// otherwise. It returns the status and the reason it gave.
func (g *Gateway) upstreamError(w http.ResponseWriter, rt *route, err error) (int, string) {
	what := upstreamName(rt)
	var re *redirectError
	if errors.As(err, &re) {
		g.cfg.Logger.Warn("gateway: the upstream redirected: not followed", "server", rt.Name, "status", re.status, "location", re.location)
		why := what + " answered with a redirect (HTTP " + itoa(int64(re.status)) + "), which the gateway does not follow or relay"
		textError(w, why, http.StatusBadGateway)
		return http.StatusBadGateway, why
	}
	g.cfg.Logger.Warn("gateway: the upstream did not answer", "server", rt.Name, "err", err)
	_, why := noAnswer(rt, err)
	status := http.StatusBadGateway
	if se := (*stallError)(nil); errors.As(err, &se) {
		status = http.StatusGatewayTimeout
	}
	textError(w, why, status)
	return status, why
}

// answerWriteMargin is the time left to write an answer the upstream gave
// at the end of the gateway's bounds, and the longest one write of an
// answer (a JSON answer, an event of a stream, a piece of an HTTP
// route's body) may take.
const answerWriteMargin = 30 * time.Second

// boundWrite sets the write deadline of a request's answer from the
// gateway's own bounds (a hold for approval, then CallTimeout), in place
// of the server's WriteTimeout: a server set for its other endpoints
// (`mandate serve`'s is 90 s) would cut a JSON answer its tool took
// longer to give, which CallTimeout allows, with no JSON-RPC error. A
// writer without deadlines (ErrNotSupported) has no such timeout to lift.
//
// Those bounds are the upstream's, not the client's: the answer it
// returns, which the handler writes to, gives each write answerWriteMargin
// at most, so that a client that stops reading (or reads a byte at a time)
// holds its connection, the answer in memory and an HTTP route's upstream
// that long past the last write it took, not for the rest of CallTimeout,
// nor, on a stream, for ever.
func (g *Gateway) boundWrite(w http.ResponseWriter) http.ResponseWriter {
	a := &answerWriter{ResponseWriter: w, rc: http.NewResponseController(w), whole: time.Now().Add(g.cfg.ApprovalHold + g.cfg.CallTimeout + answerWriteMargin)}
	a.rc.SetWriteDeadline(a.whole)
	return a
}

// answerWriter bounds each write and flush of an answer by
// answerWriteMargin, within the deadline of the whole answer (none for a
// stream: streaming). Each write is flushed under its bound, so that none
// of it waits for a flush outside one. Between writes, while the upstream
// is awaited, the whole answer's deadline is in force again (HTTP/2 resets
// a stream whose deadline passes even with no write pending).
type answerWriter struct {
	http.ResponseWriter
	rc    *http.ResponseController
	whole time.Time // zero: none
}

func (a *answerWriter) Write(p []byte) (int, error) {
	a.within()
	defer a.rc.SetWriteDeadline(a.whole)
	n, err := a.ResponseWriter.Write(p)
	if err == nil {
		if ferr := a.rc.Flush(); ferr != nil && !errors.Is(ferr, http.ErrNotSupported) {
			err = ferr
		}
	}
	return n, err
}

func (a *answerWriter) Flush() {
	a.within()
	a.rc.Flush()
	a.rc.SetWriteDeadline(a.whole)
}

// SetWriteDeadline sets the deadline of the whole answer.
func (a *answerWriter) SetWriteDeadline(t time.Time) error {
	a.whole = t
	return a.rc.SetWriteDeadline(t)
}

func (a *answerWriter) Unwrap() http.ResponseWriter { return a.ResponseWriter }

// within sets the deadline of one write: answerWriteMargin from now, or
// the whole answer's if that is sooner.
func (a *answerWriter) within() {
	d := time.Now().Add(answerWriteMargin)
	if !a.whole.IsZero() && a.whole.Before(d) {
		d = a.whole
	}
	a.rc.SetWriteDeadline(d)
}

// streaming lifts the server's write timeout for an SSE stream, which
// lasts as long as the upstream keeps it open.
func streaming(w http.ResponseWriter, resp *http.Response) {
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt == "text/event-stream" {
		http.NewResponseController(w).SetWriteDeadline(time.Time{})
	}
}
