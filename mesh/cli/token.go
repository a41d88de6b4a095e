package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// tokenCommand is `vmesh token create`.
type tokenCommand struct {
	*Flags
	addr *string
	ttl  *time.Duration
}

func newToken(env *Env) Command {
	c := &tokenCommand{Flags: NewFlags(env, "token", "vmesh token create [flags]",
		`Creates a single-use join token on the local agent, which must be a member
of a cluster. The token goes to stdout, its expiry to stderr.`)}
	c.addr = clientFlags(c.FS)
	c.ttl = c.FS.Duration("ttl", 24*time.Hour, "how long the token is valid (0: forever)")
	return c
}

func (c *tokenCommand) Synopsis() string { return "create join tokens" }

func (c *tokenCommand) Run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] != "create" {
		return c.UsageError("want create")
	}
	pos, code, done := c.Parse(args[1:])
	if done {
		return code
	}
	if len(pos) > 0 {
		return c.UsageError("unexpected argument %q", pos[0])
	}
	var out struct{ Token, ExpiresAt string }
	if err := newAPIClient(*c.addr).do(ctx, http.MethodPut, "/v1/vmesh/token?ttl="+url.QueryEscape(c.ttl.String()), nil, &out); err != nil {
		fmt.Fprintf(c.env.Stderr, "vmesh token create: %v\n", err)
		return ExitFailed
	}
	fmt.Fprintln(c.env.Stdout, out.Token)
	if out.ExpiresAt != "" {
		fmt.Fprintf(c.env.Stderr, "expires at %s\n", out.ExpiresAt)
	}
	return ExitOK
}
