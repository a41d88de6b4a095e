package cli

import (
	"context"
	"fmt"
)

// versionCommand is `vmesh version` (also `vmesh --version`).
type versionCommand struct{ *Flags }

func newVersion(env *Env) Command {
	return &versionCommand{NewFlags(env, "version", "vmesh version", "Prints vmesh's version as `vmesh <version>`.")}
}

func (c *versionCommand) Synopsis() string { return "print the version" }

func (c *versionCommand) Run(_ context.Context, args []string) int {
	if _, code, done := c.Parse(args); done {
		return code
	}
	fmt.Fprintf(c.env.Stdout, "vmesh %s\n", Version)
	return ExitOK
}
