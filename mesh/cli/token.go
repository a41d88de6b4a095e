package cli

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"
)

// tokenCommand is `vmesh token create|list|revoke`.
type tokenCommand struct {
	*Flags
	http *httpFlags
	ttl  *time.Duration
	uses *int
}

// joinToken is a join token as the agent shows it (never its secret).
type joinToken struct {
	ID                   string
	CreatedAt, ExpiresAt time.Time
	Uses, UsesLeft       int
	Revoked              bool
}

func newToken(env *Env) Command {
	c := &tokenCommand{Flags: NewFlags(env, "token", "vmesh token create [-ttl D] [-uses N] | list | revoke ID",
		`Manages join tokens on the local agent, which must be a member of a cluster.

create  makes a token that admits -uses joins (default one) until -ttl has
        passed (default 1h, at most 168h). The token goes to stdout, its ID,
        uses and expiry to stderr. Hand it over in a file of mode 0600 or in
        VMESH_JOIN_TOKEN, never on a command line.
list    shows every token: ID, created, expires, uses left, state.
revoke  makes the token ID admit no one from now on.`)}
	c.http = c.clientFlags()
	c.ttl = c.FS.Duration("ttl", time.Hour, "how long the token is valid (more than 0, at most 168h)")
	c.uses = c.FS.Int("uses", 1, "how many joins the token admits (1 to 1000)")
	return c
}

func (c *tokenCommand) Synopsis() string { return "create, list and revoke join tokens" }

func (c *tokenCommand) Run(ctx context.Context, args []string) int {
	sub, pos, code, done := c.ParseSub(args)
	if done {
		return code
	}
	switch sub {
	case "create", "list", "revoke":
	default:
		return c.UsageError("want create, list or revoke")
	}
	api, code := c.http.client()
	if api == nil {
		return code
	}
	switch sub {
	case "create":
		if len(pos) > 0 {
			return c.UsageError("unexpected argument %q", pos[0])
		}
		var out struct {
			Token string
			joinToken
		}
		q := url.Values{"ttl": {c.ttl.String()}, "uses": {strconv.Itoa(*c.uses)}}
		if err := api.do(ctx, http.MethodPut, "/v1/vmesh/token?"+q.Encode(), nil, &out); err != nil {
			fmt.Fprintf(c.env.Stderr, "vmesh token create: %v\n", err)
			return ExitFailed
		}
		fmt.Fprintln(c.env.Stdout, out.Token)
		fmt.Fprintf(c.env.Stderr, "token %s admits %d join(s), expires at %s\n", out.ID, out.UsesLeft, out.ExpiresAt.UTC().Format(time.RFC3339))
	case "list":
		if len(pos) > 0 {
			return c.UsageError("unexpected argument %q", pos[0])
		}
		var ts []joinToken
		if err := api.do(ctx, http.MethodGet, "/v1/vmesh/tokens", nil, &ts); err != nil {
			fmt.Fprintf(c.env.Stderr, "vmesh token list: %v\n", err)
			return ExitFailed
		}
		now := time.Now()
		tw := tabwriter.NewWriter(c.env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tCreated\tExpires\tUses left\tState")
		for _, t := range ts {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%s\n", t.ID, t.CreatedAt.UTC().Format(time.RFC3339), t.ExpiresAt.UTC().Format(time.RFC3339),
				t.UsesLeft, t.Uses, tokenState(t, now))
		}
		tw.Flush()
	case "revoke":
		if len(pos) != 1 {
			return c.UsageError("want one token ID (see 'vmesh token list')")
		}
		if err := api.do(ctx, http.MethodDelete, "/v1/vmesh/token/"+url.PathEscape(pos[0]), nil, nil); err != nil {
			fmt.Fprintf(c.env.Stderr, "vmesh token revoke: %v\n", err)
			return ExitFailed
		}
		fmt.Fprintf(c.env.Stdout, "Revoked join token %s\n", pos[0])
	default:
		return c.UsageError("want create, list or revoke")
	}
	return ExitOK
}

// tokenState is what a join with the token would meet, in the words of
// the leader's refusals.
func tokenState(t joinToken, now time.Time) string {
	switch {
	case t.Revoked:
		return "revoked"
	case !now.Before(t.ExpiresAt):
		return "expired"
	case t.UsesLeft < 1:
		return "used"
	}
	return "valid"
}
