package cli

import (
	"context"
	"fmt"
)

// versionCommand is `vmesh version` (also `vmesh --version`).
type versionCommand struct{ *Flags }

func newVersion(env *Env) Command {
	return &versionCommand{NewFlags(env, "version", "vmesh version", `Prints vmesh's version as "vmesh <version>", then the commit it was built
from and the Go version that built it.`)}
}

func (c *versionCommand) Synopsis() string { return "print the version" }

func (c *versionCommand) Run(_ context.Context, args []string) int {
	if _, code, done := c.Parse(args); done {
		return code
	}
	b := Build()
	fmt.Fprintf(c.env.Stdout, "vmesh %s\n", b.Version)
	rev := b.Revision
	if b.Modified {
		rev += " (with uncommitted changes)"
	}
	if b.RevisionNote != "" {
		rev += " (" + b.RevisionNote + ")"
	}
	fmt.Fprintf(c.env.Stdout, "Revision %s\n", rev)
	fmt.Fprintf(c.env.Stdout, "Go %s %s\n", b.GoVersion, b.Platform)
	return ExitOK
}
