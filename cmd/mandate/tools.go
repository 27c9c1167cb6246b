package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mandatehq/mandate"
)

// tools: the gateway's pinned tool definitions (docs/gateway.md, "Tool
// integrity").
func (c *cli) tools(args []string) error {
	if len(args) == 0 {
		return usageError{"tools needs a subcommand: list, diff, approve"}
	}
	switch args[0] {
	case "list":
		return c.toolsList(args[1:])
	case "diff", "show":
		return c.toolsDiff(args[1:])
	case "approve":
		return c.toolsApprove(args[1:])
	}
	return usageError{fmt.Sprintf("unknown tools subcommand %q: use list, diff or approve", args[0])}
}

func (c *cli) toolsList(args []string) error {
	fs := c.flags("tools list", "[--mcp-server NAME]")
	server := fs.String("mcp-server", "", "only the tools of this MCP server")
	cl, _, err := c.adminCommand(fs, args, 0)
	if err != nil {
		return err
	}
	list, err := cl.Tools(c.ctx, *server)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(list)
	}
	if len(list) == 0 {
		fmt.Fprintln(c.stdout, "no tools pinned yet: the gateway pins a server's tools when an agent first lists them")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tTOOL\tSTATUS\tHASH\tFIRST SEEN\tFINDINGS")
	for _, p := range list {
		findings := strings.Join(p.Findings, "; ")
		if findings == "" {
			findings = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", p.Server, p.Name, p.Status, p.Hash[:12], p.FirstSeen.Format(time.RFC3339), findings)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range list {
		if p.Status != mandate.ToolPinned {
			fmt.Fprintln(c.stdout, "\nblocked tools stay blocked until approved: `mandate tools diff SERVER TOOL`, then `mandate tools approve SERVER TOOL --hash HASH`")
			break
		}
	}
	return nil
}

// toolsDiff shows a tool's pinned definition and, for a changed one, what
// the server shows now, line by line.
func (c *cli) toolsDiff(args []string) error {
	cl, pos, err := c.adminCommand(c.flags("tools diff", "SERVER TOOL"), args, 2)
	if err != nil {
		return err
	}
	p, err := cl.Tool(c.ctx, pos[0], pos[1])
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(p)
	}
	fmt.Fprintf(c.stdout, "tool %s of %s: %s\n", p.Name, p.Server, p.Status)
	if len(p.Findings) > 0 {
		fmt.Fprintf(c.stdout, "findings: %s\n", strings.Join(p.Findings, "; "))
	}
	pinned := indentJSON(p.Definition)
	if p.Status != mandate.ToolChanged {
		fmt.Fprintf(c.stdout, "pinned definition (hash %s):\n%s\n", p.Hash, pinned)
		if p.Status == mandate.ToolFlagged {
			fmt.Fprintf(c.stdout, "to unblock it: mandate tools approve %s %s --hash %s\n", p.Server, p.Name, p.Hash)
		}
		return nil
	}
	fmt.Fprintf(c.stdout, "--- pinned %s\n+++ shown now %s\n", p.Hash, p.PendingHash)
	writeDiff(c.stdout, strings.Split(pinned, "\n"), strings.Split(indentJSON(p.PendingDefinition), "\n"))
	fmt.Fprintf(c.stdout, "to accept what is shown now: mandate tools approve %s %s --hash %s\n", p.Server, p.Name, p.PendingHash)
	return nil
}

func (c *cli) toolsApprove(args []string) error {
	fs := c.flags("tools approve", "SERVER TOOL --hash HASH")
	hash := fs.String("hash", "", "the definition you approve, as `mandate tools diff` shows it")
	cl, pos, err := c.adminCommand(fs, args, 2)
	if err != nil {
		return err
	}
	if *hash == "" {
		return usageError{"tools approve: --hash HASH is required: the definition you read with `mandate tools diff " + pos[0] + " " + pos[1] + "`"}
	}
	p, err := cl.ApproveTool(c.ctx, pos[0], pos[1], *hash)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(p)
	}
	fmt.Fprintf(c.stdout, "tool %s of %s is pinned to %s and may be used again\n", p.Name, p.Server, p.Hash)
	return nil
}

func indentJSON(b []byte) string {
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		return string(b)
	}
	return out.String()
}

// writeDiff prints the lines of a and b as a unified diff without context
// folding: lines only in a with "-", only in b with "+", common ones with
// " ", by their longest common subsequence (definitions are short).
func writeDiff(w interface{ Write([]byte) (int, error) }, a, b []string) {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			fmt.Fprintf(w, " %s\n", a[i])
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(w, "+%s\n", b[j])
			j++
		default:
			fmt.Fprintf(w, "-%s\n", a[i])
			i++
		}
	}
}
