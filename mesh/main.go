package mesh

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2 // bad flags, bad config
)

// command is one CLI command. Commands that talk to an agent do it through
// its HTTP API; none opens raft files itself.
type command struct {
	synopsis string
	run      func(ctx context.Context, env *cliEnv, args []string) int
}

// cliEnv is what commands print to and read from, so tests can drive them.
type cliEnv struct {
	stdout, stderr io.Writer
}

var commands = map[string]command{
	"agent":    {"run the vmesh agent", runAgent},
	"services": {"register, deregister and list services", runServices},
	"members":  {"list the cluster's nodes", runMembers},
	"join":     {"ask the local agent to join a cluster", runJoin},
	"leave":    {"the local agent leaves the cluster and stops", runLeave},
	"token":    {"create join tokens", runToken},
	"config":   {"write, read, list and delete config entries", runConfig},
	"envoy":    {"print an Envoy bootstrap pointing at this agent (envoy bootstrap)", runEnvoy},
	"version":  {"print the version", runVersion},
	"redirect": {"apply, remove or show traffic capture (iptables, vmesh0) without the agent", runRedirect},

	"install":   {"install vmesh.service, /etc/vmesh and the vmesh user (systemd)", runInstall},
	"uninstall": {"remove vmesh.service; --purge also config, data and user", runUninstall},
	"intention": {"create, delete, list and check intentions (service-to-service authorization)", runIntention},
	"proxy":     {"run the data plane alone, fed by an agent's xDS (--xds ADDR --node NAME)", runProxy},
}

// Main runs the vmesh CLI with args (os.Args) and returns the exit code.
// ctx ends on SIGINT or SIGTERM.
func Main(ctx context.Context, args []string) int {
	return run(ctx, args, &cliEnv{stdout: os.Stdout, stderr: os.Stderr})
}

func run(ctx context.Context, args []string, env *cliEnv) int {
	if len(args) < 2 || args[1] == "-h" || args[1] == "--help" || args[1] == "help" {
		usage(env.stderr)
		if len(args) < 2 {
			return exitUsage
		}
		return exitOK
	}
	cmd, ok := commands[args[1]]
	if !ok {
		fmt.Fprintf(env.stderr, "vmesh: unknown command %q\n\n", args[1])
		usage(env.stderr)
		return exitUsage
	}
	return cmd.run(ctx, env, args[2:])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: vmesh <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].synopsis)
	}
	fmt.Fprintln(w, "\nEvery flag works as -flag and --flag. Run 'vmesh <command> -h' for its flags.")
}

// newFlagSet returns a flag set that reports errors to env. Go's flag
// package takes -flag and --flag alike, so both spellings work.
func newFlagSet(name string, env *cliEnv) *flag.FlagSet {
	fs := flag.NewFlagSet("vmesh "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	return fs
}

// parseArgs parses flags anywhere among the arguments (Go's flag package
// stops at the first positional one), so `vmesh join ADDR -token T` works
// as the docs write it. It returns the positional arguments.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if rest[0] == "--" {
			return append(pos, rest[1:]...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runVersion(_ context.Context, env *cliEnv, _ []string) int {
	fmt.Fprintf(env.stdout, "vmesh %s\n", Version)
	return exitOK
}

// agentFlags are the agent's flags; only those set override the config.
type agentFlags struct {
	configs                        stringList
	dev, bootstrap, logJSON        bool
	dataDir, node, bind, client    string
	httpAddr, datacenter, logLevel string
	servicesDir, join, token       string
	clusterPort                    int
	xds                            xdsFlags     // xds.go
	dns                            dnsFlags     // dns.go
	capture                        captureFlags // capture.go
	proxy                          proxyFlags   // proxy.go
}

func (f *agentFlags) register(fs *flag.FlagSet) {
	fs.Var(&f.configs, "config", "config `file or dir` (*.hcl, *.json); repeatable, later ones win")
	fs.BoolVar(&f.dev, "dev", false, "one node, data in a temp dir, every listener on 127.0.0.1")
	fs.BoolVar(&f.bootstrap, "bootstrap", false, "bootstrap a new cluster with this node as its first voter")
	fs.BoolVar(&f.logJSON, "log-json", false, "log in JSON")
	fs.StringVar(&f.dataDir, "data-dir", "", "data `dir` (default "+DefaultDataDir+")")
	fs.StringVar(&f.node, "node", "", "node `name` (default: the host name)")
	fs.StringVar(&f.bind, "bind", "", "`IP` of the cluster listener")
	fs.StringVar(&f.client, "client", "", "`IP` of every local listener (HTTP, DNS, admin, proxy; default 127.0.0.1)")
	fs.StringVar(&f.httpAddr, "http-addr", "", "HTTP API `address` (default CLIENT:8500)")
	fs.StringVar(&f.datacenter, "datacenter", "", "datacenter `name` (default dc1)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error")
	fs.StringVar(&f.servicesDir, "services-dir", "", "`dir` of service definition files (default "+DefaultServicesDir+")")
	fs.IntVar(&f.clusterPort, "cluster-port", 0, "cluster `port` (raft and RPC; default 7400)")
	fs.StringVar(&f.join, "join", "", "join the cluster at this member's cluster `address` at start (needs -token)")
	fs.StringVar(&f.token, "token", "", "join `token` from 'vmesh token create'")
	f.xds.register(fs)
	f.dns.register(fs)
	f.capture.register(fs)
	f.proxy.register(fs)
}

// buildConfig applies defaults, files and set flags, then validates. Every
// error it returns is a configuration error (exit 2).
func (f *agentFlags) buildConfig(fs *flag.FlagSet) (Config, error) {
	cfg := DefaultConfig()
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	cfg.Dev = f.dev
	if f.dev {
		cfg.DataDir = ""
		cfg.Bootstrap = true
	} else {
		cfg.ServicesDir = DefaultServicesDir
	}
	if err := loadConfigFiles(&cfg, f.configs); err != nil {
		return cfg, err
	}
	if f.dev && cfg.IntentionsDefault == "" {
		cfg.IntentionsDefault = IntentionsAllow // -dev allows unless a file says deny
	}
	if set["data-dir"] {
		cfg.DataDir = f.dataDir
	}
	if set["node"] {
		cfg.NodeName = f.node
	}
	if set["bind"] {
		cfg.BindAddr = f.bind
	}
	if f.dev && !set["bind"] {
		cfg.BindAddr = "127.0.0.1"
	}
	if set["client"] {
		cfg.ClientAddr = f.client
		if !set["bind"] && f.dev {
			cfg.BindAddr = f.client
		}
	}
	if set["http-addr"] {
		cfg.Addresses.HTTP = f.httpAddr
	}
	if set["datacenter"] {
		cfg.Datacenter = f.datacenter
	}
	if set["log-level"] {
		cfg.LogLevel = f.logLevel
	}
	if set["log-json"] {
		cfg.LogJSON = f.logJSON
	}
	if set["bootstrap"] {
		cfg.Bootstrap = f.bootstrap
	}
	if set["services-dir"] {
		cfg.ServicesDir = f.servicesDir
	}
	if set["cluster-port"] {
		cfg.Ports.Cluster = f.clusterPort
	}
	if set["join"] {
		cfg.Join = f.join
	}
	if set["token"] {
		cfg.Token = f.token
	}
	if f.dev && cfg.Join != "" {
		// A dev agent that joins another does not start a cluster of its own.
		cfg.Bootstrap = false
	}
	f.xds.apply(set, &cfg)
	f.dns.apply(set, &cfg)
	f.capture.apply(set, &cfg)
	f.proxy.apply(set, &cfg)
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

func newLogger(cfg Config, w io.Writer) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func runAgent(ctx context.Context, env *cliEnv, args []string) int {
	fs := newFlagSet("agent", env)
	var f agentFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.stderr, "vmesh agent: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := f.buildConfig(fs)
	if err != nil {
		fmt.Fprintf(env.stderr, "vmesh agent: %v\n", err)
		return exitUsage
	}
	logger := newLogger(cfg, env.stderr)
	agent := NewAgent(cfg, logger, env.stdout)
	if err := agent.Start(ctx); err != nil {
		fmt.Fprintf(env.stderr, "vmesh agent: %v\n", err)
		var ce *ConfigError
		if errors.As(err, &ce) {
			return exitUsage
		}
		return exitFailed
	}
	sd := startNotify(agent, logger) // sd_notify: READY, STATUS, WATCHDOG (notify.go)
	defer sd.stop()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-agent.Left():
			logger.Info("left the cluster; stopping")
			sd.stop()
			if err := agent.Close(); err != nil {
				logger.Error("shutdown", "err", err)
				return exitFailed
			}
			return exitOK
		case <-ctx.Done():
			logger.Info("shutting down")
			sd.stop()
			if err := agent.Close(); err != nil {
				logger.Error("shutdown", "err", err)
				return exitFailed
			}
			return exitOK
		case <-hup:
			logger.Info("reloading configuration (SIGHUP)")
			sd.reloading()
			newCfg, err := f.buildConfig(fs)
			if err == nil {
				err = agent.Reload(ctx, newCfg)
			}
			if err != nil {
				// A bad file changes nothing: the running state stays.
				logger.Error("reload failed; keeping the running configuration", "err", err)
			}
			sd.reloaded(err)
		}
	}
}
