package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// forceLeaveCommand is `vmesh force-leave NODE`.
type forceLeaveCommand struct {
	*Flags
	http *httpFlags
}

func newForceLeave(env *Env) Command {
	c := &forceLeaveCommand{Flags: NewFlags(env, "force-leave", "vmesh force-leave [flags] NODE",
		`Removes NODE from the cluster: the leader revokes its node certificate,
takes it out of raft if it is a server, and deregisters it with its
services. NODE need not be running; it comes back only by joining again
with a new token. Use it for a host that is gone for good or no longer
trusted; a host that is only down needs nothing (it is reaped after
cluster.reap_after and comes back by itself). Run it against a server.`)}
	c.http = c.clientFlags()
	return c
}

func (c *forceLeaveCommand) Synopsis() string {
	return "remove a node from the cluster and revoke its certificate"
}

func (c *forceLeaveCommand) Run(ctx context.Context, args []string) int {
	pos, code, done := c.Parse(args)
	if done {
		return code
	}
	if len(pos) != 1 || pos[0] == "" {
		return c.UsageError("want one node name (see 'vmesh members')")
	}
	api, code := c.http.client()
	if api == nil {
		return code
	}
	api.http.Timeout = 2 * time.Minute
	if err := api.do(ctx, http.MethodPut, "/v1/agent/force-leave/"+url.PathEscape(pos[0]), nil, nil); err != nil {
		fmt.Fprintf(c.env.Stderr, "vmesh force-leave: %v\n", err)
		return ExitFailed
	}
	fmt.Fprintf(c.env.Stdout, "Removed node %s from the cluster and revoked its certificate\n", pos[0])
	return ExitOK
}
