package cli

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/vmesh/vmesh/discovery/local"
	"github.com/vmesh/vmesh/mesh/config"
)

// servicesCommand is `vmesh services register FILE | deregister ID | list`.
type servicesCommand struct {
	*Flags
	http *httpFlags
}

func newServices(env *Env) Command {
	c := &servicesCommand{Flags: NewFlags(env, "services",
		"vmesh services register FILE | deregister ID | list [flags]",
		`Registers the services of a service file (the format of services.d:
service { ... } or services = [ ... ]) with the local agent, deregisters
one by ID, or lists the agent's services. A file is checked whole before
anything is registered, so a bad file registers nothing.`)}
	c.http = c.clientFlags()
	return c
}

func (c *servicesCommand) Synopsis() string { return "register, deregister and list services" }

func (c *servicesCommand) Run(ctx context.Context, args []string) int {
	sub, pos, code, done := c.ParseSub(args)
	if done {
		return code
	}
	env := c.env
	switch {
	case sub == "register" && len(pos) == 1, sub == "deregister" && len(pos) == 1, sub == "list" && len(pos) == 0:
	default:
		return c.UsageError("want register FILE, deregister ID or list")
	}
	api, code := c.http.client()
	if api == nil {
		return code
	}
	switch {
	case sub == "register" && len(pos) == 1:
		defs, err := config.ReadServiceFile(pos[0])
		if err != nil {
			fmt.Fprintf(env.Stderr, "vmesh services register: %v\n", err)
			return ExitUsage
		}
		if len(defs) == 0 {
			fmt.Fprintf(env.Stderr, "vmesh services register: %s defines no service\n", pos[0])
			return ExitUsage
		}
		// Validate all before registering any, so a bad file registers nothing.
		if err := checkServices(defs); err != nil {
			fmt.Fprintf(env.Stderr, "vmesh services register: %v\n", err)
			return ExitUsage
		}
		for _, d := range defs {
			if err := api.do(ctx, http.MethodPut, "/v1/agent/service/register", d.Service.ForAPI(), nil); err != nil {
				fmt.Fprintf(env.Stderr, "vmesh services register: %s: %v\n", d.Service.Name, err)
				return ExitFailed
			}
			id := d.Service.ID
			if id == "" {
				id = d.Service.Name
			}
			fmt.Fprintf(env.Stdout, "Registered service: %s\n", id)
		}
		return ExitOK
	case sub == "deregister" && len(pos) == 1:
		if err := api.do(ctx, http.MethodPut, "/v1/agent/service/deregister/"+pos[0], nil, nil); err != nil {
			fmt.Fprintf(env.Stderr, "vmesh services deregister: %v\n", err)
			return ExitFailed
		}
		fmt.Fprintf(env.Stdout, "Deregistered service: %s\n", pos[0])
		return ExitOK
	case sub == "list" && len(pos) == 0:
		var svcs map[string]struct {
			ID, Service, Address string
			Port                 int
			Tags                 []string
		}
		if err := api.do(ctx, http.MethodGet, "/v1/agent/services", nil, &svcs); err != nil {
			fmt.Fprintf(env.Stderr, "vmesh services list: %v\n", err)
			return ExitFailed
		}
		ids := make([]string, 0, len(svcs))
		for id := range svcs {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		tw := tabwriter.NewWriter(env.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tService\tAddress\tPort\tTags")
		for _, id := range ids {
			s := svcs[id]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", s.ID, s.Service, s.Address, s.Port, strings.Join(s.Tags, ","))
		}
		tw.Flush()
		return ExitOK
	}
	return c.UsageError("want register FILE, deregister ID or list")
}

// checkServices validates service definitions exactly as the agent will
// when it registers them (users, duplicate IDs, upstream ports), so
// `services register` and `validate` refuse what the agent would. The node
// name does not matter for validation.
func checkServices(defs []local.FileDefinition) error {
	_, err := local.BuildFileServices("local", defs)
	return err
}
