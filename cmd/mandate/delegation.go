package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
)

// The commands of delegation: approvers and approvals, the task tree, and
// `mandate delegate`.

func (c *cli) approverCmd(args []string) error {
	if len(args) == 0 {
		return usageError{"approver needs a subcommand: add, list, disable"}
	}
	switch args[0] {
	case "add":
		return c.approverAdd(args[1:])
	case "list":
		return c.approverList(args[1:])
	case "disable":
		return c.approverDisable(args[1:])
	}
	return usageError{fmt.Sprintf("unknown approver subcommand %q: use add, list or disable", args[0])}
}

// approverDisable revokes an approver's credential: from now on it is
// refused, and so are their decisions.
func (c *cli) approverDisable(args []string) error {
	cl, pos, err := c.adminCommand(c.flags("approver disable", "EMAIL"), args, 1)
	if err != nil {
		return err
	}
	if err := mandate.ValidateOwner(pos[0]); err != nil {
		return fmt.Errorf("invalid approver email %q\nhint: give the person's email address, as `mandate approver list` shows it", pos[0])
	}
	a, err := cl.DisableApprover(c.ctx, pos[0])
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(a)
	}
	fmt.Fprintf(c.stdout, "approver %s disabled at %s: their credential is refused from now on, and so are their decisions\n", a.Email, a.DisabledAt.Format(time.RFC3339))
	fmt.Fprintln(c.stdout, "pending approvals that name no one else are denied when they time out")
	fmt.Fprintf(c.stdout, "hint: `mandate approver add %s` gives them a new credential, if they are to decide again\n", a.Email)
	return nil
}

func (c *cli) approverAdd(args []string) error {
	fs := c.flags("approver add", "EMAIL [--out FILE]")
	out := fs.String("out", "", "write the approver's credential to FILE (0600) instead of printing it")
	cl, pos, err := c.adminCommand(fs, args, 1)
	if err != nil {
		return err
	}
	if err := mandate.ValidateOwner(pos[0]); err != nil {
		return fmt.Errorf("invalid approver email %q\nhint: give the person's email address, as agents name it in --approver", pos[0])
	}
	// Claim the file first: the credential exists only in the server's
	// answer, so a path that cannot be written must fail before it is made.
	var f *os.File
	if *out != "" {
		f, err = os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists: refusing to overwrite a credential\nhint: choose another path", *out)
		} else if err != nil {
			return fmt.Errorf("cannot write the credential file: %w\nhint: nothing was created; choose a writable path", err)
		}
		defer f.Close()
	}
	a, err := cl.CreateApprover(c.ctx, pos[0])
	if err != nil {
		if f != nil {
			f.Close()
			os.Remove(*out)
		}
		return err
	}
	if f != nil {
		if _, err := f.WriteString(a.Token + "\n"); err != nil {
			return fmt.Errorf("approver %s is added, but the credential could not be written: %w\nhint: it cannot be shown again; add the person under another email", a.Email, err)
		}
		if err := f.Sync(); err != nil {
			return fmt.Errorf("approver %s is added, but the credential could not be written: %w", a.Email, err)
		}
		a.Token = ""
	}
	if c.json {
		return c.printJSON(a)
	}
	if f != nil {
		fmt.Fprintf(c.stdout, "approver %s added; credential written to %s (mode 0600)\n", a.Email, *out)
		fmt.Fprintln(c.stdout, "give it to them: it cannot be shown again, and only they can decide their approvals with it")
		return nil
	}
	fmt.Fprintln(c.stdout, a.Token)
	fmt.Fprintf(c.stderr, "approver %s added; above is their credential, shown this once\n", a.Email)
	fmt.Fprintf(c.stderr, "hint: they use it as MANDATE_APPROVER_TOKEN, or with --approver-token-file FILE\n")
	return nil
}

func (c *cli) approverList(args []string) error {
	cl, _, err := c.adminCommand(c.flags("approver list", ""), args, 0)
	if err != nil {
		return err
	}
	list, err := cl.Approvers(c.ctx)
	if err != nil {
		return err
	}
	if c.json {
		if list == nil {
			list = []httpapi.ApproverResponse{}
		}
		return c.printJSON(list)
	}
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "no approvers\nhint: mandate approver add EMAIL --out EMAIL.token")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EMAIL\tADDED\tSTATUS")
	for _, a := range list {
		status := "active"
		if !a.DisabledAt.IsZero() {
			status = "disabled " + a.DisabledAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Email, a.CreatedAt.Format(time.RFC3339), status)
	}
	return tw.Flush()
}

// approverToken returns the approver credential given by
// --approver-token-file or MANDATE_APPROVER_TOKEN; "" if neither.
func approverToken(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("cannot read the approver credential: %w\nhint: --approver-token-file names the file `mandate approver add EMAIL --out FILE` wrote", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	return strings.TrimSpace(os.Getenv("MANDATE_APPROVER_TOKEN")), nil
}

func (c *cli) approvals(args []string) error {
	if len(args) == 0 {
		return usageError{"approvals needs a subcommand: list, show, approve, deny"}
	}
	switch args[0] {
	case "list":
		return c.approvalsList(args[1:])
	case "show":
		return c.approvalsShow(args[1:])
	case "approve":
		return c.approvalsDecide(args[1:], true)
	case "deny":
		return c.approvalsDecide(args[1:], false)
	}
	return usageError{fmt.Sprintf("unknown approvals subcommand %q: use list, show, approve or deny", args[0])}
}

// approvalsClient is a client with the approver credential if one is
// given, else the admin's: both may read approvals.
func (c *cli) approvalsClient(tokenFile string) (*httpapi.Client, error) {
	tok, err := approverToken(tokenFile)
	if err != nil {
		return nil, err
	}
	if tok != "" {
		return &httpapi.Client{BaseURL: c.server, ApproverToken: tok}, nil
	}
	return c.admin()
}

func (c *cli) approvalsList(args []string) error {
	fs := c.flags("approvals list", "[--status S] [--task T] [--approver-token-file FILE]")
	status := fs.String("status", "", "only approvals with this status: pending, approved, denied or used")
	task := fs.String("task", "", "only approvals of this task")
	tokFile := fs.String("approver-token-file", "", "read as this approver (env MANDATE_APPROVER_TOKEN); default: the admin credential")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	cl, err := c.approvalsClient(*tokFile)
	if err != nil {
		return err
	}
	list, err := cl.Approvals(c.ctx, *status, *task)
	if err != nil {
		return err
	}
	if c.json {
		if list == nil {
			list = []*mandate.Approval{}
		}
		return c.printJSON(list)
	}
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "no approvals")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tACTION\tAGENT\tTO\tSCOPE\tRISK\tAPPROVERS\tEXPIRES")
	for _, a := range list {
		to := shortActor(a.Actor)
		if a.Action == mandate.ApprovalToolCall {
			to = "-" // the call itself: SCOPE names the tool
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", a.ID, a.Status, printable(a.Action), printable(shortAgent(a.Agent)), printable(to),
			printable(a.Scope), a.Risk, printable(strings.Join(a.Approvers, ",")), a.ExpiresAt.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(c.stderr, "hint: `mandate approvals show ID` shows what an approval asks for, arguments included")
	return nil
}

func (c *cli) approvalsShow(args []string) error {
	fs := c.flags("approvals show", "ID [--approver-token-file FILE]")
	tokFile := fs.String("approver-token-file", "", "read as this approver (env MANDATE_APPROVER_TOKEN); default: the admin credential")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	cl, err := c.approvalsClient(*tokFile)
	if err != nil {
		return err
	}
	a, err := cl.Approval(c.ctx, pos[0])
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(a)
	}
	printApproval(c.stdout, a)
	return nil
}

// printApproval shows what a person decides: who asks, in which chain,
// for which task and purpose, why it was held, and for a tool call the
// server, the tool and the arguments (as the server keeps them: secrets
// masked, shortened). Every text from the request is shown escaped where
// it holds what a terminal would act on or hide (controls, bidi
// overrides), so that the request cannot rewrite what is read.
func printApproval(w io.Writer, a *mandate.Approval) {
	fmt.Fprintf(w, "approval %s: %s\n", a.ID, a.Status)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "  %s:\t%s\n", k, printable(v))
		}
	}
	line("asks", a.Action)
	line("task", a.Task)
	line("purpose", a.Purpose)
	fmt.Fprintf(tw, "  risk:\t%d\n", a.Risk)
	line("on behalf of", a.Subject)
	line("from", a.Agent)
	if len(a.Chain) > 1 {
		line("chain", strings.Join(a.Chain, " ← "))
	}
	if a.Action != mandate.ApprovalToolCall {
		line("to", a.Actor)
	}
	line("server", a.Server)
	line("tool", a.Tool)
	line("scope", a.Scope)
	line("audience", strings.Join(a.Audience, " "))
	line("why", a.Reason)
	line("approvers", strings.Join(a.Approvers, ", "))
	line("expires", a.ExpiresAt.Format(time.RFC3339))
	if !a.DecidedAt.IsZero() {
		line("decided", a.DecidedAt.Format(time.RFC3339)+" by "+a.DecidedBy)
	}
	line("note", a.Note)
	if a.Action == mandate.ApprovalToolCall {
		about := fmt.Sprintf("%d bytes as sent", a.ArgumentsBytes)
		if len(a.Secrets) > 0 {
			about += "; secrets masked: " + strings.Join(a.Secrets, ", ")
		}
		if a.ArgumentsShortened {
			about += fmt.Sprintf("; SHORTENED to %d bytes: what is not shown is not checked, deny if you need to see it", len(a.Arguments))
		}
		line("arguments", about)
	}
	tw.Flush()
	if len(a.Arguments) > 0 {
		var out bytes.Buffer
		if json.Indent(&out, a.Arguments, "    ", "  ") != nil {
			out.Reset()
			out.Write(a.Arguments)
		}
		fmt.Fprintf(w, "    %s\n", printable(out.String()))
	}
}

// printable escapes what a terminal would act on or hide in s (control
// characters but newline and tab, format characters such as bidi
// overrides, invalid UTF-8), as \uXXXX: inside a JSON string that is the
// same text.
func printable(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\ufffd`)
		case r == '\n' || r == '\t' || unicode.IsGraphic(r):
			b.WriteRune(r)
		case r > 0xffff:
			r1, r2 := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, r1, r2)
		default:
			fmt.Fprintf(&b, `\u%04x`, r)
		}
		s = s[n:]
	}
	return b.String()
}

func (c *cli) approvalsDecide(args []string, approve bool) error {
	verb := "deny"
	if approve {
		verb = "approve"
	}
	fs := c.flags("approvals "+verb, "ID [--note TEXT] [--approver-token-file FILE]")
	note := fs.String("note", "", "why, recorded in the audit log")
	tokFile := fs.String("approver-token-file", "", "your approver credential (env MANDATE_APPROVER_TOKEN)")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	tok, err := approverToken(*tokFile)
	if err != nil {
		return err
	}
	if tok == "" {
		return fmt.Errorf("approvals %s: a person decides, with their approver credential: give --approver-token-file FILE or set MANDATE_APPROVER_TOKEN\nhint: the admin makes one with `mandate approver add EMAIL --out FILE`; the admin credential cannot decide", verb)
	}
	cl := &httpapi.Client{BaseURL: c.server, ApproverToken: tok}
	a, err := cl.Decide(c.ctx, pos[0], approve, *note)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(a)
	}
	fmt.Fprintf(c.stdout, "approval %s is %s by %s\n", a.ID, a.Status, a.DecidedBy)
	if approve {
		fmt.Fprintln(c.stdout, "the agent that asked can now repeat its request with approval_id; the approval allows that one request, once")
	}
	return nil
}

func (c *cli) task(args []string) error {
	if len(args) == 0 {
		return usageError{"task needs a subcommand: list, show"}
	}
	switch args[0] {
	case "list":
		return c.taskList(args[1:])
	case "show":
		return c.taskShow(args[1:])
	}
	return usageError{fmt.Sprintf("unknown task subcommand %q: use list or show", args[0])}
}

func (c *cli) taskList(args []string) error {
	fs := c.flags("task list", "[--limit N]")
	limit := fs.Int("limit", httpapi.DefaultTaskLimit, "how many of the most recent tasks")
	cl, _, err := c.adminCommand(fs, args, 0)
	if err != nil {
		return err
	}
	if *limit < 1 || *limit > mandate.MaxEventsPerQuery {
		return usageError{fmt.Sprintf("task list: --limit must be 1 to %d", mandate.MaxEventsPerQuery)}
	}
	tasks, err := cl.Tasks(c.ctx, *limit)
	if err != nil {
		return err
	}
	if c.json {
		if tasks == nil {
			tasks = []httpapi.TaskSummary{}
		}
		return c.printJSON(tasks)
	}
	if len(tasks) == 0 {
		fmt.Fprintln(c.stdout, "no tasks yet\nhint: a task starts with a root mandate: mandate token --agent NAME --key FILE --scope SCOPE")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TASK\tCREATED\tAGENT\tSUBJECT\tPURPOSE")
	for _, t := range tasks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Task, t.CreatedAt.Format("2006-01-02T15:04:05.000Z07:00"), shortAgent(t.Agent), t.Subject, t.Purpose)
	}
	return tw.Flush()
}

func (c *cli) taskShow(args []string) error {
	cl, pos, err := c.adminCommand(c.flags("task show", "ID"), args, 1)
	if err != nil {
		return err
	}
	t, err := cl.Task(c.ctx, pos[0])
	if err != nil {
		if mandate.ErrorCode(err) == mandate.ENOTFOUND {
			return fmt.Errorf("%s\nhint: `mandate task list` shows the recent tasks", mandate.ErrorMessage(err))
		}
		return err
	}
	if c.json {
		return c.printJSON(t)
	}
	fmt.Fprintf(c.stdout, "task %s  for %s", t.Task, t.Subject)
	if t.Purpose != "" {
		fmt.Fprintf(c.stdout, "  %q", t.Purpose)
	}
	fmt.Fprintf(c.stdout, "  %s\n", t.CreatedAt.Format("2006-01-02T15:04:05.000Z07:00"))
	drawTree(c.stdout, t)
	return nil
}

// drawTree draws a task's mandates as `tree` draws directories: each node
// is `m_… agent  scopes  ttl  status`.
func drawTree(w io.Writer, t *httpapi.TaskResponse) {
	byID := make(map[string]*httpapi.TaskNode, len(t.Nodes))
	for i := range t.Nodes {
		byID[t.Nodes[i].Mandate] = &t.Nodes[i]
	}
	children := map[string][]string{}
	hasParent := map[string]bool{}
	for _, e := range t.Edges {
		if byID[e.From] != nil && byID[e.To] != nil {
			children[e.From] = append(children[e.From], e.To)
			hasParent[e.To] = true
		}
	}
	line := func(n *httpapi.TaskNode) string {
		s := fmt.Sprintf("%s  %s  %s  %s  %s", n.Mandate, shortAgent(n.Agent), n.Scope, formatTTL(n.ExpiresAt.Sub(n.IssuedAt)), n.Status)
		if n.Approval != "" {
			s += "  approved:" + n.Approval
		}
		return s
	}
	var walk func(id, indent string, last, root bool)
	walk = func(id, indent string, last, root bool) {
		n := byID[id]
		branch, next := "├── ", "│   "
		if last {
			branch, next = "└── ", "    "
		}
		if root {
			branch, next = "", ""
		}
		fmt.Fprintf(w, "%s%s%s\n", indent, branch, line(n))
		kids := children[id]
		for i, k := range kids {
			walk(k, indent+next, i == len(kids)-1, false)
		}
	}
	for _, n := range t.Nodes {
		if !hasParent[n.Mandate] {
			walk(n.Mandate, "", true, true)
		}
	}
}

// shortAgent names an agent for a person: the registered agent's name,
// an ephemeral one as …/sub/<id>.
func shortAgent(id string) string {
	if i := strings.LastIndex(id, mandate.EphemeralSeparator); i >= 0 {
		return "…" + id[i:]
	}
	return shortID(id)
}

// shortActor names the receiving agent of an approval: a registered agent
// by name, a new ephemeral one by the start of its key's thumbprint.
func shortActor(actor string) string {
	if jkt, ok := strings.CutPrefix(actor, "jkt:"); ok {
		return "ephemeral(key " + jkt[:min(8, len(jkt))] + "…)"
	}
	return shortAgent(actor)
}

// formatTTL prints a lifetime the way people write it: 30ms, 1.5s, 5m, 1h.
func formatTTL(d time.Duration) string {
	switch {
	case d > 0 && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d > 0 && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.Round(time.Millisecond).String()
}

func (c *cli) delegate(args []string) error {
	fs := c.flags("delegate", "--subject-token FILE|- (--key KEYFILE [--agent ID] | --actor-token FILE|-) [--parent-key FILE] [--scope S] [--resource R] [--ttl 30ms] [--wait 10s] [--approval-id ID] [--dpop]")
	subject := fs.String("subject-token", "", "the parent mandate: a file holding it, or - for standard input")
	keyFile := fs.String("key", "", "the sub-agent's private JWK: it signs the actor token (make one with `mandate keygen`)")
	agent := fs.String("agent", "", "the registered sub-agent's name or SPIFFE ID; without it, a new ephemeral agent known by --key")
	actorTokenArg := fs.String("actor-token", "", "instead of --key: the actor token the sub-agent made for this parent (`mandate actor-token`), a file or -")
	parentKey := fs.String("parent-key", "", "the parent holder's private JWK: signs the DPoP proof a DPoP-bound parent needs")
	useDPoP := fs.Bool("dpop", false, "send a DPoP proof by --parent-key (the child is then bound to the sub-agent's key); implied by --parent-key")
	var scopes, resources stringList
	fs.Var(&scopes, "scope", "scopes to delegate (repeatable; default: all of the parent's)")
	fs.Var(&resources, "resource", "resource indicator, becomes aud, within the parent's (RFC 8707; repeatable)")
	ttl := fs.Duration("ttl", 0, "lifetime, in whole milliseconds (default: the server's, cut to the parent's expiry)")
	wait := fs.Duration("wait", 0, "if a person must approve, wait this long for the decision")
	approvalID := fs.String("approval-id", "", "the approval an earlier attempt was told to wait for")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	switch {
	case *subject == "" || (*keyFile == "") == (*actorTokenArg == ""):
		return usageError{"delegate: --subject-token and one of --key or --actor-token are required"}
	case *actorTokenArg != "" && *agent != "":
		return usageError{"delegate: --agent goes with --key; an actor token names its agent itself"}
	case *subject == "-" && *actorTokenArg == "-":
		return usageError{"delegate: only one of --subject-token and --actor-token can be read from standard input"}
	case *ttl < 0 || *ttl%time.Millisecond != 0:
		return usageError{"delegate: --ttl must be a whole number of milliseconds, e.g. 30ms or 5m"}
	case *wait < 0:
		return usageError{"delegate: --wait must not be negative"}
	case *useDPoP && *parentKey == "":
		return usageError{"delegate: --dpop needs --parent-key FILE, the parent holder's key, to sign the proof"}
	}
	parent, err := readToken(*subject, c.stdin)
	if err != nil {
		return err
	}
	req := httpapi.DelegateRequest{SubjectToken: parent, Scope: strings.Join(scopes, " "),
		Resources: resources, TTL: *ttl, ApprovalID: *approvalID}
	if *actorTokenArg != "" {
		if req.ActorToken, err = readToken(*actorTokenArg, c.stdin); err != nil {
			return err
		}
	} else {
		if req.ActorKey, _, err = readKeyFile(*keyFile); err != nil {
			return err
		}
		if req.ActorKey == nil {
			return fmt.Errorf("%s holds a public key only\nhint: --key needs the sub-agent's private JWK", *keyFile)
		}
	}
	if *parentKey != "" {
		if req.ParentKey, _, err = readKeyFile(*parentKey); err != nil {
			return err
		}
		if req.ParentKey == nil {
			return fmt.Errorf("%s holds a public key only\nhint: --parent-key needs the parent holder's private JWK", *parentKey)
		}
	} else if boundParent(parent) {
		return fmt.Errorf("the parent mandate is DPoP-bound: its holder must prove its key\nhint: add --parent-key FILE, the private JWK of the agent holding the parent mandate")
	}
	cl := &httpapi.Client{BaseURL: c.server}
	if *agent != "" {
		if req.ActorID, err = c.agentID(cl, *agent); err != nil {
			return err
		}
	}
	tok, err := c.untilApproved(*wait, req.ApprovalID, func(approvalID string, wait time.Duration) (*httpapi.TokenResponse, error) {
		req.ApprovalID, req.Wait = approvalID, wait
		return cl.Delegate(c.ctx, req)
	})
	if err != nil {
		return err
	}
	return c.printToken(tok)
}

// actorToken: `mandate actor-token --key KEYFILE --parent FILE|-|JTI
// [--agent NAME]`. The sub-agent signs its actor token for one delegation,
// from the parent mandate, and hands it to the agent delegating to it,
// which never holds the sub-agent's key (`mandate delegate --actor-token`).
func (c *cli) actorToken(args []string) error {
	fs := c.flags("actor-token", "--key KEYFILE --parent FILE|-|JTI [--agent NAME]")
	keyFile := fs.String("key", "", "the sub-agent's private JWK, which signs the token")
	parentArg := fs.String("parent", "", "the parent mandate the delegation is from (a file, - for standard input), or its jti")
	agent := fs.String("agent", "", "the registered sub-agent's name or SPIFFE ID; without it, a new ephemeral agent known by --key")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if *keyFile == "" || *parentArg == "" {
		return usageError{"actor-token: --key and --parent are required"}
	}
	parentID := *parentArg
	if !isMandateID(parentID) {
		parent, err := readToken(parentID, c.stdin)
		if err != nil {
			return err
		}
		if parentID, err = httpapi.MandateID(parent); err != nil {
			return err
		}
	}
	key, _, err := readKeyFile(*keyFile)
	if err != nil {
		return err
	}
	if key == nil {
		return fmt.Errorf("%s holds a public key only\nhint: --key needs the sub-agent's private JWK", *keyFile)
	}
	cl := &httpapi.Client{BaseURL: c.server}
	md, err := cl.Metadata(c.ctx)
	if err != nil {
		return err
	}
	id := ""
	if *agent != "" {
		if id, err = c.agentID(cl, *agent); err != nil {
			return err
		}
	}
	fmt.Fprintln(c.stdout, httpapi.ActorToken(key, id, parentID, md.Issuer, time.Now()))
	return nil
}

// isMandateID reports whether s has the form of a mandate's jti: m_ and
// 26 characters of Crockford base32.
func isMandateID(s string) bool {
	rest, ok := strings.CutPrefix(s, mandate.MandateIDPrefix)
	return ok && len(rest) == 26 && strings.Trim(rest, "0123456789ABCDEFGHJKMNPQRSTVWXYZ") == ""
}

// agentID returns the SPIFFE ID of the agent called name (or name itself,
// if it is one), in the server's trust domain.
func (c *cli) agentID(cl *httpapi.Client, name string) (string, error) {
	if strings.HasPrefix(name, "spiffe://") {
		return name, nil
	}
	md, err := cl.Metadata(c.ctx)
	if err != nil {
		return "", err
	}
	return mandate.AgentID(md.TrustDomain, name), nil
}

// printToken prints a mandate: the token alone, or the whole answer as
// JSON with --json.
func (c *cli) printToken(tok *httpapi.TokenResponse) error {
	if c.json {
		return c.printJSON(tok)
	}
	fmt.Fprintln(c.stdout, tok.AccessToken)
	return nil
}

// untilApproved sends a token request, and while a person's approval is
// pending, waits for it for up to wait: each attempt asks the server to
// hold the request (at most issuer.MaxWait), and attempts follow one
// another no faster than the server's polling interval. Past wait it
// fails, saying who must approve and how to go on.
func (c *cli) untilApproved(wait time.Duration, approvalID string, try func(approvalID string, wait time.Duration) (*httpapi.TokenResponse, error)) (*httpapi.TokenResponse, error) {
	deadline := time.Now().Add(wait)
	announced := false
	for {
		hold := min(time.Until(deadline), issuer.MaxWait)
		if hold < time.Millisecond {
			hold = 0
		}
		tok, err := try(approvalID, hold)
		var pe *httpapi.PendingError
		if !errors.As(err, &pe) {
			return tok, err
		}
		approvalID = pe.ApprovalID
		if !announced {
			fmt.Fprintf(c.stderr, "waiting for a person to decide approval %s (it times out in %v)\n", pe.ApprovalID, pe.ExpiresIn)
			announced = true
		}
		if time.Until(deadline) <= 0 {
			return nil, fmt.Errorf("%s\nhint: an approver runs `mandate approvals approve %s`; then run this command again with --approval-id %s (or give --wait 1m to wait here)",
				pe.Description, pe.ApprovalID, pe.ApprovalID)
		}
		select {
		case <-c.ctx.Done():
			return nil, fmt.Errorf("stopped waiting for approval %s\nhint: run this command again with --approval-id %s", pe.ApprovalID, pe.ApprovalID)
		case <-time.After(max(pe.Interval, time.Second)):
		}
	}
}

// boundParent reports whether a mandate, read without verifying it, says
// it is DPoP-bound: only to give a precise hint before asking the server.
func boundParent(token string) bool {
	jws, err := jose.Parse(token)
	if err != nil {
		return false
	}
	var c struct {
		Cnf *json.RawMessage `json:"cnf"`
	}
	return json.Unmarshal(jws.Payload, &c) == nil && c.Cnf != nil
}
