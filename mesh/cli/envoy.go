package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"

	"github.com/vmesh/vmesh/dataplane/xds"
)

// envoyCommand is `vmesh envoy bootstrap`. The agent renders the
// bootstrap: it knows where its xDS server listens, the CLI does not.
type envoyCommand struct {
	*Flags
	http        *httpFlags
	node, admin *string
	tcp         *bool
}

func newEnvoy(env *Env) Command {
	c := &envoyCommand{Flags: NewFlags(env, "envoy", "vmesh envoy bootstrap [flags]",
		`Prints an Envoy v3 bootstrap that takes everything over ADS from the local
agent, for running Envoy instead of the in-process proxy (-proxy=false).`)}
	c.http = c.clientFlags()
	c.node = c.FS.String("node", "", "the Envoy's xDS node `name`: this agent's node name (the default) makes it the host's mesh proxy")
	c.admin = c.FS.String("admin-bind", xds.DefaultEnvoyAdmin, "the Envoy's admin `address`")
	c.tcp = c.FS.Bool("tcp", false, "reach the agent over its TCP xDS address (--xds-addr) instead of its unix socket")
	return c
}

func (c *envoyCommand) Synopsis() string {
	return "print an Envoy bootstrap pointing at this agent (envoy bootstrap)"
}

func (c *envoyCommand) Run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] != "bootstrap" {
		return c.UsageError("want bootstrap")
	}
	pos, code, done := c.Parse(args[1:])
	if done {
		return code
	}
	if len(pos) > 0 {
		return c.UsageError("unexpected argument %q", pos[0])
	}
	if _, _, err := net.SplitHostPort(*c.admin); err != nil {
		fmt.Fprintf(c.env.Stderr, "vmesh envoy bootstrap: --admin-bind: %q is not host:port\n", *c.admin)
		return ExitUsage
	}
	q := url.Values{"admin": {*c.admin}}
	if *c.node != "" {
		q.Set("node", *c.node)
	}
	if *c.tcp {
		q.Set("tcp", strconv.FormatBool(true))
	}
	api, code := c.http.client()
	if api == nil {
		return code
	}
	var body json.RawMessage // printed as the agent rendered it
	if err := api.do(ctx, http.MethodGet, "/v1/vmesh/envoy/bootstrap?"+q.Encode(), nil, &body); err != nil {
		fmt.Fprintf(c.env.Stderr, "vmesh envoy bootstrap: %v\n", err)
		return ExitFailed
	}
	c.env.Stdout.Write(append(body, '\n'))
	return ExitOK
}
