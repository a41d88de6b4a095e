package cli

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// leaveCommand is `vmesh leave`.
type leaveCommand struct {
	*Flags
	http  *httpFlags
	force *bool
}

func newLeave(env *Env) Command {
	c := &leaveCommand{Flags: NewFlags(env, "leave", "vmesh leave [flags]",
		`The local agent leaves the cluster gracefully and stops.`)}
	c.http = c.clientFlags()
	c.force = c.FS.Bool("force", false, "leave even if the voters left would be fewer than a quorum")
	return c
}

func (c *leaveCommand) Synopsis() string { return "the local agent leaves the cluster and stops" }

func (c *leaveCommand) Run(ctx context.Context, args []string) int {
	pos, code, done := c.Parse(args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return c.UsageError("unexpected argument %q", pos[0])
	}
	path := "/v1/vmesh/leave"
	if *c.force {
		path += "?force"
	}
	api, code := c.http.client()
	if api == nil {
		return code
	}
	api.http.Timeout = 2 * time.Minute
	if err := api.do(ctx, http.MethodPut, path, nil, nil); err != nil {
		fmt.Fprintf(c.env.Stderr, "vmesh leave: %v\n", err)
		return ExitFailed
	}
	fmt.Fprintln(c.env.Stdout, "Left the cluster; the agent is stopping")
	return ExitOK
}
