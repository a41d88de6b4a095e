package mesh

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/vmesh/vmesh/systemd"
)

// defaultAgentConfig is the /etc/vmesh/vmesh.hcl that `vmesh install`
// writes when there is none. It must stay a valid config: a test loads it.
const defaultAgentConfig = `# The vmesh agent's configuration; see docs/configuration.md.
# Written once by 'vmesh install', which never overwrites it.
# After a change: 'systemctl reload vmesh' re-reads service definitions;
# 'systemctl restart vmesh' applies everything else.

data_dir     = "` + DefaultDataDir + `"
services_dir = "` + DefaultServicesDir + `"   # *.hcl / *.json service files

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
# There, make a join token for each other host: vmesh token create -ttl 1h
#
# Every other host joins through any member, either at its first start:
#
# join  = "10.0.0.1:7400"
# token = "vmesh1...."
#
# or, with neither bootstrap nor join set, the agent starts outside any
# cluster and waits for: vmesh join 10.0.0.1:7400 -token vmesh1....
# Once in a cluster, a restart rejoins it by itself; 'vmesh leave' leaves.
`

// installFlags are the flags install and uninstall share.
type installFlags struct {
	dryRun bool
	prefix string
	bin    string
}

func (f *installFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.dryRun, "dry-run", false, "print every file it would write and every command it would run; change nothing")
	fs.StringVar(&f.prefix, "prefix", "", "write files under `DIR` instead of / and run no commands (packaging)")
	fs.StringVar(&f.bin, "bin", systemd.DefaultExecPath, "`path` of the vmesh binary the unit runs")
}

func (f *installFlags) installer(env *cliEnv) *systemd.Installer {
	return systemd.NewInstaller(f.prefix, f.dryRun, env.stdout)
}

func (f *installFlags) layout() systemd.Layout {
	return systemd.Layout{
		Unit:        systemd.UnitOptions{ExecPath: f.bin, ConfigPath: DefaultConfigFile},
		ServicesDir: DefaultServicesDir,
		DataDir:     DefaultDataDir,
		Config:      []byte(defaultAgentConfig),
	}
}

// needsRoot refuses a real install or uninstall by another user before it
// changes anything; --dry-run and --prefix need no root.
func (f *installFlags) needsRoot(env *cliEnv, name string) bool {
	if f.dryRun || f.prefix != "" || os.Geteuid() == 0 {
		return false
	}
	fmt.Fprintf(env.stderr, "vmesh %s: run it as root (or try --dry-run, or --prefix DIR)\n", name)
	return true
}

func runInstall(ctx context.Context, env *cliEnv, args []string) int {
	fs := newFlagSet("install", env)
	var f installFlags
	f.register(fs)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(env.stderr, "vmesh install: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	if f.needsRoot(env, "install") {
		return exitFailed
	}
	if err := f.installer(env).Install(ctx, f.layout()); err != nil {
		return installFailed(env, "install", err)
	}
	return exitOK
}

func runUninstall(ctx context.Context, env *cliEnv, args []string) int {
	fs := newFlagSet("uninstall", env)
	var f installFlags
	f.register(fs)
	purge := fs.Bool("purge", false, "also remove "+DefaultServicesDir+", the config dir, "+DefaultDataDir+" (this node's raft data) and the vmesh user")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(pos) > 0 {
		fmt.Fprintf(env.stderr, "vmesh uninstall: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	if f.needsRoot(env, "uninstall") {
		return exitFailed
	}
	if err := f.installer(env).Uninstall(ctx, f.layout(), *purge); err != nil {
		return installFailed(env, "uninstall", err)
	}
	return exitOK
}

func installFailed(env *cliEnv, name string, err error) int {
	fmt.Fprintf(env.stderr, "vmesh %s: %v\n", name, err)
	if errors.Is(err, systemd.ErrUnsupported) || errors.Is(err, systemd.ErrUnitOptions) {
		return exitUsage
	}
	return exitFailed
}
