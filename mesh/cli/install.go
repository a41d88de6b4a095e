package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/vmesh/vmesh/mesh/config"
	"github.com/vmesh/vmesh/systemd"
)

// defaultAgentConfig is the /etc/vmesh/vmesh.hcl that `vmesh install`
// writes when there is none. It must stay a valid config: a test loads it.
const defaultAgentConfig = `# The vmesh agent's configuration; see docs/configuration.md.
# Written once by 'vmesh install', which never overwrites it.
# After a change: 'systemctl reload vmesh' re-reads service definitions;
# 'systemctl restart vmesh' applies everything else.

data_dir     = "` + config.DefaultDataDir + `"
services_dir = "` + config.DefaultServicesDir + `"   # *.hcl / *.json service files

# node_name   = "web-01"       # default: the host name
# datacenter  = "dc1"
# bind_addr   = "10.0.0.5"     # cluster port (7400); default 0.0.0.0, advertising the first private IP
# client_addr = "127.0.0.1"    # HTTP API (8500) and other local listeners
# log_level   = "info"

# A new cluster starts on ONE host, which creates the cluster CA and
# elects itself:
#
# bootstrap = true
#
# There, make a join token for each other host: vmesh token create
# (one join within 1h; -uses N, -ttl D for more). Copy it to the host in
# a file only root can read (install -m 600), never on a command line.
#
# Every other host joins through any member, either at its first start:
#
# join       = "10.0.0.1:7400"
# token_file = "/etc/vmesh/join-token"
#
# or, with neither bootstrap nor join set, the agent starts outside any
# cluster and waits for: vmesh join 10.0.0.1:7400 -token-file FILE
# (or with the token in VMESH_JOIN_TOKEN).
# Once in a cluster, a restart rejoins it by itself; 'vmesh leave' leaves.

# ACLs are on and deny what no rule allows (see docs/acl.md). After the
# first server is up: vmesh acl bootstrap (prints the management token,
# once), then make a token per team or service. Requests carry a token in
# X-Consul-Token; the CLI reads VMESH_HTTP_TOKEN or -token-file.
acl {
  enabled        = true
  default_policy = "deny"
  # tokens {
  #   default = "..."   # the token of requests without one, and of DNS
  # }
}
`

// installFlags are the flags install and uninstall share.
type installFlags struct {
	dryRun  bool
	prefix  string
	bin     string
	timeout time.Duration
}

func (f *installFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.dryRun, "dry-run", false, "print every file it would write and every command it would run; change nothing")
	fs.StringVar(&f.prefix, "prefix", "", "write files under `DIR` instead of / and run no commands (packaging)")
	fs.StringVar(&f.bin, "bin", systemd.DefaultExecPath, "`path` of the vmesh binary the unit runs")
	fs.DurationVar(&f.timeout, "timeout", systemd.DefaultTimeout,
		"how long each command (useradd, systemctl ...) may take; 0: no limit (Ctrl-C still stops it)")
}

func (f *installFlags) installer(env *Env) (*systemd.Installer, error) {
	if f.timeout < 0 {
		return nil, fmt.Errorf("-timeout: must be 0 (no limit) or more, got %s", f.timeout)
	}
	in := systemd.NewInstaller(f.prefix, f.dryRun, env.Stdout)
	in.Timeout = f.timeout
	if f.timeout == 0 {
		in.Timeout = -1 // the Installer's "no bound"
	}
	return in, nil
}

func (f *installFlags) layout() systemd.Layout {
	return systemd.Layout{
		Unit:        systemd.UnitOptions{ExecPath: f.bin, ConfigPath: config.DefaultConfigFile},
		ServicesDir: config.DefaultServicesDir,
		DataDir:     config.DefaultDataDir,
		Config:      []byte(defaultAgentConfig),
	}
}

// needsRoot refuses a real install or uninstall by another user before it
// changes anything; --dry-run and --prefix need no root.
func (f *installFlags) needsRoot(env *Env, name string) bool {
	if f.dryRun || f.prefix != "" || os.Geteuid() == 0 {
		return false
	}
	fmt.Fprintf(env.Stderr, "vmesh %s: run it as root (or try --dry-run, or --prefix DIR)\n", name)
	return true
}

// installCommand is `vmesh install`.
type installCommand struct {
	*Flags
	f installFlags
}

func newInstall(env *Env) Command {
	c := &installCommand{Flags: NewFlags(env, "install", "vmesh install [flags]",
		`Installs vmesh.service, `+config.DefaultConfigFile+` (never overwritten),
`+config.DefaultServicesDir+`, `+config.DefaultDataDir+` and the vmesh system user. Needs root
unless --dry-run or --prefix. See docs/systemd.md.`)}
	c.f.register(c.FS)
	return c
}

func (c *installCommand) Synopsis() string {
	return "install vmesh.service, /etc/vmesh and the vmesh user (systemd)"
}

func (c *installCommand) Run(ctx context.Context, args []string) int {
	pos, code, done := c.Parse(args)
	if done {
		return code
	}
	if len(pos) > 0 {
		return c.UsageError("unexpected argument %q", pos[0])
	}
	if c.f.needsRoot(c.env, "install") {
		return ExitFailed
	}
	in, err := c.f.installer(c.env)
	if err != nil {
		return c.UsageError("%v", err)
	}
	if err := in.Install(ctx, c.f.layout()); err != nil {
		return installFailed(c.env, "install", err)
	}
	return ExitOK
}

func installFailed(env *Env, name string, err error) int {
	fmt.Fprintf(env.Stderr, "vmesh %s: %v\n", name, err)
	if errors.Is(err, systemd.ErrUnsupported) || errors.Is(err, systemd.ErrUnitOptions) {
		return ExitUsage
	}
	return ExitFailed
}
