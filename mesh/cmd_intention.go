package mesh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/vmesh/vmesh/discovery"
)

const intentionUsage = `usage: vmesh intention create [-allow|-deny] [-description TEXT] [-meta KEY=VALUE]... SRC DST
       vmesh intention get SRC DST
       vmesh intention delete SRC DST
       vmesh intention list
       vmesh intention check SRC DST
SRC and DST are service names or * (any service). create replaces the
pair's intention if there is one; without -allow or -deny it allows, as
Consul's does. check exits 0 when allowed, 2 when denied.
Flags (--http-addr too) may come before or after the arguments.`

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

func runIntention(ctx context.Context, env *cliEnv, args []string) int {
	sub := ""
	if len(args) > 0 {
		sub, args = args[0], args[1:]
	}
	fs := newFlagSet("intention "+sub, env)
	addr := clientFlags(fs)
	var allow, deny bool
	var description string
	var meta stringList
	if sub == "create" {
		fs.BoolVar(&allow, "allow", false, "allow SRC to connect to DST (the default)")
		fs.BoolVar(&deny, "deny", false, "deny SRC connecting to DST")
		fs.StringVar(&description, "description", "", "a `description` stored with the intention")
		fs.Var(&meta, "meta", "`KEY=VALUE` metadata; repeatable")
	}
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitUsage
	}
	c := newAPIClient(*addr)
	fail := func(format string, a ...any) int {
		fmt.Fprintf(env.stderr, "vmesh intention %s: %s\n", sub, fmt.Sprintf(format, a...))
		return exitFailed
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(env.stderr, "vmesh intention %s: %s\n", sub, fmt.Sprintf(format, a...))
		return exitUsage
	}
	wantPair := sub == "create" || sub == "get" || sub == "delete" || sub == "check"
	switch {
	case wantPair && len(pos) == 2:
		if err := checkPair(pos[0], pos[1]); err != nil {
			return usageErr("%v", strings.ReplaceAll(err.Error(), "\n", "; "))
		}
	case sub == "list" && len(pos) == 0:
	default:
		fmt.Fprintln(env.stderr, intentionUsage)
		return exitUsage
	}
	switch sub {
	case "create":
		if allow && deny {
			return usageErr("-allow and -deny exclude each other")
		}
		action := discovery.IntentionActionAllow
		if deny {
			action = discovery.IntentionActionDeny
		}
		body := map[string]any{"SourceName": pos[0], "DestinationName": pos[1], "Action": action}
		if description != "" {
			body["Description"] = description
		}
		if len(meta) > 0 {
			m := map[string]string{}
			for _, kv := range meta {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usageErr("-meta %q is not KEY=VALUE", kv)
				}
				m[k] = v
			}
			body["Meta"] = m
		}
		if err := c.do(ctx, http.MethodPut, "/v1/connect/intentions/exact?"+pairQuery(pos[0], pos[1]), body, nil); err != nil {
			return fail("%v", err)
		}
		fmt.Fprintf(env.stdout, "Intention written: %s => %s (%s)\n", pos[0], pos[1], action)
		return exitOK
	case "get":
		var out json.RawMessage
		if err := c.do(ctx, http.MethodGet, "/v1/connect/intentions/exact?"+pairQuery(pos[0], pos[1]), nil, &out); err != nil {
			return fail("%v", err)
		}
		var v any
		json.Unmarshal(out, &v)
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintf(env.stdout, "%s\n", b)
		return exitOK
	case "delete":
		// The API deletes idempotently, as Consul's; the CLI says when
		// there was nothing to delete.
		var cur intentionView
		if err := c.do(ctx, http.MethodGet, "/v1/connect/intentions/exact?"+pairQuery(pos[0], pos[1]), nil, &cur); err != nil {
			if strings.Contains(err.Error(), "404") {
				return fail("no intention %s => %s", pos[0], pos[1])
			}
			return fail("%v", err)
		}
		if err := c.do(ctx, http.MethodDelete, "/v1/connect/intentions/exact?"+pairQuery(pos[0], pos[1]), nil, nil); err != nil {
			return fail("%v", err)
		}
		fmt.Fprintf(env.stdout, "Intention deleted: %s => %s\n", cur.SourceName, cur.DestinationName)
		return exitOK
	case "list":
		var out []intentionView
		if err := c.do(ctx, http.MethodGet, "/v1/connect/intentions", nil, &out); err != nil {
			return fail("%v", err)
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSource\tAction\tDestination\tPrecedence")
		for _, x := range out {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", x.ID, x.SourceName, x.Action, x.DestinationName, x.Precedence)
		}
		tw.Flush()
		return exitOK
	case "check":
		var out struct{ Allowed bool }
		if err := c.do(ctx, http.MethodGet, "/v1/connect/intentions/check?"+pairQuery(pos[0], pos[1]), nil, &out); err != nil {
			return fail("%v", err)
		}
		if !out.Allowed {
			fmt.Fprintln(env.stdout, "Denied")
			return exitUsage // 2, as `consul intention check` exits when denied
		}
		fmt.Fprintln(env.stdout, "Allowed")
		return exitOK
	}
	fmt.Fprintln(env.stderr, intentionUsage)
	return exitUsage
}
