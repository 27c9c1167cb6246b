package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mandatehq/mandate"
	"github.com/mandatehq/mandate/httpapi"
	"github.com/mandatehq/mandate/issuer"
	"github.com/mandatehq/mandate/jose"
	"github.com/mandatehq/mandate/verify"
)

// cli holds what every client command shares.
type cli struct {
	ctx            context.Context
	stdin          io.Reader
	stdout, stderr io.Writer
	server, data   string
	json           bool
}

// flags returns a flag set with the common client flags.
func (c *cli) flags(name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("mandate "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	server := os.Getenv("MANDATE_SERVER")
	if server == "" {
		server = "http://127.0.0.1:7676"
	}
	fs.StringVar(&c.server, "server", server, "server URL (env MANDATE_SERVER)")
	fs.StringVar(&c.data, "data", DefaultDataDir, "the server's data directory, where admin.token is (env MANDATE_ADMIN_TOKEN overrides)")
	fs.BoolVar(&c.json, "json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprintf(c.stderr, "usage: mandate %s %s\n", name, synopsis)
		fs.SetOutput(c.stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

func (c *cli) parse(fs *flag.FlagSet, args []string, want int) ([]string, error) {
	pos, err := parsePositional(fs, args, want)
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
	}
	return pos, err
}

// adminCommand parses the flags of an admin command with want positional
// arguments and returns a client with the admin credential.
func (c *cli) adminCommand(fs *flag.FlagSet, args []string, want int) (*httpapi.Client, []string, error) {
	pos, err := c.parse(fs, args, want)
	if err != nil {
		return nil, nil, err
	}
	cl, err := c.admin()
	return cl, pos, err
}

// admin returns a client with the admin credential.
func (c *cli) admin() (*httpapi.Client, error) {
	tok := os.Getenv("MANDATE_ADMIN_TOKEN")
	if tok == "" {
		path := filepath.Join(c.data, "admin.token")
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("no admin credential: cannot read %s\nhint: pass the server's --data DIR, or set MANDATE_ADMIN_TOKEN", path)
		}
		tok = strings.TrimSpace(string(b))
	}
	return &httpapi.Client{BaseURL: c.server, AdminToken: tok}, nil
}

func jsonEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}

func (c *cli) printJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// stringList is a repeatable flag; each value may hold several items
// separated by spaces or commas.
type stringList []string

func (s *stringList) String() string { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error {
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == ',' }) {
		*s = append(*s, f)
	}
	return nil
}

// writeKey generates an Ed25519 key and writes its private JWK (0600) to
// path, refusing to overwrite a file.
func writeKey(path string) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(jose.NewPrivateJWK(priv), "", "  ")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("%s exists: refusing to overwrite a key\nhint: choose another path, or remove the old key if you mean to replace it", path)
	}
	if err != nil {
		return nil, err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return nil, err
	}
	return priv, f.Close()
}

// readKeyFile reads a JWK file: the private key if it holds one, and the
// public key in any case.
func readKeyFile(path string) (ed25519.PrivateKey, ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	k, err := jose.ParseJWK(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v\nhint: give a JWK file as written by `mandate keygen`", path, err)
	}
	if k.D != "" {
		priv, err := k.PrivateKey()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %v", path, err)
		}
		return priv, priv.Public().(ed25519.PublicKey), nil
	}
	pub, err := k.PublicKey()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v\nhint: Mandate agent keys are Ed25519 (kty OKP, crv Ed25519)", path, err)
	}
	return nil, pub, nil
}

func (c *cli) keygen(args []string) error {
	fs := c.flags("keygen", "OUT")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	priv, err := writeKey(pos[0])
	if err != nil {
		return err
	}
	pub := jose.NewPublicJWK(priv.Public().(ed25519.PublicKey))
	if c.json {
		return c.printJSON(pub)
	}
	b, _ := json.Marshal(pub)
	fmt.Fprintf(c.stdout, "%s\n", b)
	fmt.Fprintf(c.stderr, "wrote the private key to %s (mode 0600); above is the public JWK\n", pos[0])
	return nil
}

func (c *cli) agentAdd(args []string) error {
	fs := c.flags("agent add", "NAME --owner EMAIL --ceiling SCOPE... (--pubkey FILE | --generate-key OUT) [--label L]...")
	owner := fs.String("owner", "", "the accountable human's email")
	var ceiling stringList
	fs.Var(&ceiling, "ceiling", "a scope the agent may ever hold (repeatable; or space/comma-separated)")
	pubFile := fs.String("pubkey", "", "the agent's Ed25519 public JWK file")
	maxDepth := fs.Int("max-depth", 0, fmt.Sprintf("longest delegation chain the agent may be part of (1 to %d; default: the server's)", mandate.MaxAgentDepth))
	var approval, approvers stringList
	fs.Var(&approval, "approval", "a scope whose delegation, by this agent or below it, needs a person's approval (repeatable)")
	fs.Var(&approvers, "approver", "a person (email) who may decide the approvals this agent's requests need, from --approval or from policy (repeatable; default: the owner)")
	var labels stringList
	fs.Var(&labels, "label", "a label policies know the agent by, e.g. team:payments (repeatable; or space/comma-separated)")
	genFile := fs.String("generate-key", "", "generate the agent's key and write its private JWK here (0600)")
	pos, err := c.parse(fs, args, -1)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usageError{"agent add: missing the agent's NAME (see mandate agent add -h)"}
	}
	// --ceiling SCOPE...: the words after NAME are more ceiling scopes.
	for _, extra := range pos[1:] {
		if _, err := mandate.ParseScope(extra); err != nil {
			return usageError{fmt.Sprintf("agent add: unexpected argument %q: give one NAME, and scopes after --ceiling", extra)}
		}
		ceiling = append(ceiling, extra)
	}
	switch {
	case *owner == "":
		return usageError{"agent add: --owner EMAIL is required (the human accountable for the agent)"}
	case len(ceiling) == 0:
		return usageError{"agent add: --ceiling SCOPE is required (e.g. --ceiling 'mcp:github:*')"}
	case (*pubFile == "") == (*genFile == ""):
		return usageError{"agent add: give exactly one of --pubkey FILE or --generate-key OUT"}
	case *maxDepth < 0 || *maxDepth > mandate.MaxAgentDepth:
		return usageError{fmt.Sprintf("agent add: --max-depth must be 1 to %d", mandate.MaxAgentDepth)}
	}
	for _, s := range approval {
		if _, err := mandate.ParseScope(s); err != nil {
			return err
		}
	}
	for _, ap := range approvers {
		if err := mandate.ValidateOwner(ap); err != nil {
			return fmt.Errorf("invalid approver %q\nhint: give a person's email address", ap)
		}
	}
	if err := mandate.ValidateAgentName(pos[0]); err != nil {
		return err
	}
	if err := mandate.ValidateAgentLabels(labels); err != nil {
		return usageError{fmt.Sprintf("agent add: %v\nhint: policies test labels with principal.labels.contains(\"…\"); write them like --label team:payments", err)}
	}
	for _, s := range ceiling {
		if _, err := mandate.ParseScope(s); err != nil {
			return err
		}
	}
	cl, err := c.admin()
	if err != nil {
		return err
	}
	var pub ed25519.PublicKey
	var generated ed25519.PrivateKey
	var keyOut *os.File
	if *pubFile != "" {
		if _, pub, err = readKeyFile(*pubFile); err != nil {
			return err
		}
	} else {
		// Claim the key file before registering, so that a path that cannot
		// be written fails before the agent exists; fill it in after, and
		// remove it if the registration is refused.
		keyOut, err = os.OpenFile(*genFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s exists: refusing to overwrite a key\nhint: choose another path, or use --pubkey %s", *genFile, *genFile)
		} else if err != nil {
			return fmt.Errorf("cannot write the key file: %w\nhint: nothing was registered; choose a writable path", err)
		}
		defer keyOut.Close()
		_, generated, _ = ed25519.GenerateKey(rand.Reader)
		pub = generated.Public().(ed25519.PublicKey)
	}
	a, err := cl.CreateAgent(c.ctx, httpapi.AgentRequest{Name: pos[0], Owner: *owner, Ceiling: ceiling, PublicKey: jose.NewPublicJWK(pub),
		MaxDepth: *maxDepth, Approval: approval, Approvers: approvers, Labels: labels})
	if err != nil {
		if keyOut != nil {
			keyOut.Close()
			os.Remove(*genFile)
		}
		return err
	}
	if generated != nil {
		b, _ := json.MarshalIndent(jose.NewPrivateJWK(generated), "", "  ")
		if _, err := keyOut.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("agent %s is registered, but its key could not be written: %w\nhint: disable it with `mandate agent disable %s` and register the agent under another name", a.Name, err, a.Name)
		}
		if err := keyOut.Sync(); err != nil {
			return fmt.Errorf("agent %s is registered, but its key could not be written: %w", a.Name, err)
		}
	}
	if c.json {
		return c.printJSON(a)
	}
	fmt.Fprintf(c.stdout, "registered %s\n", a.ID)
	printAgent(c.stdout, a)
	if generated != nil {
		fmt.Fprintf(c.stdout, "private key: %s (mode 0600)\n", *genFile)
	}
	return nil
}

func writeFileExcl(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func printAgent(w io.Writer, a *httpapi.AgentResponse) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  id:\t%s\n  owner:\t%s\n  ceiling:\t%s\n  key:\t%s\n  status:\t%s\n",
		a.ID, a.Owner, strings.Join(a.Ceiling, " "), a.KeyThumbprint, a.Status)
	if a.MaxDepth > 0 {
		fmt.Fprintf(tw, "  max depth:\t%d\n", a.MaxDepth)
	}
	if len(a.Approval) > 0 {
		who := a.Approvers
		if len(who) == 0 {
			who = []string{a.Owner + " (the owner)"}
		}
		fmt.Fprintf(tw, "  approval for:\t%s\n  approvers:\t%s\n", strings.Join(a.Approval, " "), strings.Join(who, ", "))
	}
	if len(a.Labels) > 0 {
		fmt.Fprintf(tw, "  labels:\t%s\n", strings.Join(a.Labels, " "))
	}
	fmt.Fprintf(tw, "  created:\t%s\n", a.CreatedAt.Format(time.RFC3339))
	tw.Flush()
}

func (c *cli) agentList(args []string) error {
	cl, _, err := c.adminCommand(c.flags("agent list", ""), args, 0)
	if err != nil {
		return err
	}
	agents, err := cl.Agents(c.ctx)
	if err != nil {
		return err
	}
	if c.json {
		if agents == nil {
			agents = []httpapi.AgentResponse{}
		}
		return c.printJSON(agents)
	}
	if len(agents) == 0 {
		fmt.Fprintln(c.stdout, "no agents registered\nhint: mandate agent add NAME --owner EMAIL --ceiling SCOPE --generate-key NAME.jwk")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tOWNER\tCEILING")
	for _, a := range agents {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Name, a.Status, a.Owner, strings.Join(a.Ceiling, " "))
	}
	return tw.Flush()
}

func (c *cli) agentShow(args []string) error {
	cl, pos, err := c.adminCommand(c.flags("agent show", "NAME"), args, 1)
	if err != nil {
		return err
	}
	a, err := cl.Agent(c.ctx, pos[0])
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(a)
	}
	fmt.Fprintln(c.stdout, a.Name)
	printAgent(c.stdout, a)
	return nil
}

func (c *cli) agentStatus(args []string, status mandate.AgentStatus) error {
	verb := "disable"
	if status == mandate.AgentActive {
		verb = "enable"
	}
	cl, pos, err := c.adminCommand(c.flags("agent "+verb, "NAME"), args, 1)
	if err != nil {
		return err
	}
	a, err := cl.SetAgentStatus(c.ctx, pos[0], status)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(a)
	}
	fmt.Fprintf(c.stdout, "agent %s is %s\n", a.Name, a.Status)
	return nil
}

func (c *cli) keysList(args []string) error {
	cl, _, err := c.adminCommand(c.flags("keys list", ""), args, 0)
	if err != nil {
		return err
	}
	keys, err := cl.Keys(c.ctx)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(keys)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tSTATUS\tCREATED\tRETIRED")
	for _, k := range keys {
		retired := "-"
		if k.RetiredAt != nil {
			retired = k.RetiredAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, k.Status, k.CreatedAt.Format(time.RFC3339), retired)
	}
	return tw.Flush()
}

func (c *cli) keysRotate(args []string) error {
	cl, _, err := c.adminCommand(c.flags("keys rotate", ""), args, 0)
	if err != nil {
		return err
	}
	k, err := cl.RotateKeys(c.ctx)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(k)
	}
	fmt.Fprintf(c.stdout, "new active key %s\nthe previous key stays in the JWKS until every mandate it signed has expired (%v)\n", k.ID, issuer.MaxTTL)
	return nil
}

func (c *cli) token(args []string) error {
	fs := c.flags("token", "--agent NAME --key FILE --scope SCOPES [--resource URI]... [--ttl-ms N] [--purpose TEXT] [--dpop] [--wait 10s] [--approval-id ID]")
	agent := fs.String("agent", "", "the agent's name or SPIFFE ID")
	keyFile := fs.String("key", "", "the agent's private JWK file")
	var scopes, resources stringList
	fs.Var(&scopes, "scope", "scopes to ask for (repeatable; or space-separated)")
	fs.Var(&resources, "resource", "resource indicator, becomes aud (RFC 8707; repeatable)")
	ttlMS := fs.Int64("ttl-ms", 0, "lifetime in milliseconds (10 to 3600000; default: the server's, 5 minutes)")
	purpose := fs.String("purpose", "", "the task's purpose, recorded with it")
	useDPoP := fs.Bool("dpop", false, "bind the mandate to the agent's key (RFC 9449 DPoP)")
	wait := fs.Duration("wait", 0, "if policy asks a person to approve the task, wait this long for the decision")
	approvalID := fs.String("approval-id", "", "the approval an earlier attempt was told to wait for")
	if _, err := c.parse(fs, args, 0); err != nil {
		return err
	}
	if *agent == "" || *keyFile == "" || len(scopes) == 0 {
		return usageError{"token: --agent, --key and --scope are required"}
	}
	if *wait < 0 {
		return usageError{"token: --wait must not be negative"}
	}
	priv, _, err := readKeyFile(*keyFile)
	if err != nil {
		return err
	}
	if priv == nil {
		return fmt.Errorf("%s holds a public key only\nhint: --key needs the agent's private JWK", *keyFile)
	}
	cl := &httpapi.Client{BaseURL: c.server}
	id := *agent
	if !strings.HasPrefix(id, "spiffe://") {
		md, err := cl.Metadata(c.ctx)
		if err != nil {
			return err
		}
		id = mandate.AgentID(md.TrustDomain, id)
	}
	req := httpapi.TokenRequest{
		AgentID: id, Key: priv, Scope: strings.Join(scopes, " "), Resources: resources,
		TTL: time.Duration(*ttlMS) * time.Millisecond, Purpose: *purpose, DPoP: *useDPoP,
	}
	tok, err := c.untilApproved(*wait, *approvalID, func(approvalID string, wait time.Duration) (*httpapi.TokenResponse, error) {
		req.ApprovalID, req.Wait = approvalID, wait
		return cl.Token(c.ctx, req)
	})
	if err != nil {
		return err
	}
	return c.printToken(tok)
}

// readToken returns the token given as an argument: the token itself, a
// file holding it, or "-" for standard input.
func readToken(arg string, stdin io.Reader) (string, error) {
	var b []byte
	var err error
	switch {
	case arg == "-":
		b, err = io.ReadAll(io.LimitReader(stdin, 64<<10))
	case strings.Count(arg, ".") == 2 && !strings.ContainsAny(arg, "/\\"):
		return arg, nil
	default:
		b, err = os.ReadFile(arg)
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%s is neither a mandate nor a file\nhint: pass the token, a file holding it, or - to read standard input", arg)
		}
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func (c *cli) verify(args []string) error {
	fs := c.flags("verify", "[--audience AUD] TOKEN|FILE|-")
	aud := fs.String("audience", "", "require this audience (default: any)")
	pos, err := c.parse(fs, args, 1)
	if err != nil {
		return err
	}
	tok, err := readToken(pos[0], c.stdin)
	if err != nil {
		return err
	}
	cl := &httpapi.Client{BaseURL: c.server}
	md, err := cl.Metadata(c.ctx)
	if err != nil {
		return err
	}
	v, err := verify.New(verify.Config{
		Issuer: md.Issuer, Keys: verify.NewJWKS(md.JWKSURI, verify.JWKSOptions{}),
		Audience: *aud, AnyAudience: *aud == "", IgnoreBinding: true,
	})
	if err != nil {
		return err
	}
	claims, err := v.Verify(c.ctx, tok)
	if err != nil {
		var ve *verify.Error
		if errors.As(err, &ve) {
			// The operator's own machine: the cause (a JWKS that cannot
			// be fetched, say) is theirs to read.
			if ve.Cause != nil {
				return fmt.Errorf("invalid mandate: %v (check: %s): %v", err, ve.Check, ve.Cause)
			}
			return fmt.Errorf("invalid mandate: %v (check: %s)", err, ve.Check)
		}
		return err
	}
	if c.json {
		return c.printJSON(claims)
	}
	left := time.Until(claims.Expiry.Time).Round(time.Millisecond)
	fmt.Fprintf(c.stdout, "valid mandate %s\n", claims.ID)
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  on behalf of:\t%s\n  held by:\t%s\n  chain:\t%s\n  task:\t%s\n  scope:\t%s\n  audience:\t%s\n  expires:\t%s (in %v)\n",
		claims.Subject, claims.ClientID, strings.Join(claims.Actor.Chain(), " <- "), claims.Task, claims.Scope,
		strings.Join(claims.Audience, " "), claims.Expiry.UTC().Format("2006-01-02T15:04:05.000Z07:00"), left)
	if claims.Confirm != nil {
		fmt.Fprintf(tw, "  bound to key:\t%s (DPoP: a resource server needs a proof by that key)\n", claims.Confirm.JKT)
	}
	return tw.Flush()
}
