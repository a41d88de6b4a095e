package cli

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/vmesh/vmesh/mesh/config"
)

// joinCommand is `vmesh join ADDR`, with the token from -token-file or
// VMESH_JOIN_TOKEN: never from argv, which every user of the host reads.
type joinCommand struct {
	*Flags
	http                 *httpFlags
	tokenFile, argvToken *string
}

func newJoin(env *Env) Command {
	c := &joinCommand{Flags: NewFlags(env, "join", "vmesh join [flags] ADDR",
		`Asks the local agent to join the cluster through ADDR, a member's cluster
address (e.g. 10.0.0.1:7400), with a join token from 'vmesh token create'.
The token is read from -token-file FILE (mode 0600) or from the
`+config.JoinTokenEnv+` environment variable; -token on the command line is
refused, because ps shows it to every user of the host.

When the agent enforces ACLs, the request carries an ACL token from
-http-token-file FILE or the variables every command reads
(`+TokenEnv+`, `+TokenFileEnv+`, `+ConsulTokenEnv+`,
`+ConsulTokenFileEnv+`). Here -token and -token-file mean the join token.`)}
	c.http = c.httpFlags("http-token", "http-token-file")
	c.tokenFile = c.FS.String("token-file", "", "`file` holding the join token (mode 0600); or set "+config.JoinTokenEnv)
	c.argvToken = c.FS.String("token", "", "refused: a token in argv shows in ps; use -token-file or "+config.JoinTokenEnv)
	return c
}

func (c *joinCommand) Synopsis() string { return "ask the local agent to join a cluster" }

func (c *joinCommand) Run(ctx context.Context, args []string) int {
	pos, code, done := c.Parse(args)
	if done {
		return code
	}
	if *c.argvToken != "" {
		fmt.Fprintf(c.env.Stderr, "vmesh join: %v\n", config.ErrArgvToken)
		return ExitUsage
	}
	if len(pos) != 1 {
		return c.UsageError("want one ADDR")
	}
	token := os.Getenv(config.JoinTokenEnv)
	if *c.tokenFile != "" {
		tok, warning, err := config.ReadTokenFile(*c.tokenFile)
		if err != nil {
			fmt.Fprintf(c.env.Stderr, "vmesh join: -token-file: %v\n", err)
			return ExitUsage
		}
		if warning != "" {
			fmt.Fprintf(c.env.Stderr, "vmesh join: warning: %s\n", warning)
		}
		token = tok
	}
	if token == "" {
		return c.UsageError("want a join token in -token-file FILE or %s", config.JoinTokenEnv)
	}
	api, code := c.http.client()
	if api == nil {
		return code
	}
	api.http.Timeout = 2 * time.Minute
	if err := api.do(ctx, http.MethodPut, "/v1/vmesh/join", map[string]string{"Addr": pos[0], "Token": token}, nil); err != nil {
		fmt.Fprintf(c.env.Stderr, "vmesh join: %v\n", err)
		return ExitFailed
	}
	fmt.Fprintf(c.env.Stdout, "Joined the cluster at %s\n", pos[0])
	return ExitOK
}
