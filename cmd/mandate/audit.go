package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/auditcheck"
	"github.com/mandatehq/mandate/auditlog/layout"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/internal/dirlock"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func (c *cli) audit(args []string) error {
	if len(args) == 0 {
		return usageError{"audit needs a subcommand: tail, show, export, verify, checkpoint"}
	}
	switch args[0] {
	case "tail":
		return c.auditTail(args[1:])
	case "show":
		return c.auditShow(args[1:])
	case "export":
		return c.auditExport(args[1:])
	case "verify":
		return c.auditVerify(args[1:])
	case "checkpoint":
		return c.auditCheckpoint(args[1:])
	}
	return usageError{fmt.Sprintf("unknown audit subcommand %q: use tail, show, export, verify or checkpoint", args[0])}
}

// formatEvent is one line for a person.
func formatEvent(e mandate.LoggedEvent) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%6d %s %-18s", e.Index, time.Unix(0, e.Time).UTC().Format("15:04:05.000"), e.Type)
	for _, f := range []struct{ k, v string }{{"agent", shortID(e.Agent)}, {"task", e.Task}, {"mandate", e.Mandate},
		{"outcome", e.Outcome}, {"by", e.By}, {"reason", e.Reason}} {
		if f.v != "" {
			fmt.Fprintf(&b, " %s=%s", f.k, f.v)
		}
	}
	if s, ok := e.Details["scope"].(string); ok {
		fmt.Fprintf(&b, " scope=%q", s)
	}
	// An alert names its detector and the task's risk.
	if s, ok := e.Details["detector"].(string); ok {
		fmt.Fprintf(&b, " detector=%s risk=%v", s, e.Details["risk"])
	}
	// Policy loads and decisions name the policy set, by a short hash.
	if s, ok := e.Details["policy_set"].(string); ok && len(s) >= 12 {
		fmt.Fprintf(&b, " policy_set=%s", s[:12])
	}
	return b.String()
}

// shortID drops the spiffe://<td>/agent/ prefix for display.
func shortID(id string) string {
	if i := strings.Index(id, "/agent/"); strings.HasPrefix(id, "spiffe://") && i >= 0 {
		return id[i+len("/agent/"):]
	}
	return id
}

func (c *cli) auditTail(args []string) error {
	fs := c.flags("audit tail", "[-f] [-n N] [--type T] [--task ID] [--agent NAME]")
	follow := fs.Bool("f", false, "keep printing new events")
	n := fs.Int("n", 20, "how many of the last events to print first")
	typ := fs.String("type", "", "only events of this type")
	task := fs.String("task", "", "only events of this task")
	agent := fs.String("agent", "", "only events of this agent")
	cl, _, err := c.adminCommand(fs, args, 0)
	if err != nil {
		return err
	}
	if *n < 1 || *n > mandate.MaxEventsPerQuery {
		return usageError{fmt.Sprintf("audit tail: -n must be 1 to %d", mandate.MaxEventsPerQuery)}
	}
	q := url.Values{"limit": {strconv.Itoa(*n)}, "last": {"true"}}
	for k, v := range map[string]string{"type": *typ, "task": *task, "agent": *agent} {
		if v != "" {
			q.Set(k, v)
		}
	}
	print := func(e mandate.LoggedEvent) error {
		if c.json {
			c.printJSONLine(e)
		} else {
			fmt.Fprintln(c.stdout, formatEvent(e))
		}
		return nil
	}
	evs, err := cl.Events(c.ctx, q)
	if err != nil {
		return err
	}
	next := int64(0)
	for _, e := range evs {
		print(e)
		next = e.Index + 1
	}
	if !*follow {
		return nil
	}
	// Then the live stream (server-sent events), from the next position on.
	return cl.Follow(c.ctx, q, next, print)
}

func (c *cli) auditShow(args []string) error {
	fs := c.flags("audit show", "--task ID")
	task := fs.String("task", "", "the task whose events to show")
	cl, _, err := c.adminCommand(fs, args, 0)
	if err != nil {
		return err
	}
	if *task == "" {
		return usageError{"audit show: --task ID is required (task ids are in the mandates: the task claim)"}
	}
	evs, err := cl.Events(c.ctx, url.Values{"task": {*task}, "limit": {strconv.Itoa(mandate.MaxEventsPerQuery)}})
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(evs)
	}
	if len(evs) == 0 {
		return fmt.Errorf("no events for task %s\nhint: task ids start with t_; see `mandate audit tail`", *task)
	}
	fmt.Fprintf(c.stdout, "task %s\n", *task)
	printTree(c.stdout, evs)
	return nil
}

// printTree draws a task's events grouped by mandate, each mandate under
// its parent, events in log order.
func printTree(w io.Writer, evs []mandate.LoggedEvent) {
	byMandate := map[string][]mandate.LoggedEvent{}
	parent := map[string]string{}
	var order []string
	var loose []mandate.LoggedEvent
	for _, e := range evs {
		if e.Mandate == "" {
			loose = append(loose, e)
			continue
		}
		if _, ok := byMandate[e.Mandate]; !ok {
			order = append(order, e.Mandate)
		}
		byMandate[e.Mandate] = append(byMandate[e.Mandate], e)
		if e.Parent != "" {
			parent[e.Mandate] = e.Parent
		}
	}
	children := map[string][]string{}
	var roots []string
	for _, m := range order {
		if p, ok := parent[m]; ok && byMandate[p] != nil {
			children[p] = append(children[p], m)
		} else {
			roots = append(roots, m)
		}
	}
	var walk func(m, indent string, last bool)
	walk = func(m, indent string, last bool) {
		branch, next := "├─ ", "│  "
		if last {
			branch, next = "└─ ", "   "
		}
		first := byMandate[m][0]
		holder := shortID(first.Agent)
		fmt.Fprintf(w, "%s%s%s  %s", indent, branch, m, holder)
		if s, ok := first.Details["scope"].(string); ok {
			fmt.Fprintf(w, "  [%s]", s)
		}
		fmt.Fprintln(w)
		for _, e := range byMandate[m] {
			fmt.Fprintf(w, "%s%s  · %d %s %s", indent, next, e.Index, time.Unix(0, e.Time).UTC().Format("15:04:05.000"), e.Type)
			if e.Resource != "" {
				fmt.Fprintf(w, " %s", e.Resource)
			}
			if d, ok := e.Details["detector"].(string); ok {
				fmt.Fprintf(w, " [%s]", d)
			}
			if e.Outcome != "" && e.Outcome != mandate.OutcomeOK {
				fmt.Fprintf(w, " (%s)", e.Outcome)
			}
			if e.Reason != "" {
				fmt.Fprintf(w, ": %s", e.Reason)
			}
			fmt.Fprintln(w)
		}
		kids := children[m]
		for i, k := range kids {
			walk(k, indent+next, i == len(kids)-1)
		}
	}
	for i, r := range roots {
		walk(r, "", i == len(roots)-1)
	}
	for _, e := range loose {
		fmt.Fprintln(w, formatEvent(e))
	}
}

func (c *cli) auditCheckpoint(args []string) error {
	cl, _, err := c.adminCommand(c.flags("audit checkpoint", ""), args, 0)
	if err != nil {
		return err
	}
	cp, err := cl.PublishCheckpoint(c.ctx)
	if err != nil {
		return err
	}
	_, err = c.stdout.Write(cp)
	return err
}

// auditExport copies the log from the server into dir in the C2SP
// tlog-tiles layout, plus the verifier key in dir/vkey: a directory any
// static file server can serve and `mandate audit verify DIR` checks.
func (c *cli) auditExport(args []string) error {
	fs := c.flags("audit export", "DIR")
	cl, pos, err := c.adminCommand(fs, args, 1)
	if err != nil {
		return err
	}
	dir := pos[0]
	src := auditcheck.HTTPSource(strings.TrimSuffix(c.server, "/")+"/audit",
		&http.Client{Timeout: time.Minute, Transport: httpapi.AuthTransport{Token: cl.AdminToken}})
	fetch := func(p string) ([]byte, error) { return src.ReadFile(c.ctx, p) }
	vkey, err := fetch(layout.VerifierKeyPath)
	if err != nil {
		return fmt.Errorf("read the verifier key: %w", err)
	}
	cp, err := fetch(layout.CheckpointPath)
	if err != nil {
		return fmt.Errorf("read the checkpoint: %w", err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		return fmt.Errorf("the server's verifier key does not parse: %w", err)
	}
	n, err := note.Open(cp, note.VerifierList(v))
	if err != nil {
		return fmt.Errorf("the server's checkpoint does not verify with its own key: %w", err)
	}
	_, size, _, err := layout.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return err
	}
	write := func(p string, data []byte) error {
		full := filepath.Join(dir, filepath.FromSlash(p))
		// The events say who did what for whom: private by default; the
		// operator who publishes the copy chooses to widen it.
		if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
			return err
		}
		return os.WriteFile(full, data, 0o600)
	}
	files := 0
	for _, p := range tilePaths(size) {
		data, err := fetch(p)
		if err != nil {
			return fmt.Errorf("read %s: %w", p, err)
		}
		if err := write(p, data); err != nil {
			return err
		}
		files++
	}
	// The checkpoint goes last: a reader never sees a checkpoint whose
	// tiles are not there yet.
	if err := write(layout.VerifierKeyPath, vkey); err != nil {
		return err
	}
	if err := write(layout.CheckpointPath, cp); err != nil {
		return err
	}
	if c.json {
		return c.printJSON(map[string]any{"dir": dir, "size": size, "files": files + 2})
	}
	fmt.Fprintf(c.stdout, "exported %d entries (%d tiles and bundles) to %s\n", size, files, dir)
	return nil
}

// tilePaths lists the hash tiles of a tree of size entries (tlog.NewTiles:
// the full ones and, per level, the partial one) and the entry bundles,
// which match the level-0 tiles one for one.
func tilePaths(size uint64) []string {
	var out []string
	for _, t := range tlog.NewTiles(layout.TileHeight, 0, int64(size)) {
		out = append(out, layout.HashTilePath(uint64(t.L), uint64(t.N), t.W))
		if t.L == 0 {
			out = append(out, layout.EntriesPath(uint64(t.N), t.W))
		}
	}
	return out
}

func (c *cli) auditVerify(args []string) error {
	fs := c.flags("audit verify", "(--url URL | DIR) [--log-key FILE] [--state FILE]")
	from := fs.String("url", "", "the server (its /audit/ layout), or any base URL of a tlog-tiles copy")
	keyFile := fs.String("log-key", "", "the log's verifier key (as at /audit/vkey); without it the log's own key is trusted on first use")
	stateDefault := ""
	if d, err := os.UserConfigDir(); err == nil {
		stateDefault = filepath.Join(d, "mandate", "audit-state.json")
	}
	state := fs.String("state", stateDefault, "where to remember the last verified checkpoint of each log (\"\": nowhere)")
	pos, err := c.parse(fs, args, -1)
	if err != nil {
		return err
	}
	var src auditcheck.Source
	switch {
	case *from != "" && len(pos) == 0:
		base := strings.TrimSuffix(*from, "/")
		if u, err := url.Parse(base); err == nil && (u.Path == "" || u.Path == "/") {
			base += "/audit" // a Mandate server: its log is under /audit/
		}
		client := &http.Client{Timeout: time.Minute, Transport: auditcheck.HTTPTransport()}
		if tok := c.adminToken(); tok != "" {
			client.Transport = httpapi.AuthTransport{Token: tok, Base: client.Transport}
		}
		src = auditcheck.HTTPSource(base, client)
	case *from == "" && len(pos) == 1:
		if err := notDataDir(pos[0]); err != nil {
			return err
		}
		src = auditcheck.DirSource(pos[0])
	default:
		return usageError{"audit verify: give --url URL or one DIR"}
	}
	opts := auditcheck.Options{State: *state}
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return err
		}
		opts.VerifierKey = strings.TrimSpace(string(b))
	}
	if opts.State != "" {
		if err := os.MkdirAll(filepath.Dir(opts.State), 0o700); err != nil {
			return err
		}
	}
	if os.Getenv("GOGC") == "" {
		// Parsing each event leaves ~5 KiB of garbage, and little stays
		// live (the bundles read ahead, ~2 MiB): at the default, the
		// collector runs every few milliseconds, a fifth of the CPU.
		// A target of 5× the live heap keeps it under ~60 MiB.
		defer debug.SetGCPercent(debug.SetGCPercent(400))
	}
	report, err := auditcheck.Verify(c.ctx, src, opts)
	if err != nil {
		return err
	}
	if c.json {
		if err := c.printJSON(report); err != nil {
			return err
		}
	} else {
		fmt.Fprint(c.stdout, report.String())
	}
	if !report.OK() {
		return errVerifyFailed
	}
	return nil
}

// notDataDir refuses a server's data directory given as a log copy: the
// server keeps its log in files of its own format, which it writes while
// it runs; the C2SP tlog-tiles layout is what it serves and exports.
func notDataDir(dir string) error {
	_, lockErr := os.Stat(filepath.Join(dir, dirlock.Name))
	_, dbErr := os.Stat(filepath.Join(dir, "mandate.db"))
	if lockErr != nil && dbErr != nil {
		return nil
	}
	state := ""
	if h, err := dirlock.Holder(dir); err != nil {
		return err
	} else if h != nil {
		state = strings.TrimPrefix(h.Error(), "data directory "+dir+" is")
		state = "," + state
	}
	return fmt.Errorf("%s is a server's data directory%s, not a copy of its log\nhint: verify the server with `mandate audit verify --url URL`, or a copy `mandate audit export DIR` makes", dir, state)
}

// errVerifyFailed makes `audit verify` exit 1 after printing its report.
var errVerifyFailed = errors.New("the audit log did not verify")

// adminToken returns the admin credential if one is at hand, else "".
func (c *cli) adminToken() string {
	cl, err := c.admin()
	if err != nil {
		return ""
	}
	return cl.AdminToken
}

// printJSONLine prints v as one line of JSON (for streams).
func (c *cli) printJSONLine(v any) {
	enc := jsonEncoder(c.stdout)
	enc.Encode(v)
}
