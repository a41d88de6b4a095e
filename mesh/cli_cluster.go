package mesh

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"
)

func runJoin(ctx context.Context, env *cliEnv, args []string) int {
	fs := newFlagSet("join", env)
	addr := clientFlags(fs)
	token := fs.String("token", "", "join `token` from 'vmesh token create' on a member")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) != 1 || *token == "" {
		fmt.Fprintln(env.stderr, "usage: vmesh join ADDR -token T   (ADDR: a member's cluster address, e.g. 10.0.0.1:7400)")
		return exitUsage
	}
	c := newAPIClient(*addr)
	c.http.Timeout = 2 * time.Minute
	if err := c.do(ctx, http.MethodPut, "/v1/vmesh/join", map[string]string{"Addr": pos[0], "Token": *token}, nil); err != nil {
		fmt.Fprintf(env.stderr, "vmesh join: %v\n", err)
		return exitFailed
	}
	fmt.Fprintf(env.stdout, "Joined the cluster at %s\n", pos[0])
	return exitOK
}

func runLeave(ctx context.Context, env *cliEnv, args []string) int {
	fs := newFlagSet("leave", env)
	addr := clientFlags(fs)
	force := fs.Bool("force", false, "leave even if the voters left would be fewer than a quorum")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(env.stderr, "vmesh leave: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	path := "/v1/vmesh/leave"
	if *force {
		path += "?force"
	}
	c := newAPIClient(*addr)
	c.http.Timeout = 2 * time.Minute
	if err := c.do(ctx, http.MethodPut, path, nil, nil); err != nil {
		fmt.Fprintf(env.stderr, "vmesh leave: %v\n", err)
		return exitFailed
	}
	fmt.Fprintln(env.stdout, "Left the cluster; the agent is stopping")
	return exitOK
}

func runToken(ctx context.Context, env *cliEnv, args []string) int {
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprintln(env.stderr, "usage: vmesh token create [-ttl 24h]")
		return exitUsage
	}
	fs := newFlagSet("token create", env)
	addr := clientFlags(fs)
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid (0: forever)")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(env.stderr, "vmesh token: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	var out struct{ Token, ExpiresAt string }
	if err := newAPIClient(*addr).do(ctx, http.MethodPut, "/v1/vmesh/token?ttl="+url.QueryEscape(ttl.String()), nil, &out); err != nil {
		fmt.Fprintf(env.stderr, "vmesh token create: %v\n", err)
		return exitFailed
	}
	fmt.Fprintln(env.stdout, out.Token)
	if out.ExpiresAt != "" {
		fmt.Fprintf(env.stderr, "expires at %s\n", out.ExpiresAt)
	}
	return exitOK
}

func runMembers(ctx context.Context, env *cliEnv, args []string) int {
	fs := newFlagSet("members", env)
	addr := clientFlags(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(env.stderr, "vmesh members: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	var members []memberInfo
	if err := newAPIClient(*addr).do(ctx, http.MethodGet, "/v1/vmesh/members", nil, &members); err != nil {
		fmt.Fprintf(env.stderr, "vmesh members: %v\n", err)
		return exitFailed
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "Node\tAddress\tRole\tHealth\tLast contact")
	for _, m := range members {
		last := "-"
		if m.LastContactMs > 0 || m.Role == "leader" {
			last = (time.Duration(m.LastContactMs) * time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.Name, m.Addr, m.Role, m.Status, last)
	}
	tw.Flush()
	return exitOK
}
