package cli

import (
	"context"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"
)

// member is a node as GET /v1/vmesh/members answers it.
type member struct {
	Name, ID, Addr, Role, Status string
	NodeRole                     string
	LastContactMs                int64
}

// membersCommand is `vmesh members`.
type membersCommand struct {
	*Flags
	http *httpFlags
}

func newMembers(env *Env) Command {
	c := &membersCommand{Flags: NewFlags(env, "members", "vmesh members [flags]",
		`Lists the cluster's nodes as the local agent sees them: address, raft role
(leader, voter, nonvoter), health and the leader's last contact.`)}
	c.http = c.clientFlags()
	return c
}

func (c *membersCommand) Synopsis() string { return "list the cluster's nodes" }

func (c *membersCommand) Run(ctx context.Context, args []string) int {
	pos, code, done := c.Parse(args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return c.UsageError("unexpected argument %q", pos[0])
	}
	api, code := c.http.client()
	if api == nil {
		return code
	}
	var members []member
	if err := api.do(ctx, http.MethodGet, "/v1/vmesh/members", nil, &members); err != nil {
		fmt.Fprintf(c.env.Stderr, "vmesh members: %v\n", err)
		return ExitFailed
	}
	tw := tabwriter.NewWriter(c.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Node\tAddress\tRole\tRaft\tHealth\tLast contact")
	for _, m := range members {
		last := "-"
		if m.LastContactMs > 0 || m.Role == "leader" {
			last = (time.Duration(m.LastContactMs) * time.Millisecond).String()
		}
		// Role is server or client; Raft is a server's raft state (a
		// client has none).
		role, raftState := m.NodeRole, m.Role
		if role == "" {
			role = "server"
		}
		if role == "client" || raftState == "none" {
			raftState = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.Addr, role, raftState, m.Status, last)
	}
	tw.Flush()
	return ExitOK
}
