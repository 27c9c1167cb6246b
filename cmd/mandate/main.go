// Command mandate is the Mandate server and its command-line interface: run
// the server (`mandate serve`), register agents, rotate keys, get and verify
// mandates.
//
// Run `mandate help` for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/mandatehq/mandate"
)

const usage = `mandate: the security control plane for AI agents

usage: mandate <command> [arguments]

server:
  serve [--addr HOST:PORT] [--data DIR] [--policies DIR] [--trust-domain TD] [--issuer URL]
        [--demo [--demo-pace 10s]] [--max-depth N] [--approval-timeout 5m] [--mcp-upstream NAME=URL]...
        [--config mandate.yaml] [--mcp-stdio NAME='COMMAND ARGS']... [--http-upstream NAME=URL]...
        [--allow-untyped-client-assertions] [--upstream-timeout 30s] [--call-timeout 10m]
  demo [--data DIR] [--pace 400ms] [--json]    the story, narrated, on a server of its own

agents and keys (talk to a running server; --server URL, --data DIR):
  keygen OUT                                   make an Ed25519 key (private JWK, 0600)
  agent add NAME --owner EMAIL --ceiling SCOPE... (--pubkey FILE | --generate-key OUT)
            [--max-depth N] [--approval SCOPE]... [--approver EMAIL]... [--label L]...
  agent list | agent show NAME | agent disable NAME | agent enable NAME
  keys list | keys rotate

delegation and approvals:
  delegate --subject-token FILE|- (--key KEYFILE [--agent NAME] | --actor-token FILE|-)
           [--parent-key FILE] [--scope S] [--resource R] [--ttl 30ms] [--wait 10s] [--approval-id ID] [--dpop]
  actor-token --key KEYFILE --parent FILE|-|JTI [--agent NAME]
                                              as the sub-agent: its actor token for that one delegation
  approver add EMAIL [--out FILE] | approver list | approver disable EMAIL
  approvals list [--status S] [--task T] | approvals show ID   what is asked, arguments included
  approvals approve|deny ID [--note TEXT]     as a person: --approver-token-file FILE
                                              or MANDATE_APPROVER_TOKEN
  task list [--limit N] | task show ID        a task's delegation tree
  revoke (--mandate ID | --agent NAME | --task ID) [--reason TEXT]
                                              revoke, with every descendant
  alerts [-f] [-n N] [--task ID] [--agent NAME]  the monitor's alerts

audit log:
  audit tail [-f] [-n N] [--type T] [--task ID] [--agent NAME]
  audit show --task ID                        the task's events, as a tree of mandates
  audit export DIR                            copy the log (C2SP tlog-tiles) into DIR
  audit verify (--url URL | DIR) [--log-key FILE] [--state FILE]
  audit checkpoint                            sign a checkpoint now

MCP gateway (serve --mcp-upstream NAME=URL puts a server at /mcp/NAME, --http-upstream an API at /http/NAME/):
  tools list [--mcp-server NAME]              the tool definitions the gateway pinned
  tools diff SERVER TOOL                      a blocked tool: what changed, what was flagged
  tools approve SERVER TOOL --hash HASH       accept that definition and unblock the tool

policy (on files; the server reloads its --policies DIR by itself):
  policy check DIR                            parse and validate a policy directory
  policy test FILE [--policies DIR]           run a file of test cases; exit 1 if any fails
  policy explain [--policies DIR] --request FILE|-
                                              decide one request and say why, policy by policy

mandates:
  token --agent NAME --key FILE --scope SCOPES [--resource URI] [--ttl-ms N] [--purpose TEXT] [--dpop]
        [--wait 10s] [--approval-id ID]
  verify [--audience AUD] TOKEN|FILE|-

for curl and other clients of their own (each prints the JWT alone, for $(...)):
  assertion --key KEYFILE --agent NAME|SPIFFE-ID [--issuer URL | --server URL]
                                              a client assertion for the token endpoint (RFC 7523)
  dpop-proof --key KEYFILE --url URL [--method POST] [--ath-of TOKEN|FILE|-]
                                              a DPoP proof for one request (RFC 9449); --ath-of
                                              the mandate it goes with, for a resource

Every command that prints takes --json for machine-readable output.
Environment: MANDATE_SERVER (default http://127.0.0.1:7676), MANDATE_ADMIN_TOKEN,
MANDATE_APPROVER_TOKEN.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, the default again: a second one ends the
		// process at once, whatever is still shutting down.
		<-ctx.Done()
		stop()
	}()
	code := Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError is a mistake in the command line: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// Run runs the command line args and returns the exit status.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := dispatch(ctx, args, stdin, stdout, stderr)
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "mandate: %s\n", ue.msg)
		return 2
	}
	fmt.Fprintf(stderr, "mandate: %s\n", errorText(err))
	return 1
}

// errorText is the message of err with a hint where one helps. The CLI
// runs on the operator's machine: it says the cause too (the server only
// logs it, and never sends it).
func errorText(err error) string {
	var e *mandate.Error
	if !errors.As(err, &e) {
		return err.Error()
	}
	msg := e.Error()
	switch {
	case e.Code == mandate.EUNAVAILABLE && strings.Contains(msg, "cannot reach"):
		msg += "\nhint: start the server with `mandate serve`, or point --server (MANDATE_SERVER) at it"
	case e.Code == mandate.EUNAUTHORIZED && e.OAuth == "":
		msg += "\nhint: pass the server's --data DIR (it holds admin.token) or set MANDATE_ADMIN_TOKEN"
	}
	return msg
}

func dispatch(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	cmd, rest := args[0], args[1:]
	c := &cli{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	switch cmd {
	case "serve":
		return serve(ctx, rest, stdout, stderr)
	case "demo":
		return c.demo(rest)
	case "keygen":
		return c.keygen(rest)
	case "agent", "agents":
		if len(rest) == 0 {
			return usageError{"agent needs a subcommand: add, list, show, disable, enable"}
		}
		switch rest[0] {
		case "add":
			return c.agentAdd(rest[1:])
		case "list":
			return c.agentList(rest[1:])
		case "show":
			return c.agentShow(rest[1:])
		case "disable":
			return c.agentStatus(rest[1:], mandate.AgentDisabled)
		case "enable":
			return c.agentStatus(rest[1:], mandate.AgentActive)
		}
		return usageError{fmt.Sprintf("unknown agent subcommand %q: use add, list, show, disable or enable", rest[0])}
	case "keys":
		if len(rest) == 0 {
			return usageError{"keys needs a subcommand: list, rotate"}
		}
		switch rest[0] {
		case "list":
			return c.keysList(rest[1:])
		case "rotate":
			return c.keysRotate(rest[1:])
		}
		return usageError{fmt.Sprintf("unknown keys subcommand %q: use list or rotate", rest[0])}
	case "token":
		return c.token(rest)
	case "delegate":
		return c.delegate(rest)
	case "actor-token":
		return c.actorToken(rest)
	case "assertion":
		return c.assertion(rest)
	case "dpop-proof":
		return c.dpopProof(rest)
	case "approver", "approvers":
		return c.approverCmd(rest)
	case "approvals", "approval":
		return c.approvals(rest)
	case "task", "tasks":
		return c.task(rest)
	case "verify":
		return c.verify(rest)
	case "policy", "policies":
		return c.policy(rest)
	case "audit":
		return c.audit(rest)
	case "tools", "tool":
		return c.tools(rest)
	case "revoke":
		return c.revoke(rest)
	case "alerts", "alert":
		// The monitor's alerts: audit tail of the alert events.
		for _, a := range rest {
			if a == "--type" || strings.HasPrefix(a, "--type=") {
				return usageError{"alerts: lists alerts only; use `mandate audit tail --type T` for other events"}
			}
		}
		return c.auditTail(append(rest, "--type", mandate.EventAlert))
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	m := NewMain()
	m.Stdout, m.Stderr = stdout, stderr
	if err := m.ParseFlags(args); err != nil {
		return err
	}
	if m.Demo {
		// The demo's MCP servers behind the gateway, and its scenario in a
		// loop, for something to watch; its policies go into the data
		// directory, so it is claimed first.
		if err := m.claimDataDir(); err != nil {
			return err
		}
		_, stop, err := m.prepareDemo()
		if err != nil {
			m.lock.Release()
			return err
		}
		defer stop()
	}
	if err := m.Open(ctx); err != nil {
		return err
	}
	loop, stopLoop := context.WithCancel(ctx)
	looped := make(chan struct{})
	go func() {
		defer close(looped)
		if m.Demo && m.DemoPace > 0 {
			m.demoLoop(loop, m.DemoPace)
		}
	}()
	err := m.Wait(ctx)
	stopLoop()
	<-looped
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	return err
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments, and checks there are exactly want positionals
// (want < 0: any number). It returns the positionals through fs.Args order
// kept in positionals.
func parseInterleaved(fs *flag.FlagSet, args []string, want int) error {
	_, err := parsePositional(fs, args, want)
	return err
}

func parsePositional(fs *flag.FlagSet, args []string, want int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if want >= 0 && len(pos) != want {
		if len(pos) > want {
			return nil, usageError{fmt.Sprintf("%s: unexpected argument %q", fs.Name(), pos[want])}
		}
		return nil, usageError{fmt.Sprintf("%s: missing argument (see %s -h)", fs.Name(), fs.Name())}
	}
	return pos, nil
}
