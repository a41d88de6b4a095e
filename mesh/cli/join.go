package cli

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// joinCommand is `vmesh join ADDR -token T`.
type joinCommand struct {
	*Flags
	addr, token *string
}

func newJoin(env *Env) Command {
	c := &joinCommand{Flags: NewFlags(env, "join", "vmesh join [flags] ADDR",
		`Asks the local agent to join the cluster through ADDR, a member's cluster
address (e.g. 10.0.0.1:7400), with a join token from 'vmesh token create'.`)}
	c.addr = clientFlags(c.FS)
	c.token = c.FS.String("token", "", "join `token` from 'vmesh token create' on a member")
	return c
}

func (c *joinCommand) Synopsis() string { return "ask the local agent to join a cluster" }

func (c *joinCommand) Run(ctx context.Context, args []string) int {
	pos, code, done := c.Parse(args)
	if done {
		return code
	}
	if len(pos) != 1 || *c.token == "" {
		return c.UsageError("want one ADDR and -token")
	}
	api := newAPIClient(*c.addr)
	api.http.Timeout = 2 * time.Minute
	if err := api.do(ctx, http.MethodPut, "/v1/vmesh/join", map[string]string{"Addr": pos[0], "Token": *c.token}, nil); err != nil {
		fmt.Fprintf(c.env.Stderr, "vmesh join: %v\n", err)
		return ExitFailed
	}
	fmt.Fprintf(c.env.Stdout, "Joined the cluster at %s\n", pos[0])
	return ExitOK
}
