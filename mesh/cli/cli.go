package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Exit codes, the same for every command: scripts tell a refused request
// (1) from a mistake in how the command was called or configured (2).
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2 // bad flags, bad arguments, bad config
)

// Version is vmesh's version, set at build time with -ldflags
// "-X github.com/vmesh/vmesh/mesh/cli.Version=...". The agent reports it
// in the catalog too, so it lives here where both read it.
var Version = "0.1.0-dev"

// Command is one CLI command, in the shape of Consul's command/*: its own
// flag set, a one-line synopsis for the command list and a full help.
// Run takes the context so that SIGINT and SIGTERM end long-running
// commands (proxy, agent) and cancel a request in flight.
type Command interface {
	Run(ctx context.Context, args []string) int
	Synopsis() string
	Help() string
}

// Factory makes a command that prints to env.
type Factory func(env *Env) Command

// Env is what commands print to and the environment they read; tests
// fill it with buffers and a map.
type Env struct {
	Stdout, Stderr io.Writer
	// Getenv reads an environment variable; nil is os.Getenv.
	Getenv func(string) string
}

func (e *Env) getenv(name string) string {
	if e.Getenv == nil {
		return os.Getenv(name)
	}
	return e.Getenv(name)
}

// builtin are the commands the CLI has by itself; the agent command comes
// from the caller (Run's extra), because it is the composition root.
var builtin = map[string]Factory{
	"services":    newServices,
	"members":     newMembers,
	"join":        newJoin,
	"leave":       newLeave,
	"token":       newToken,
	"config":      newConfig,
	"envoy":       newEnvoy,
	"version":     newVersion,
	"validate":    newValidate,
	"redirect":    newRedirect,
	"install":     newInstall,
	"uninstall":   newUninstall,
	"intention":   newIntention,
	"proxy":       newProxy,
	"ca":          newCA,
	"force-leave": newForceLeave,
	"acl":         newACL,
}

// Run runs the CLI with args (os.Args: args[0] is the program) and
// returns the exit code. extra adds commands, the agent's among them.
func Run(ctx context.Context, args []string, env *Env, extra map[string]Factory) int {
	cmds := make(map[string]Factory, len(builtin)+len(extra))
	for n, f := range builtin {
		cmds[n] = f
	}
	for n, f := range extra {
		cmds[n] = f
	}
	if len(args) < 2 {
		fmt.Fprint(env.Stderr, usage(env, cmds))
		return ExitUsage
	}
	name, rest := args[1], args[2:]
	switch name {
	case "-h", "-help", "--help":
		fmt.Fprint(env.Stdout, usage(env, cmds))
		return ExitOK
	case "-version", "--version":
		name = "version"
	case "help":
		if len(rest) == 0 {
			fmt.Fprint(env.Stdout, usage(env, cmds))
			return ExitOK
		}
		f, ok := cmds[rest[0]]
		if !ok {
			fmt.Fprintf(env.Stderr, "vmesh help: unknown command %q\n\n%s", rest[0], usage(env, cmds))
			return ExitUsage
		}
		fmt.Fprint(env.Stdout, f(env).Help())
		return ExitOK
	}
	f, ok := cmds[name]
	if !ok {
		fmt.Fprintf(env.Stderr, "vmesh: unknown command %q\n\n%s", name, usage(env, cmds))
		return ExitUsage
	}
	cmd := f(env)
	// `vmesh services -h` must not take -h for a subcommand.
	if len(rest) > 0 && isHelpFlag(rest[0]) {
		fmt.Fprint(env.Stdout, cmd.Help())
		return ExitOK
	}
	return cmd.Run(ctx, rest)
}

func isHelpFlag(s string) bool { return s == "-h" || s == "-help" || s == "--help" }

func usage(env *Env, cmds map[string]Factory) string {
	var b strings.Builder
	b.WriteString("usage: vmesh <command> [flags] [args]\n\nCommands:\n")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  %-10s %s\n", n, cmds[n](env).Synopsis())
	}
	b.WriteString(`
Every flag works as -flag and --flag, before or after the arguments.
'vmesh help <command>' or 'vmesh <command> -h' shows a command's flags.
Commands that talk to an agent find it with --http-addr or VMESH_HTTP_ADDR.

Exit codes: 0 ok, 1 failed (the agent or the system refused),
2 usage or configuration error (bad flags, arguments or config files).
`)
	return b.String()
}
