package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/vmesh/vmesh/mesh/config"
)

// validateCommand is `vmesh validate PATH...`: the checks an agent makes
// of its configuration at start, without starting one, so a change can be
// checked before `systemctl reload` or in CI.
type validateCommand struct{ *Flags }

func newValidate(env *Env) Command {
	return &validateCommand{NewFlags(env, "validate", "vmesh validate PATH...",
		`Checks agent config files and service files (a PATH is a file or a
directory of *.hcl and *.json, read in name order, later ones winning) as
the agent would at start: strict decoding, every setting, and every
service definition, including those in the services_dir the files name.
Prints every problem and exits 2, or prints "Configuration is valid."`)}
}

func (c *validateCommand) Synopsis() string {
	return "check config and service files without starting an agent"
}

func (c *validateCommand) Run(_ context.Context, args []string) int {
	paths, code, done := c.Parse(args)
	if done {
		return code
	}
	if len(paths) == 0 {
		return c.UsageError("want at least one PATH")
	}
	if err := c.check(paths); err != nil {
		fmt.Fprintf(c.env.Stderr, "vmesh validate: %v\n", err)
		return ExitUsage
	}
	fmt.Fprintln(c.env.Stdout, "Configuration is valid.")
	return ExitOK
}

// check reports every problem: a file that does not decode does not stop
// the checks of the others.
func (c *validateCommand) check(paths []string) error {
	cfg := config.DefaultConfig()
	var errs []error
	if err := cfg.LoadFiles(paths); err != nil {
		errs = append(errs, err)
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("invalid configuration:\n%w", err))
	}
	defs := cfg.ServiceFiles()
	fromDir, err := config.LoadServiceFiles(cfg.ServicesDir)
	errs = append(errs, err)
	defs = append(defs, fromDir...)
	if len(defs) > 0 {
		errs = append(errs, checkServices(defs))
	}
	return errors.Join(errs...)
}
