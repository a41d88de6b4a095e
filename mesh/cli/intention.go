package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/mesh/config"
)

// intentionView is what the CLI reads of an intention.
type intentionView struct {
	ID, SourceName, DestinationName, Action, Description string
	Precedence                                           int
}

func pairQuery(src, dst string) string {
	return url.Values{"source": {src}, "destination": {dst}}.Encode()
}

// checkPair validates SRC and DST as the API will, so a typo is a usage
// error before anything is sent.
func checkPair(src, dst string) error {
	var errs []error
	for _, p := range []struct{ name, v string }{{"SRC", src}, {"DST", dst}} {
		if _, err := discovery.ParseIntentionName(p.name, p.v); err != nil {
			errs = append(errs, errors.New(strings.TrimPrefix(err.Error(), discovery.ErrInvalid.Error()+": ")))
		}
	}
	return errors.Join(errs...)
}

// intentionCommand is `vmesh intention create | get | delete | list | check`.
type intentionCommand struct {
	*Flags
	http        *httpFlags
	allow, deny *bool
	description *string
	meta        config.StringList
}

func newIntention(env *Env) Command {
	c := &intentionCommand{Flags: NewFlags(env, "intention", `vmesh intention create [flags] SRC DST
       vmesh intention get [flags] SRC DST
       vmesh intention delete [flags] SRC DST
       vmesh intention list [flags]
       vmesh intention check [flags] SRC DST`,
		`SRC and DST are service names or * (any service). create replaces the
pair's intention if there is one; without -allow or -deny it allows, as
Consul's does. check exits 0 when allowed, 2 when denied. -allow, -deny,
-description and -meta are create's.`)}
	c.http = c.clientFlags()
	c.allow = c.FS.Bool("allow", false, "create: allow SRC to connect to DST (the default)")
	c.deny = c.FS.Bool("deny", false, "create: deny SRC connecting to DST")
	c.description = c.FS.String("description", "", "create: a `description` stored with the intention")
	c.FS.Var(&c.meta, "meta", "create: `KEY=VALUE` metadata; repeatable")
	return c
}

func (c *intentionCommand) Synopsis() string {
	return "create, delete, list and check intentions (service-to-service authorization)"
}

func (c *intentionCommand) Run(ctx context.Context, args []string) int {
	sub := ""
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	c.name = "intention " + sub
	pos, code, done := c.Parse(args)
	if done {
		return code
	}
	if sub != "create" {
		// create's flags mean nothing elsewhere: say so rather than ignore them.
		var stray []string
		c.FS.Visit(func(f *flag.Flag) {
			switch f.Name {
			case "allow", "deny", "description", "meta":
				stray = append(stray, "-"+f.Name)
			}
		})
		if len(stray) > 0 {
			return c.UsageError("%s only with create", strings.Join(stray, ", "))
		}
	}
	env := c.env
	fail := func(format string, a ...any) int {
		fmt.Fprintf(env.Stderr, "vmesh intention %s: %s\n", sub, fmt.Sprintf(format, a...))
		return ExitFailed
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(env.Stderr, "vmesh intention %s: %s\n", sub, fmt.Sprintf(format, a...))
		return ExitUsage
	}
	wantPair := sub == "create" || sub == "get" || sub == "delete" || sub == "check"
	switch {
	case wantPair && len(pos) == 2:
		if err := checkPair(pos[0], pos[1]); err != nil {
			return usageErr("%v", strings.ReplaceAll(err.Error(), "\n", "; "))
		}
	case sub == "list" && len(pos) == 0:
	default:
		return c.UsageError("want create, get, delete or check with SRC DST, or list")
	}
	api, code := c.http.client()
	if api == nil {
		return code
	}
	switch sub {
	case "create":
		if *c.allow && *c.deny {
			return usageErr("-allow and -deny exclude each other")
		}
		action := discovery.IntentionActionAllow
		if *c.deny {
			action = discovery.IntentionActionDeny
		}
		body := map[string]any{"SourceName": pos[0], "DestinationName": pos[1], "Action": action}
		if *c.description != "" {
			body["Description"] = *c.description
		}
		if len(c.meta) > 0 {
			m := map[string]string{}
			for _, kv := range c.meta {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageErr("-meta %q is not KEY=VALUE", kv)
				}
				m[k] = v
			}
			body["Meta"] = m
		}
		if err := api.do(ctx, http.MethodPut, "/v1/connect/intentions/exact?"+pairQuery(pos[0], pos[1]), body, nil); err != nil {
			return fail("%v", err)
		}
		fmt.Fprintf(env.Stdout, "Intention written: %s => %s (%s)\n", pos[0], pos[1], action)
		return ExitOK
	case "get":
		var out json.RawMessage
		if err := api.do(ctx, http.MethodGet, "/v1/connect/intentions/exact?"+pairQuery(pos[0], pos[1]), nil, &out); err != nil {
			return fail("%v", err)
		}
		var v any
		json.Unmarshal(out, &v)
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintf(env.Stdout, "%s\n", b)
		return ExitOK
	case "delete":
		// The API deletes idempotently, as Consul's; the CLI says when
		// there was nothing to delete.
		var cur intentionView
		if err := api.do(ctx, http.MethodGet, "/v1/connect/intentions/exact?"+pairQuery(pos[0], pos[1]), nil, &cur); err != nil {
			if strings.Contains(err.Error(), "404") {
				return fail("no intention %s => %s", pos[0], pos[1])
			}
			return fail("%v", err)
		}
		if err := api.do(ctx, http.MethodDelete, "/v1/connect/intentions/exact?"+pairQuery(pos[0], pos[1]), nil, nil); err != nil {
			return fail("%v", err)
		}
		fmt.Fprintf(env.Stdout, "Intention deleted: %s => %s\n", cur.SourceName, cur.DestinationName)
		return ExitOK
	case "list":
		var out []intentionView
		if err := api.do(ctx, http.MethodGet, "/v1/connect/intentions", nil, &out); err != nil {
			return fail("%v", err)
		}
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSource\tAction\tDestination\tPrecedence")
		for _, x := range out {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", x.ID, x.SourceName, x.Action, x.DestinationName, x.Precedence)
		}
		tw.Flush()
		return ExitOK
	case "check":
		var out struct{ Allowed bool }
		if err := api.do(ctx, http.MethodGet, "/v1/connect/intentions/check?"+pairQuery(pos[0], pos[1]), nil, &out); err != nil {
			return fail("%v", err)
		}
		if !out.Allowed {
			fmt.Fprintln(env.Stdout, "Denied")
			return ExitUsage // 2, as `consul intention check` exits when denied
		}
		fmt.Fprintln(env.Stdout, "Allowed")
		return ExitOK
	}
	return c.UsageError("unknown subcommand %q", sub)
}
