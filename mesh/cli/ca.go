package cli

import (
	"context"
	"fmt"
	"net/http"
	"text/tabwriter"
	"time"
)

// caCommand is `vmesh ca rotate | roots`.
type caCommand struct {
	*Flags
	http *httpFlags
}

// caRoots is GET /v1/connect/ca/roots as the CLI reads it.
type caRoots struct {
	ActiveRootID string
	TrustDomain  string
	Roots        []struct {
		ID        string
		Name      string
		Active    bool
		NotAfter  time.Time
		DropAfter *time.Time
	}
}

func newCA(env *Env) Command {
	c := &caCommand{Flags: NewFlags(env, "ca", "vmesh ca rotate | roots",
		`Manages the cluster CA through the local agent.

rotate  replaces the CA: the leader creates a new one in the same trust
        domain, signs its root with the current key (a cross-signed
        intermediate) and seals the new key to every server. The old root
        stays trusted until no certificate it signed can be valid; service
        certificates are reissued under the new CA at once, node
        certificates when they are renewed. Run it against a server.
roots   lists every root the cluster trusts, the active one first.`)}
	c.http = c.clientFlags()
	return c
}

func (c *caCommand) Synopsis() string { return "rotate the cluster CA, list its roots" }

func (c *caCommand) Run(ctx context.Context, args []string) int {
	sub, pos, code, done := c.ParseSub(args)
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
	api.http.Timeout = 2 * time.Minute
	var out caRoots
	switch sub {
	case "rotate":
		if err := api.do(ctx, http.MethodPut, "/v1/vmesh/ca/rotate", nil, &out); err != nil {
			fmt.Fprintf(c.env.Stderr, "vmesh ca rotate: %v\n", err)
			return ExitFailed
		}
		fmt.Fprintf(c.env.Stdout, "Rotated the cluster CA: the active root is now %s\n", out.ActiveRootID)
	case "roots":
		if err := api.do(ctx, http.MethodGet, "/v1/connect/ca/roots", nil, &out); err != nil {
			fmt.Fprintf(c.env.Stderr, "vmesh ca roots: %v\n", err)
			return ExitFailed
		}
	default:
		return c.UsageError("want rotate or roots")
	}
	tw := tabwriter.NewWriter(c.env.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tName\tState\tExpires\tTrusted until")
	for _, r := range out.Roots {
		state, until := "active", "-"
		if !r.Active {
			state = "previous"
			if r.DropAfter != nil {
				until = r.DropAfter.UTC().Format(time.RFC3339)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.ID, r.Name, state, r.NotAfter.UTC().Format(time.RFC3339), until)
	}
	tw.Flush()
	return ExitOK
}
