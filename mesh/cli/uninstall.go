package cli

import (
	"context"

	"github.com/vmesh/vmesh/mesh/config"
)

// uninstallCommand is `vmesh uninstall`.
type uninstallCommand struct {
	*Flags
	f     installFlags
	purge *bool
}

func newUninstall(env *Env) Command {
	c := &uninstallCommand{Flags: NewFlags(env, "uninstall", "vmesh uninstall [flags]",
		`Stops and removes vmesh.service. --purge also removes the config, the
service files, this node's data and the vmesh user.`)}
	c.f.register(c.FS)
	c.purge = c.FS.Bool("purge", false, "also remove "+config.DefaultServicesDir+", the config dir, "+config.DefaultDataDir+" (this node's raft data) and the vmesh user")
	return c
}

func (c *uninstallCommand) Synopsis() string {
	return "remove vmesh.service; --purge also config, data and user"
}

func (c *uninstallCommand) Run(ctx context.Context, args []string) int {
	pos, code, done := c.Parse(args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return c.UsageError("unexpected argument %q", pos[0])
	}
	if c.f.needsRoot(c.env, "uninstall") {
		return ExitFailed
	}
	in, err := c.f.installer(c.env)
	if err != nil {
		return c.UsageError("%v", err)
	}
	if err := in.Uninstall(ctx, c.f.layout(), *c.purge); err != nil {
		return installFailed(c.env, "uninstall", err)
	}
	return ExitOK
}
