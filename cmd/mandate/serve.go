package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditlog"
	"github.com/mandatehq/mandate/gateway"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/internal/atomicfile"
	"github.com/mandatehq/mandate/internal/clock"
	"github.com/mandatehq/mandate/internal/dirlock"
	"github.com/mandatehq/mandate/internal/secret"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/monitor"
	"github.com/mandatehq/mandate/policy"
	"github.com/mandatehq/mandate/replay"
	"github.com/mandatehq/mandate/sqlite"
	"github.com/mandatehq/mandate/verify"
	"golang.org/x/mod/sumdb/tlog"
)

// Defaults of `mandate serve`.
const (
	DefaultAddr        = "127.0.0.1:7676"
	DefaultDataDir     = "./mandate-data"
	DefaultTrustDomain = "example.org"
	shutdownTimeout    = 10 * time.Second
	// policyWatchInterval is how often the policy directory is looked at
	// for changes.
	policyWatchInterval = time.Second
)

// Main is the server program: `mandate serve`. Tests start it in-process on
// 127.0.0.1:0 with a temporary data directory.
type Main struct {
	Addr        string
	DataDir     string
	TrustDomain string
	IssuerURL   string // default: http://<addr>
	Demo        bool
	// DemoPace is how often `serve --demo` plays the demo's scenario
	// (0: never).
	DemoPace time.Duration
	LogLevel slog.Level
	// CheckpointInterval is how often the audit log's checkpoint is signed
	// while entries arrive.
	CheckpointInterval time.Duration
	// PublicAudit serves the audit log's entries without the admin
	// credential.
	PublicAudit bool
	// MaxDepth is the longest delegation chain when no agent of the chain
	// sets a smaller one.
	MaxDepth int
	// ApprovalTimeout is how long a person has to decide an approval;
	// undecided, it is denied.
	ApprovalTimeout time.Duration
	// AllowUntypedClientAssertions accepts client assertions without typ
	// or with typ JWT (issuer.Config.AllowUntypedClientAssertions).
	AllowUntypedClientAssertions bool
	// ApprovalLimits bound the approvals waiting for a person per agent
	// and per task, at the issuer and the gateway.
	ApprovalLimits mandate.ApprovalLimits

	// PolicyDir holds the policy set (default <DataDir>/policies); the
	// default set is written into it if it holds no policy file.
	PolicyDir string

	// MCPUpstreams are the MCP servers the gateway serves at /mcp/{name},
	// HTTPUpstreams the plain HTTP APIs at /http/{name}/….
	MCPUpstreams  []gateway.Route
	HTTPUpstreams []gateway.HTTPRoute
	// MCPStdio are MCP servers the gateway runs itself, a process per
	// session, at /mcp/{name}.
	MCPStdio []gateway.StdioRoute
	// ScanMode is what a suspicious tool definition does (gateway.ScanBlock
	// or gateway.ScanFlag).
	ScanMode string
	// UpstreamTimeout and CallTimeout bound an upstream's silence and its
	// whole answer (gateway.Config); zero means the gateway's default.
	UpstreamTimeout, CallTimeout time.Duration
	// MonitorResponses replace detectors' default responses; RevokeAt
	// revokes a task whose risk reaches it (0: never).
	MonitorResponses map[string][]monitor.Response
	RevokeAt         int

	// ReadyFile, if set, is written with the server's URL once it serves:
	// scripts and supervisors wait for it (useful with --addr :0).
	ReadyFile string

	Stdout io.Writer
	Stderr io.Writer
	Now    func() time.Time

	// Set by Open.
	URL        string // the base URL the server answers on
	AdminToken string
	Logger     *slog.Logger
	Store      *sqlite.Store
	Keys       *issuer.Keyring
	Issuer     *issuer.Issuer
	Policy     *policy.Engine
	Gateway    *gateway.Gateway // if MCPUpstreams
	Monitor    *monitor.Monitor
	LogKey     *auditlog.LogKey
	Publisher  *auditlog.Publisher

	parents parentLinks // for the gateway's revocation check

	// replay is the issuer's replay set; restoreReplay fills it at start
	// and writeReplaySnapshot writes it down (replaysnap.go).
	replay           *replay.Cache
	replayRestored   replayRestore
	replaySnapshotAt int64 // the log size the last snapshot covered
	// stateRestored says what restoreState read of the log.
	stateRestored sqlite.RestoreStats

	// testGateway and testAPI, if set, change the gateway's and the API's
	// configuration before they are made: tests put hooks into the paths
	// whose races they play.
	testGateway func(*gateway.Config)
	testAPI     func(*httpapi.Config)
	// testWriteTimeout, if set, is the server's WriteTimeout: tests make
	// it shorter than an answer.
	testWriteTimeout time.Duration

	lock   *dirlock.Lock // of DataDir, from Open to Close
	ln     net.Listener
	srv    *http.Server
	cancel context.CancelFunc
	done   chan error
}

// NewMain returns a Main with the defaults.
func NewMain() *Main {
	m := &Main{Addr: DefaultAddr, DataDir: DefaultDataDir, TrustDomain: DefaultTrustDomain,
		MaxDepth: issuer.DefaultMaxDepth, ApprovalTimeout: issuer.DefaultApprovalTimeout,
		Stdout: os.Stdout, Stderr: os.Stderr, Now: time.Now}
	if testNewMain != nil {
		testNewMain(m)
	}
	return m
}

// testNewMain, if set, changes every Main that NewMain returns. Only the
// test binary sets it, when it runs as a child `mandate serve`
// (MANDATE_TEST_AS_MAIN), to put a fault where its test says.
var testNewMain func(*Main)

// ParseFlags reads the flags of `mandate serve`.
func (m *Main) ParseFlags(args []string) error {
	fs := flag.NewFlagSet("mandate serve", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.StringVar(&m.Addr, "addr", m.Addr, "listen address")
	fs.StringVar(&m.DataDir, "data", m.DataDir, "data directory (database, keys, admin credential)")
	fs.StringVar(&m.TrustDomain, "trust-domain", m.TrustDomain, "SPIFFE trust domain of agent IDs")
	fs.StringVar(&m.IssuerURL, "issuer", m.IssuerURL, "issuer URL (iss of mandates); default http://<addr>")
	fs.BoolVar(&m.Demo, "demo", m.Demo, "register demo agents, put a demo CRM and email server behind the gateway, play the demo's scenario in a loop, and print what to try")
	fs.DurationVar(&m.DemoPace, "demo-pace", 10*time.Second, "with --demo: how often to play the scenario (0: never)")
	fs.DurationVar(&m.CheckpointInterval, "checkpoint-interval", auditlog.DefaultCheckpointInterval, "how often to sign an audit checkpoint while entries arrive")
	fs.BoolVar(&m.PublicAudit, "public-audit", m.PublicAudit, "serve the audit log's entries (who did what) without the admin credential")
	fs.IntVar(&m.MaxDepth, "max-depth", m.MaxDepth, fmt.Sprintf("longest delegation chain, counting the root agent (1 to %d); an agent's own limit may be smaller", mandate.MaxAgentDepth))
	fs.DurationVar(&m.ApprovalTimeout, "approval-timeout", m.ApprovalTimeout, "how long a person has to decide an approval; undecided, it is denied")
	fs.BoolVar(&m.AllowUntypedClientAssertions, "allow-untyped-client-assertions", m.AllowUntypedClientAssertions,
		"accept client assertions with no typ or typ JWT, as some OAuth clients sign them, besides client-authentication+jwt (docs/tokens.md: only once no agent signs untyped actor tokens)")
	fs.IntVar(&m.ApprovalLimits.PerAgent, "max-pending-approvals-per-agent", mandate.DefaultMaxPendingPerAgent, "most requests of one agent (with its sub-agents, in any task) waiting for approval; past it a request is refused")
	fs.IntVar(&m.ApprovalLimits.PerTask, "max-pending-approvals-per-task", mandate.DefaultMaxPendingPerTask, "most requests of one task waiting for approval; past it a request is refused")
	fs.Func("upstream-timeout", fmt.Sprintf("the longest an upstream may be silent in an answer: until a JSON answer, between the events of an SSE one (default %v)", gateway.DefaultUpstreamTimeout), func(v string) error {
		return setDuration(&m.UpstreamTimeout, v)
	})
	fs.Func("call-timeout", fmt.Sprintf("the longest an upstream's whole answer may take, however it reports progress (default %v)", gateway.DefaultCallTimeout), func(v string) error {
		return setDuration(&m.CallTimeout, v)
	})
	fs.StringVar(&m.PolicyDir, "policies", m.PolicyDir, "the policy directory (*.cedar files); default <data>/policies, where the default set is written on first start")
	fs.StringVar(&m.ReadyFile, "ready-file", m.ReadyFile, "write the server's URL to this file once it serves")
	fs.Func("mcp-upstream", "an MCP server behind the gateway, NAME=URL of its Streamable HTTP endpoint: agents reach it at /mcp/NAME (repeatable)", func(v string) error {
		name, u, ok := strings.Cut(v, "=")
		if !ok || name == "" || u == "" {
			return fmt.Errorf("want NAME=URL, e.g. crm=http://127.0.0.1:9000/mcp")
		}
		m.MCPUpstreams = append(m.MCPUpstreams, gateway.Route{Name: name, URL: u})
		return nil
	})
	fs.Func("config", "a configuration file (YAML) of gateway routes and tool labels; flags add to it (docs/gateway.md)", func(v string) error {
		return m.loadConfig(v)
	})
	fs.Func("mcp-stdio", "an MCP server the gateway runs, NAME='COMMAND ARGS…' (a process per session; stdio transport): agents reach it at /mcp/NAME (repeatable)", func(v string) error {
		name, command, ok := strings.Cut(v, "=")
		args, err := splitCommand(command)
		if !ok || name == "" || err != nil || len(args) == 0 {
			return fmt.Errorf("want NAME='COMMAND ARGS…', e.g. files='npx -y @modelcontextprotocol/server-filesystem /srv/docs'")
		}
		m.MCPStdio = append(m.MCPStdio, gateway.StdioRoute{Name: name, Command: args})
		return nil
	})
	fs.Func("http-upstream", "a plain HTTP API behind the gateway, NAME=BASE-URL: agents reach BASE-URL/p at /http/NAME/p, with scopes http:NAME:METHOD:/p (repeatable)", func(v string) error {
		name, u, ok := strings.Cut(v, "=")
		if !ok || name == "" || u == "" {
			return fmt.Errorf("want NAME=URL, e.g. crm=http://127.0.0.1:9000/api")
		}
		m.HTTPUpstreams = append(m.HTTPUpstreams, gateway.HTTPRoute{Name: name, URL: u})
		return nil
	})
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintln(m.Stderr, "usage: mandate serve [--addr HOST:PORT] [--data DIR] [--policies DIR] [--trust-domain TD] [--issuer URL] [--demo [--demo-pace D]] [--max-depth N] [--approval-timeout D] [--max-pending-approvals-per-agent N] [--max-pending-approvals-per-task N] [--upstream-timeout D] [--call-timeout D] [--config FILE] [--mcp-upstream NAME=URL]... [--mcp-stdio NAME='CMD ARGS']... [--http-upstream NAME=URL]...")
		fs.PrintDefaults()
	}
	if err := parseInterleaved(fs, args, 0); err != nil {
		return err
	}
	if err := m.LogLevel.UnmarshalText([]byte(*level)); err != nil {
		return usageError{fmt.Sprintf("--log-level %q: use debug, info, warn or error", *level)}
	}
	if m.MaxDepth < 1 || m.MaxDepth > mandate.MaxAgentDepth {
		return usageError{fmt.Sprintf("--max-depth %d: use 1 to %d", m.MaxDepth, mandate.MaxAgentDepth)}
	}
	if m.ApprovalTimeout < time.Second {
		return usageError{fmt.Sprintf("--approval-timeout %v: give a person at least a second (e.g. 5m)", m.ApprovalTimeout)}
	}
	if err := checkGatewayBounds(m.UpstreamTimeout, m.CallTimeout); err != nil {
		return err
	}
	if _, err := m.ApprovalLimits.WithDefaults(); err != nil || m.ApprovalLimits.PerAgent == 0 || m.ApprovalLimits.PerTask == 0 {
		return usageError{fmt.Sprintf("--max-pending-approvals-per-agent %d, --max-pending-approvals-per-task %d: each must be 1 to %d",
			m.ApprovalLimits.PerAgent, m.ApprovalLimits.PerTask, mandate.MaxPendingLimit)}
	}
	return nil
}

// setDuration parses a flag's duration, above zero, into d.
func setDuration(d *time.Duration, v string) error {
	x, err := time.ParseDuration(v)
	if err != nil || x <= 0 {
		return fmt.Errorf("want a duration above zero, e.g. 30s or 2m")
	}
	*d = x
	return nil
}

// maxCallTimeout bounds --call-timeout: a call that may take longer holds
// a connection for as long, and the gateway's deadlines add an approval
// hold and margins to it, which, past the longest duration there is,
// overflow into the past and cut every answer at once.
const maxCallTimeout = 24 * time.Hour

// checkGatewayBounds refuses gateway bounds that would cut every call or
// contradict each other (zero is the default, as the gateway takes it). A
// silence bound above the call bound would never apply.
func checkGatewayBounds(silence, whole time.Duration) error {
	const hint = "\nhint: --upstream-timeout bounds an upstream's silence (default %v), --call-timeout its whole answer (default %v); e.g. --upstream-timeout 2m --call-timeout 30m"
	h := fmt.Sprintf(hint, gateway.DefaultUpstreamTimeout, gateway.DefaultCallTimeout)
	effective := func(d, def time.Duration) time.Duration {
		if d == 0 {
			return def
		}
		return d
	}
	switch s, w := effective(silence, gateway.DefaultUpstreamTimeout), effective(whole, gateway.DefaultCallTimeout); {
	case s < time.Second:
		return usageError{fmt.Sprintf("--upstream-timeout %v: give an upstream at least a second", silence) + h}
	case w < time.Second:
		return usageError{fmt.Sprintf("--call-timeout %v: give a call at least a second", whole) + h}
	case w > maxCallTimeout:
		return usageError{fmt.Sprintf("--call-timeout %v: at most %v", whole, maxCallTimeout) + h}
	case s > w:
		return usageError{fmt.Sprintf("--upstream-timeout %v is above --call-timeout %v: the call would be cut before the silence bound applies", s, w) + h}
	}
	return nil
}

// Open starts the server: it opens (or creates) the data directory, the
// store and the keyring, binds the listener and starts serving.
func (m *Main) Open(ctx context.Context) (err error) {
	if m.Now == nil {
		m.Now = time.Now
	}
	// A failed Open gives the directory up, even if a demo claimed it
	// before (claimDataDir).
	defer func() {
		if err != nil {
			m.lock.Release()
			m.lock = nil
		}
	}()
	// Every line is masked (internal/secret): lines quote what callers
	// sent, in every package, and the log is read by more people than
	// the callers.
	m.Logger = slog.New(secret.Handler(slog.NewTextHandler(m.Stderr, &slog.HandlerOptions{Level: m.LogLevel})))
	if err := mandate.ValidateTrustDomain(m.TrustDomain); err != nil {
		return err
	}
	if err := m.claimDataDir(); err != nil {
		return err
	}
	// A data directory with neither keys nor a database is new: no
	// process has accepted anything on it (see replaySince).
	_, keysErr := os.Stat(filepath.Join(m.DataDir, "keys", "signing.json"))
	_, dbErr := os.Stat(filepath.Join(m.DataDir, "mandate.db"))
	fresh := errors.Is(keysErr, os.ErrNotExist) && errors.Is(dbErr, os.ErrNotExist)
	if m.AdminToken, err = loadOrCreateAdminToken(filepath.Join(m.DataDir, "admin.token")); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", m.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w\nhint: another server may be running there; pick another --addr", m.Addr, err)
	}
	m.ln = ln
	m.URL = "http://" + ln.Addr().String()
	if m.IssuerURL == "" {
		m.IssuerURL = m.URL
	}
	if m.Keys, err = issuer.OpenKeyring(filepath.Join(m.DataDir, "keys", "signing.json"), issuer.MaxTTL+time.Minute, m.Now()); err != nil {
		ln.Close()
		return err
	}
	// An active key has its key.rotated event in the log (Keyring.Finish).
	hadActiveKey := m.Keys.Active() != nil
	if m.LogKey, err = auditlog.OpenLogKey(filepath.Join(m.DataDir, "keys", "log.key"), auditOrigin(m.IssuerURL)); err != nil {
		ln.Close()
		return err
	}
	m.Publisher = &auditlog.Publisher{Key: m.LogKey, HeadFile: filepath.Join(m.DataDir, "keys", "log.head"),
		Interval: m.CheckpointInterval, Logger: m.Logger}
	dbPath := filepath.Join(m.DataDir, "mandate.db")
	if err := m.checkLogThere(ctx, sqlite.LogDir(dbPath), dbPath, hadActiveKey); err != nil {
		ln.Close()
		return err
	}
	if m.Store, err = sqlite.Open(ctx, sqlite.Config{Path: dbPath, Now: m.Now, Logger: m.Logger, SyncHook: testSyncHook}); err != nil {
		ln.Close()
		return err
	}
	m.Publisher.Head, m.Publisher.Save = m.Store.LogHead, m.Store.SaveCheckpoint
	m.Publisher.TreeHash = func(n int64) (tlog.Hash, error) { return tlog.TreeHash(n, m.Store.HashReader(context.Background())) }
	if last, err := m.Store.LatestCheckpoint(ctx); err != nil {
		m.closeStore()
		return err
	} else if err := m.Publisher.Restore(last); err != nil {
		m.closeStore()
		return err
	}
	if err := m.checkLogHolds(ctx, dbPath, hadActiveKey); err != nil {
		m.closeStore()
		return err
	}
	if _, err := m.Publisher.Publish(ctx); err != nil {
		m.closeStore()
		return fmt.Errorf("audit log: first checkpoint: %w", err)
	}
	if err := m.finishKeys(ctx); err != nil {
		m.closeStore()
		return err
	}
	if m.Policy, err = m.openPolicy(); err != nil {
		m.closeStore()
		return err
	}
	// The monitor sees every event once it is durable, and its risk
	// scores reach policy at the issuer and the gateway.
	// Its responses go through the API's revocation and quarantine, set
	// below, before the monitor runs.
	var api *httpapi.Server
	m.Monitor = monitor.New(monitor.Config{Alerts: m.Store, Now: m.Now, Logger: m.Logger,
		Responses: m.MonitorResponses, RevokeAt: m.RevokeAt,
		Act: func(ctx context.Context, a monitor.Action) error { return respond(ctx, api, a) }})
	m.replay = replay.New(0)
	since, sinceReached := m.replaySince(fresh)
	m.Issuer, err = issuer.New(issuer.Config{
		Issuer: m.IssuerURL, Keys: m.Keys, Agents: m.Store, Log: m.Store, Assertions: m.Store,
		Issuances: m.Store, Revocations: m.Store, Events: m.Store, Approvals: m.Store, Policy: m.Policy,
		ApprovalTimeout: m.ApprovalTimeout, ApprovalLimits: m.ApprovalLimits, MaxDepth: m.MaxDepth, Risk: m.Monitor.Risk,
		Replay: m.replay, ReplaySince: since, AllowUntypedClientAssertions: m.AllowUntypedClientAssertions,
		Now: m.Now, Logger: m.Logger,
	})
	if err != nil {
		m.closeStore()
		return err
	}
	if err := m.restoreReplay(ctx); err != nil {
		m.closeStore()
		return err
	}
	if len(m.MCPUpstreams)+len(m.HTTPUpstreams)+len(m.MCPStdio) > 0 {
		cfg := gateway.Config{
			Routes: m.MCPUpstreams, HTTPRoutes: m.HTTPUpstreams, StdioRoutes: m.MCPStdio, Issuer: m.IssuerURL, Keys: httpapi.KeySource(m.Keys, m.Now), PublicURL: m.URL,
			Revoked: m.validChain, Agents: m.Store, Policy: m.Policy, TaskEnd: m.taskEnd, TaskLife: issuer.MaxTTL, Events: m.Store, Tools: m.Store,
			Approvals: m.Store, ApprovalLimits: m.ApprovalLimits, Issuances: m.Store, ScanMode: m.ScanMode,
			Risk: m.Monitor.Risk, Hold: m.Monitor.Hold, Counters: m.Monitor.Counters,
			UpstreamTimeout: m.UpstreamTimeout, CallTimeout: m.CallTimeout,
			ReplaySince: since, Now: m.Now, Logger: m.Logger,
		}
		if m.testGateway != nil {
			m.testGateway(&cfg)
		}
		if m.Gateway, err = gateway.New(cfg); err != nil {
			m.closeStore()
			return err
		}
	}
	var tools httpapi.ToolApprover
	var settler mandate.Settler
	if m.Gateway != nil {
		tools, settler = m.Gateway, m.Gateway
	}
	apiCfg := httpapi.Config{
		Issuer: m.Issuer, Keys: m.Keys, Agents: m.Store, Issuances: m.Store, Revocations: m.Store, Events: m.Store,
		Approvals: m.Store, Approvers: m.Store, Audit: m.Store, Publisher: m.Publisher, PublicAudit: m.PublicAudit,
		Tools: m.Store, ToolApprover: tools, Settler: settler,
		AdminToken: m.AdminToken, TrustDomain: m.TrustDomain, Now: m.Now, Logger: m.Logger,
		Health: func() httpapi.Health { h := m.Store.Health(); return httpapi.Health{State: h.State, Reason: h.Reason} },
	}
	if m.testAPI != nil {
		m.testAPI(&apiCfg)
	}
	api, err = httpapi.New(apiCfg)
	if err != nil {
		m.closeStore()
		return err
	}
	// Every committed event reaches the monitor and the live streams:
	// subscribed first, so that none committed while the state below is
	// rebuilt is missed (the monitor skips those Restore saw).
	m.Store.Subscribe(func(evs []mandate.LoggedEvent) {
		m.Monitor.Observe(evs)
		api.Publish(evs)
	})
	// What the gateway and the monitor keep in memory, for flow rules and
	// detectors, is rebuilt from the log: a restart forgets nothing of a
	// task that can still be live, and releases no held task.
	m.restoreState(ctx)
	if err := sinceReached(ctx); err != nil {
		m.closeStore()
		return err
	}
	var handler http.Handler = api
	if m.Gateway != nil {
		mux := http.NewServeMux()
		for _, p := range []string{gateway.PathPrefix, gateway.MetadataPrefix, gateway.HTTPPathPrefix, gateway.HTTPMetadataPrefix} {
			mux.Handle(p, m.Gateway)
		}
		mux.Handle("/", api)
		handler = mux
	}
	writeTimeout := issuer.MaxWait + 30*time.Second
	if m.testWriteTimeout > 0 {
		writeTimeout = m.testWriteTimeout
	}
	m.srv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		// A token request may wait up to issuer.MaxWait for an approval.
		// The gateway sets its answers' own deadlines (CallTimeout).
		WriteTimeout:   writeTimeout,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn),
	}
	// Requests waiting for an approval stop waiting when shutdown begins,
	// so that it need not wait for them.
	m.srv.RegisterOnShutdown(api.StopWaiting)
	if m.Demo {
		if err := m.setUpDemo(ctx); err != nil {
			m.closeStore()
			return err
		}
	}

	// The long-running parts run together and stop together.
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.done = make(chan error, 1)
	// The server's own copy: Close sets m.srv to nil, and the shutdown
	// below may still run then (stop does not wait for it).
	srv := m.srv
	go func() {
		m.done <- runAll(runCtx,
			func(ctx context.Context) error {
				// Another part that stops (a store that failed for good)
				// stops the server too, answering what is in flight.
				stop := context.AfterFunc(ctx, func() {
					sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
					defer cancel()
					srv.Shutdown(sctx)
				})
				defer stop()
				if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
					return err
				}
				return nil
			},
			m.watchStore,
			func(ctx context.Context) error { return m.Store.RunPruner(ctx, time.Minute) },
			m.Publisher.Run,
			func(ctx context.Context) error { return m.Policy.Watch(ctx, policyWatchInterval) },
			m.expireApprovals,
			m.pruneMandates,
			m.snapshotReplay,
			m.Monitor.Run,
		)
	}()
	unlabelled := func(name string, labels map[string][]string) {
		if len(labels) == 0 {
			// Say so: the default set's rules on sends, sensitive data
			// and destructive tools go by the labels the gateway gives.
			m.Logger.Warn("gateway route with no tool labels: no tool of it is a send out, a sensitive read or destructive to policy and the monitor",
				"server", name, "hint", "label its tools in --config (docs/gateway.md, \"Configuration file\")")
		}
	}
	for _, r := range m.MCPUpstreams {
		m.Logger.Info("gateway route", "server", r.Name, "path", gateway.PathPrefix+r.Name, "upstream", r.URL)
		unlabelled(r.Name, r.ToolLabels)
	}
	for _, r := range m.MCPStdio {
		m.Logger.Info("gateway route", "server", r.Name, "path", gateway.PathPrefix+r.Name, "command", strings.Join(r.Command, " "))
		unlabelled(r.Name, r.ToolLabels)
	}
	for _, r := range m.HTTPUpstreams {
		labels := r.Labels
		if len(labels) == 0 {
			labels = []string{gateway.DefaultHTTPLabel}
		}
		m.Logger.Info("gateway route", "api", r.Name, "path", gateway.HTTPPathPrefix+r.Name+"/", "upstream", r.URL, "labels", strings.Join(labels, " "))
	}
	m.Logger.Info("mandate serving", "url", m.URL, "issuer", m.IssuerURL, "data", m.DataDir, "trust_domain", m.TrustDomain,
		"policies", m.PolicyDir, "policy_set", m.Policy.Set().Hash())
	if m.ReadyFile != "" {
		if err := atomicfile.Write(m.ReadyFile, []byte(m.URL+"\n"), 0o644); err != nil {
			m.Logger.Error("ready file not written", "path", m.ReadyFile, "err", err)
		}
	}
	return nil
}

// openPolicy opens the policy engine on m.PolicyDir, writing the default
// set into it if it holds no policy file. Every load and every refusal,
// the first included, is logged by the engine and audited here. A set that
// does not load stops the start: the server never runs without a valid one.
func (m *Main) openPolicy() (*policy.Engine, error) {
	if m.PolicyDir == "" {
		m.PolicyDir = filepath.Join(m.DataDir, "policies")
	}
	e, err := policy.Open(policy.Config{Dir: m.PolicyDir, Logger: m.Logger, Now: m.Now, OnLoad: m.auditPolicyLoad})
	var ie *policy.InvalidSetError
	if errors.As(err, &ie) {
		var b strings.Builder
		fmt.Fprintf(&b, "the policy set in %s is invalid, so the server does not start:", m.PolicyDir)
		for _, d := range ie.Diagnostics {
			fmt.Fprintf(&b, "\n  %s", d)
		}
		fmt.Fprintf(&b, "\nhint: fix the files (`mandate policy check %s` lists the problems), or start with --policies DIR naming a valid set", m.PolicyDir)
		return nil, errors.New(b.String())
	}
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return e, nil
}

// maxPolicyReason bounds the reason of a policy.loaded event: the details
// list the problems in full.
const maxPolicyReason = 1024

// policiesDir names the policy directory in the audit log.
const policiesDir = "<policies>"

// auditPolicyLoad appends the policy.loaded event of a load or a refusal.
// The engine has already put the set in force, or kept the old one: an
// event that cannot be written is logged, and changes neither.
func (m *Main) auditPolicyLoad(res policy.LoadResult) {
	if len(res.Wrote) > 0 {
		m.Logger.Info("default policy set written", "dir", res.Dir, "files", strings.Join(res.Wrote, " "))
	}
	// The audit log may be public (--public-audit): it names the policy
	// files within the policy directory, not where that directory is on
	// this machine (the policy engine's log line says).
	within := strings.NewReplacer(res.Dir+string(filepath.Separator), "", res.Dir, policiesDir).Replace
	details := res.AuditDetails()
	if problems, ok := details["problems"].([]string); ok {
		for i, p := range problems {
			problems[i] = within(p)
		}
	}
	ev := &mandate.Event{V: mandate.EventVersion, Time: res.Time.UnixNano(), Type: mandate.EventPolicyLoaded,
		Action: "load", Outcome: mandate.OutcomeOK, By: "system", Details: details}
	if res.Err != nil {
		ev.Outcome = mandate.OutcomeDeny
		ev.Reason = within(res.Err.Error())
		if len(ev.Reason) > maxPolicyReason {
			ev.Reason = strings.ToValidUTF8(ev.Reason[:maxPolicyReason], "") + "…"
		}
	}
	// The store may be busy or closing; the load does not wait long for it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Store.Append(ctx, ev); err != nil {
		m.Logger.Error("policy.loaded event not written to the audit log", "policy_set", res.Hash, "outcome", ev.Outcome, "err", err)
	}
}

// restoreWindow is how far back the log is read at start to rebuild the
// task state and the monitor's: no task lives longer than its root
// mandate (issuer.MaxTTL), and a minute covers the clocks.
const restoreWindow = issuer.MaxTTL + time.Minute

// restoreState feeds the events of the log's last restoreWindow that the
// gateway's task state and the monitor need (their RestoreTypes, of
// decisions the denials, and the root issuances of the tasks those name:
// gateway.Restore, monitor.Restore), in log order, read through the event index
// (sqlite.Store.RestoreEvents): a start reads what must be restored, not
// the last hour's every issuance. If the log cannot be read, the gateway
// refuses the requests of the tasks begun before (fail closed).
func (m *Main) restoreState(ctx context.Context) {
	start := time.Now()
	f := sqlite.RestoreFilter{Since: m.Now().Add(-restoreWindow)}
	consumers := []struct{ types, taskTypes, denialsOnly []string }{
		{monitor.RestoreTypes, monitor.RestoreTaskTypes, monitor.RestoreDenialsOnly},
		{gateway.RestoreTypes, gateway.RestoreTaskTypes, gateway.RestoreDenialsOnly},
	}
	add := func(list *[]string, t string) {
		if !slices.Contains(*list, t) {
			*list = append(*list, t)
		}
	}
	for _, c := range consumers {
		for _, t := range c.types {
			add(&f.Types, t)
		}
		for _, t := range c.taskTypes {
			add(&f.TaskTypes, t)
		}
	}
	// Only denials of a type if every consumer of it wants only those.
	for _, t := range f.Types {
		if !slices.ContainsFunc(consumers, func(c struct{ types, taskTypes, denialsOnly []string }) bool {
			return slices.Contains(c.types, t) && !slices.Contains(c.denialsOnly, t)
		}) {
			add(&f.DenialsOnly, t)
		}
	}
	st, err := m.Store.RestoreEvents(ctx, f, func(e mandate.LoggedEvent) {
		if m.Gateway != nil {
			m.Gateway.Restore(e)
		}
		m.Monitor.Restore(e)
	})
	m.stateRestored = st
	if m.Gateway != nil {
		m.Gateway.RestoreDone(err)
	}
	if err != nil {
		m.Logger.Error("the task state was not rebuilt from the audit log", "err", err)
	}
	m.Monitor.RestoreDone(ctx)
	m.Logger.Info("task state rebuilt from the audit log", "events", st.Events, "parsed", st.Parsed, "peeked", st.Peeked,
		"took", time.Since(start).Round(time.Millisecond))
}

// expireApprovals denies, every second, the approvals whose time ran out:
// a timeout is a denial, and its audit event should not wait for a poll.
func (m *Main) expireApprovals(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if n, err := m.Issuer.ExpireApprovals(ctx); err != nil && ctx.Err() == nil {
			m.Logger.Error("expiring approvals failed", "err", err)
		} else if n > 0 {
			m.Logger.Info("approvals timed out undecided, so denied", "count", n)
		}
	}
}

// pruneMargin is how long past their mandates' expiry revocations and
// used assertions are kept.
const pruneMargin = 10 * time.Minute

// pruneMandates deletes, every minute, the revocations and used client
// assertions of mandates that expired more than pruneMargin ago, so that
// live state is bounded by the live mandates. Issuances are their events
// in the audit log, which is never pruned. Its clock never runs ahead of
// the time elapsed since it began (internal/clock): a wall clock that
// jumps forward, to be set right later, must not forget the revocations
// of mandates that are live again.
func (m *Main) pruneMandates(ctx context.Context) error {
	now := clock.NotAhead(m.Now, nil)
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if n, err := m.Store.PruneMandates(ctx, now().Add(-pruneMargin)); err != nil && ctx.Err() == nil {
			m.Logger.Error("pruning expired mandates failed", "err", err)
		} else if n > 0 {
			m.Logger.Debug("expired mandates pruned", "rows", n)
		}
	}
}

// replaySince returns when the replay sets of DPoP proofs, at the token
// endpoint and the gateway, begin: a proof issued before it is refused
// (docs/tokens.md, "Single use across restarts"). Those sets are in
// memory, so a restart empties them, and a proof the previous process
// accepted up to DPoPMaxAge ago would be good once more. On a data
// directory used before, it is the next whole second, and the server
// must not serve before it (reached waits for it): the previous process
// ended before this one started, so every proof it saw has an iat before
// that second, while a proof made once this one serves, even with a
// whole-second iat (as most clients write it), has one at or after it.
// The wait runs while the start restores its state, so that it adds
// nothing to a start that takes a second anyway. On a new data directory
// nothing was accepted before: the current second, and no wait.
func (m *Main) replaySince(fresh bool) (since time.Time, reached func(context.Context) error) {
	now := m.Now()
	if fresh {
		return now.Truncate(time.Second), func(context.Context) error { return nil }
	}
	next := now.Truncate(time.Second).Add(time.Second)
	t := time.NewTimer(next.Sub(now))
	return next, func(ctx context.Context) error {
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Wait blocks until ctx ends or a long-running part fails.
func (m *Main) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-m.done:
		m.done <- err
		return err
	}
}

// Close shuts down gracefully: in-flight requests finish (up to 10 s), then
// the store flushes and closes. Closing again does nothing.
func (m *Main) Close() error {
	if m.srv == nil {
		return nil
	}
	defer func() { m.srv = nil }()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err := m.srv.Shutdown(ctx)
	m.cancel()
	if rerr := <-m.done; rerr != nil && err == nil {
		err = rerr
	}
	// No request runs any more: the last replay snapshot covers them all.
	if serr := m.writeReplaySnapshot(true); serr != nil {
		m.Logger.Warn("replay snapshot not written: the next start reads more of the audit log", "err", serr)
	}
	if m.Gateway != nil {
		m.Gateway.Drain() // the last tool results reach the log before it closes
		m.Gateway.Close() // and the stdio servers stop
	}
	if cerr := m.Store.Close(); err == nil {
		err = cerr
	}
	m.lock.Release() // the store's files are closed: the next server may start
	m.Logger.Info("mandate stopped")
	return err
}

// claimDataDir makes the data directory if needed and takes its lock
// (internal/dirlock), or says who holds it; once: Open calls it, and so
// does a demo before it writes its policies there. The directory is this
// process's before anything in it is read or written: a second server
// would append to the same log and database from its own state, and each
// would overwrite the other's entries; a demo's policy would join the
// running server's set, which it reloads from disk.
func (m *Main) claimDataDir() error {
	if m.lock != nil {
		return nil
	}
	if m.Now == nil {
		m.Now = time.Now
	}
	if err := os.MkdirAll(m.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	l, err := dirlock.Acquire(m.DataDir, m.Now())
	var he *dirlock.HeldError
	if errors.As(err, &he) {
		return fmt.Errorf("%v: another mandate server runs on it\nhint: stop that server, or start this one with another --data", he)
	}
	if err != nil {
		return err
	}
	m.lock = l
	return nil
}

// logFix is what to do about a log that was wiped or replaced.
const logFix = "hint: restore the log from a backup or an export (`mandate audit export`); the server changes nothing and will not start a new log over it"

// checkLogThere refuses, before the store opens (and would make a new,
// empty log), a data directory whose log files are gone while something
// says the log held entries: the checkpoint kept apart from it, the
// database's agents, approvals and the like, or an active signing key
// (whose key.rotated event is written before it signs). A database from
// before the log files keeps its log itself, and the store moves it.
func (m *Main) checkLogThere(ctx context.Context, dir, dbPath string, hadActiveKey bool) error {
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		return nil // an empty or short log is checked once the store is open
	}
	kept, err := m.Publisher.KeptSize()
	if err != nil {
		return err
	}
	if kept > 0 {
		return fmt.Errorf("audit log: %w: the log's directory %s is gone, but its last checkpoint (%s) signed %d entries: the log was wiped or replaced\n%s",
			auditlog.ErrLogReplaced, dir, m.Publisher.HeadFile, kept, logFix)
	}
	in, err := sqlite.Inspect(ctx, dbPath)
	if err != nil || in.LogInDatabase {
		return err
	}
	return m.emptyLogRefusal(fmt.Sprintf("the log's directory %s is gone", dir), in.Holdings, hadActiveKey)
}

// checkLogHolds refuses an empty log beside state whose making it would
// record (see checkLogThere): such a log was wiped, with its checkpoints;
// starting a new one would hide it. A data directory from before the
// key's event was written has entries anyway (at least a policy.loaded
// event).
func (m *Main) checkLogHolds(ctx context.Context, dbPath string, hadActiveKey bool) error {
	if size, _ := m.Store.LogHead(); size > 0 {
		return nil
	}
	in, err := sqlite.Inspect(ctx, dbPath)
	if err != nil {
		return err
	}
	return m.emptyLogRefusal("the log holds 0 entries", in.Holdings, hadActiveKey)
}

// emptyLogRefusal is the refusal of a log that is empty or gone (what
// says which) beside the database's holdings or an active key; nil if
// there are neither.
func (m *Main) emptyLogRefusal(what, holdings string, hadActiveKey bool) error {
	switch {
	case holdings != "":
		return fmt.Errorf("audit log: %w: %s, but the database holds %s, whose records it would hold: the log was wiped or replaced\n%s",
			auditlog.ErrLogReplaced, what, holdings, logFix)
	case hadActiveKey:
		return fmt.Errorf("audit log: %w: %s, but the signing keyring (%s) has an active key, whose key.rotated event it would hold: the log was wiped or replaced\n%s",
			auditlog.ErrLogReplaced, what, filepath.Join(m.DataDir, "keys", "signing.json"), logFix)
	}
	return nil
}

// finishKeys announces and activates a pending signing key before the
// issuer signs anything: the first key of a new data directory, or the
// key of a rotation that a crash interrupted. A pending key never signed;
// if its key.rotated event is in the log already (the crash came after
// it), it is not written again. An interrupted rotation is completed
// rather than undone: the operator asked for it, perhaps because the old
// key is in doubt, and the new key was published already.
func (m *Main) finishKeys(ctx context.Context) error {
	k, err := m.Keys.Finish(ctx, m.Now(), func(ctx context.Context, next *issuer.SigningKey, prev string) error {
		last, err := m.Store.Events(ctx, mandate.EventFilter{Type: mandate.EventKeyRotated, Limit: 1, Last: true})
		if err != nil {
			return err
		}
		if len(last) == 1 {
			if kid, _ := last[0].Details["kid"].(string); kid == next.ID {
				return nil
			}
		}
		reason := ""
		if prev != "" {
			reason = "a rotation that a restart interrupted, completed at start"
		}
		return m.Store.Append(ctx, issuer.KeyRotatedEvent(m.Now(), next.ID, prev, "system", reason))
	})
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	if k != nil {
		m.Logger.Info("signing key activated", "kid", k)
	}
	return nil
}

// watchStore stops the server when its store has failed for good (an
// fsync failed, so nothing this process writes can be trusted): serve
// then exits with status 1 and says why, and the supervisor's restart
// recovers from the files. A store that is only degraded (a full disk)
// recovers by itself and keeps the server up.
func (m *Main) watchStore(ctx context.Context) error {
	select {
	case <-m.Store.Failed():
		return fmt.Errorf("the store failed: %v: the disk did not confirm a write, and nothing this process writes can be trusted after that; "+
			"the answers it gave before stand\nhint: restart mandate (a supervisor should do so by itself: Restart=on-failure); at start it recovers from its files",
			m.Store.Err())
	case <-ctx.Done():
		return nil
	}
}

// testSyncHook, set by the tests of a child `mandate serve`
// (MANDATE_TEST_FAIL_FSYNC), fails the store's fsyncs (sqlite.Config.SyncHook).
var testSyncHook func() error

func (m *Main) closeStore() {
	m.ln.Close()
	m.Store.Close()
}

// auditOrigin names the audit log after the issuer: its host and path,
// then /audit (C2SP checkpoints name their log without a scheme).
func auditOrigin(issuerURL string) string {
	u, err := url.Parse(issuerURL)
	if err != nil || u.Host == "" {
		return "mandate/audit"
	}
	return strings.TrimSuffix(u.Host+u.Path, "/") + "/audit"
}

// runAll runs fns until one returns; then it cancels the others and
// returns the first error.
func runAll(ctx context.Context, fns ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(fns))
	for _, fn := range fns {
		go func() { errc <- fn(ctx) }()
	}
	err := <-errc
	cancel()
	for range len(fns) - 1 {
		if e := <-errc; err == nil {
			err = e
		}
	}
	return err
}

// loadOrCreateAdminToken reads the admin credential, creating it (0600)
// on first start.
func loadOrCreateAdminToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return "", fmt.Errorf("%s is readable by others (mode %v)\nhint: chmod 600 %s", path, fi.Mode().Perm(), path)
		}
		tok := strings.TrimSpace(string(b))
		if len(tok) < 16 {
			return "", fmt.Errorf("%s holds no usable admin credential\nhint: delete it and restart to create a new one", path)
		}
		return tok, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var raw [32]byte
	rand.Read(raw[:])
	tok := "mdt_" + base64.RawURLEncoding.EncodeToString(raw[:])
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write admin credential: %w", err)
	}
	return tok, nil
}

// respond carries out a monitor's response through the API, as an
// operator would, with the detector and the evidence in the events.
func respond(ctx context.Context, api *httpapi.Server, a monitor.Action) error {
	details := map[string]any{"detector": a.Detector, "evidence": a.Evidence}
	var err error
	switch a.Response {
	case monitor.Revoke:
		_, err = api.Revoke(ctx, httpapi.RevocationRequest{Mandate: a.Mandate, Reason: mandate.ClipReason(a.Reason)}, "monitor", details)
	case monitor.RevokeTask:
		_, err = api.Revoke(ctx, httpapi.RevocationRequest{Task: a.Task, Reason: mandate.ClipReason(a.Reason)}, "monitor", details)
	case monitor.Quarantine:
		_, err = api.Quarantine(ctx, a.Agent, mandate.ClipReason(a.Reason), "monitor", details)
	default:
		return fmt.Errorf("no such response %q", a.Response)
	}
	return err
}

// validChain refuses, at the gateway, a mandate that is revoked or has a
// revoked ancestor (followed through the issuance records), or one of
// whose chain's registered agents (the registered ancestor of each actor)
// is disabled or no longer registered, as the issuer's introspection does.
// Disabling an agent thus stops its live mandates, and every mandate
// delegated through it, on their next call. Each refusal wraps
// verify.ErrRevoked; anything else is a failed check (refused too).
func (m *Main) validChain(ctx context.Context, c *mandate.Claims) error {
	id := c.ID
	for i := 0; ; i++ {
		if i > mandate.MaxAgentDepth {
			return fmt.Errorf("mandate %s: the chain of parents is too long", c.ID)
		}
		revoked, err := m.Store.IsRevoked(ctx, id)
		if err != nil {
			return err
		}
		if revoked {
			return fmt.Errorf("mandate %s: %w", id, verify.ErrRevoked)
		}
		parent, err := m.parents.of(ctx, m.Store, id)
		if err != nil {
			return err // not on record: not vouched for
		}
		if parent == "" {
			break
		}
		id = parent
	}
	var checked []string
	for _, actor := range c.Actor.Chain() {
		reg := mandate.RegisteredAncestor(actor)
		if slices.Contains(checked, reg) {
			continue
		}
		checked = append(checked, reg)
		a, err := m.Store.Agent(ctx, reg)
		switch {
		case mandate.ErrorCode(err) == mandate.ENOTFOUND:
			return fmt.Errorf("agent %s of the chain is not registered any more: %w", reg, verify.ErrRevoked)
		case err != nil:
			return err
		case a.Status != mandate.AgentActive:
			return fmt.Errorf("agent %s of the chain is %s: %w", reg, a.Status, verify.ErrRevoked)
		}
	}
	return nil
}

// taskEnd is when c's task ends, for the gateway's task state: its root
// mandate's expiry (no mandate of the task outlives it), from the root's
// issuance record, found through the chain of parents.
func (m *Main) taskEnd(ctx context.Context, c *mandate.Claims) (time.Time, error) {
	id := c.ID
	for i := 0; i <= mandate.MaxAgentDepth; i++ {
		l, err := m.parents.link(ctx, m.Store, id)
		if err != nil {
			return time.Time{}, err
		}
		if l.parent == "" {
			return l.exp, nil
		}
		id = l.parent
	}
	return time.Time{}, fmt.Errorf("mandate %s: the chain of parents is too long", c.ID)
}

// parentLinks remembers which mandate each mandate was delegated from,
// and when it expires: neither ever changes, so the gateway's checks read
// each from the store once, not on every call. Bounded: when full it
// starts over.
type parentLinks struct {
	mu sync.Mutex
	m  map[string]parentLink
}

type parentLink struct {
	parent string
	exp    time.Time
}

const maxParentLinks = 100_000

func (p *parentLinks) of(ctx context.Context, st mandate.IssuanceGetter, id string) (string, error) {
	l, err := p.link(ctx, st, id)
	return l.parent, err
}

func (p *parentLinks) link(ctx context.Context, st mandate.IssuanceGetter, id string) (parentLink, error) {
	p.mu.Lock()
	l, ok := p.m[id]
	p.mu.Unlock()
	if ok {
		return l, nil
	}
	rec, err := st.Issuance(ctx, id)
	if err != nil {
		return parentLink{}, err
	}
	l = parentLink{parent: rec.ParentID, exp: rec.ExpiresAt}
	p.mu.Lock()
	if p.m == nil || len(p.m) >= maxParentLinks {
		p.m = make(map[string]parentLink)
	}
	p.m[id] = l
	p.mu.Unlock()
	return l, nil
}

// splitCommand splits a command line into words: spaces separate them,
// and single or double quotes keep spaces in one (no other shell syntax).
func splitCommand(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unclosed %c quote", quote)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
