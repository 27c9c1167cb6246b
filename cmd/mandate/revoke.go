package main

import (
	"fmt"
	"strings"

	"github.com/mandatehq/mandate/httpapi"
)

// revoke: `mandate revoke (--mandate ID | --agent NAME | --task ID)
// [--reason TEXT]`. The descendants of what it revokes are refused with it.
func (c *cli) revoke(args []string) error {
	fs := c.flags("revoke", "(--mandate ID | --agent NAME | --task ID) [--reason TEXT]")
	var req httpapi.RevocationRequest
	fs.StringVar(&req.Mandate, "mandate", "", "revoke this mandate and its descendants")
	fs.StringVar(&req.Agent, "agent", "", "revoke every live mandate this agent holds, and their descendants")
	fs.StringVar(&req.Task, "task", "", "revoke the task's whole tree of mandates")
	fs.StringVar(&req.Reason, "reason", "", "why, for the audit log")
	cl, _, err := c.adminCommand(fs, args, 0)
	if err != nil {
		return err
	}
	n := 0
	for _, v := range []string{req.Mandate, req.Agent, req.Task} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return usageError{"revoke: give exactly one of --mandate ID, --agent NAME or --task ID"}
	}
	out, err := cl.Revoke(c.ctx, req)
	if err != nil {
		return err
	}
	if c.json {
		return c.printJSON(out)
	}
	if len(out.Revoked) == 0 {
		fmt.Fprintln(c.stdout, "nothing to revoke: no live mandate")
		return nil
	}
	fmt.Fprintf(c.stdout, "revoked %d mandate(s), and with them their descendants: %s\n", len(out.Revoked), strings.Join(out.Revoked, " "))
	if f := out.InFlight; f != nil && f.Stopped+f.Unconfirmed > 0 {
		// The gateway waited out their calls being sent, up to its bound.
		fmt.Fprintf(c.stdout, "%d call(s) of theirs still being sent to an upstream were cut off (not sent whole)\n", f.Stopped+f.Unconfirmed)
	}
	return nil
}
