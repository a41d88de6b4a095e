package config

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
)

// ErrArgvToken refuses a join token on the command line, where every user
// of the host reads it in ps and /proc.
var ErrArgvToken = errors.New("-token: a join token on the command line is visible to every user in ps; put it in a file only you can read and pass -token-file FILE, or set " + JoinTokenEnv)

// StringList is a repeatable string flag.
type StringList []string

func (s *StringList) String() string     { return strings.Join(*s, ",") }
func (s *StringList) Set(v string) error { *s = append(*s, v); return nil }

// agentFlag is one agent flag and the field it overrides. Exactly one of
// str, num and on is set; a flag changes its field only when it is given,
// so a file's value survives a flag left at its default.
type agentFlag struct {
	name, usage string
	str         func(*Config) *string
	num         func(*Config) *int
	on          func(*Config) *bool
	// def is a bool flag's default, shown in help (-proxy is on).
	def bool
}

// agentFlagTable is every agent flag besides -config and -dev, which
// change how the rest is read rather than one field.
var agentFlagTable = []agentFlag{
	{name: "bootstrap", usage: "bootstrap a new cluster with this node as its first voter (implies -server)", on: func(c *Config) *bool { return &c.Bootstrap }},
	{name: "server", usage: "be a server: a raft member holding the whole state; without it a joiner is a client, which keeps a streamed replica", on: func(c *Config) *bool { return &c.Server }},
	{name: "log-json", usage: "log in JSON", on: func(c *Config) *bool { return &c.LogJSON }},
	{name: "data-dir", usage: "data `dir` (default " + DefaultDataDir + ")", str: func(c *Config) *string { return &c.DataDir }},
	{name: "node", usage: "node `name` (default: the host name)", str: func(c *Config) *string { return &c.NodeName }},
	{name: "bind", usage: "`IP` of the cluster listener", str: func(c *Config) *string { return &c.BindAddr }},
	{name: "client", usage: "`IP` of every local listener (HTTP, DNS, admin, proxy; default 127.0.0.1)", str: func(c *Config) *string { return &c.ClientAddr }},
	{name: "http-addr", usage: "HTTP API `address` (default CLIENT:8500)", str: func(c *Config) *string { return &c.Addresses.HTTP }},
	{name: "datacenter", usage: "datacenter `name` (default dc1)", str: func(c *Config) *string { return &c.Datacenter }},
	{name: "log-level", usage: "debug, info, warn or error", str: func(c *Config) *string { return &c.LogLevel }},
	{name: "services-dir", usage: "`dir` of service definition files (default " + DefaultServicesDir + ")", str: func(c *Config) *string { return &c.ServicesDir }},
	{name: "cluster-port", usage: "cluster `port` (raft and RPC; default 7400)", num: func(c *Config) *int { return &c.Ports.Cluster }},
	{name: "join", usage: "join the cluster at this member's cluster `address` at start, with a token from -token-file or " + JoinTokenEnv, str: func(c *Config) *string { return &c.Join }},
	{name: "token-file", usage: "`file` holding the join token for -join (mode 0600; or set " + JoinTokenEnv + ")", str: func(c *Config) *string { return &c.TokenFile }},
	{name: "xds-addr", usage: "also serve xDS over TCP on this `address` (default: only the unix socket in the runtime dir)", str: func(c *Config) *string { return &c.Addresses.XDS }},
	{name: "admin-addr", usage: "admin `address`, serving /config_dump and /metrics (default CLIENT:15000)", str: func(c *Config) *string { return &c.Addresses.Admin }},
	{name: "dns-addr", usage: "DNS `address`, UDP and TCP (default CLIENT:8600)", str: func(c *Config) *string { return &c.Addresses.DNS }},
	{name: "capture", usage: "apply traffic capture (iptables, vmesh0) on start, remove it on stop; needs CAP_NET_ADMIN (docs/capture.md)", on: func(c *Config) *bool { return &c.Capture.Enabled }},
	{name: "access-log-dir", usage: "the only `dir` the proxy writes file access logs in (default " + DefaultAccessLogDir + "; -dev: DATA_DIR/" + DevAccessLogSubdir + ")", str: func(c *Config) *string { return &c.Telemetry.AccessLogDir }},
	{name: "proxy", def: true, usage: "run the in-process proxy, fed by this agent's xDS over its unix socket; -proxy=false to bring your own Envoy (docs/proxy.md)", on: func(c *Config) *bool { return &c.Proxy.Enabled }},
}

// AgentFlags are the agent's flags: defaults, then config files, then the
// flags that were given.
type AgentFlags struct {
	configs StringList
	dev     bool
	// argvToken is the refused -token: it exists to say why.
	argvToken *string
	// values hold each table flag's parsed value, by name.
	strs map[string]*string
	nums map[string]*int
	ons  map[string]*bool
}

// Register adds the agent's flags to fs.
func (f *AgentFlags) Register(fs *flag.FlagSet) {
	fs.Var(&f.configs, "config", "config `file or dir` (*.hcl, *.json); repeatable, later ones win")
	fs.BoolVar(&f.dev, "dev", false, "one node, data in a temp dir, every listener on 127.0.0.1")
	f.argvToken = fs.String("token", "", "refused: a token in argv shows in ps; use -token-file or "+JoinTokenEnv)
	f.strs, f.nums, f.ons = map[string]*string{}, map[string]*int{}, map[string]*bool{}
	for _, e := range agentFlagTable {
		switch {
		case e.str != nil:
			f.strs[e.name] = fs.String(e.name, "", e.usage)
		case e.num != nil:
			f.nums[e.name] = fs.Int(e.name, 0, e.usage)
		default:
			f.ons[e.name] = fs.Bool(e.name, e.def, e.usage)
		}
	}
}

// Build applies defaults, files and the flags set in fs (parsed after
// Register), then validates. Every error it returns is a configuration
// error (exit 2). It reads the files again on each call, which is what a
// reload wants.
func (f *AgentFlags) Build(fs *flag.FlagSet) (Config, error) {
	cfg := DefaultConfig()
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	if set["token"] {
		return cfg, ErrArgvToken
	}
	cfg.Dev = f.dev
	if f.dev {
		cfg.DataDir = ""
		cfg.Bootstrap = true
	} else {
		cfg.ServicesDir = DefaultServicesDir
	}
	if err := cfg.LoadFiles(f.configs); err != nil {
		return cfg, err
	}
	if f.dev && cfg.IntentionsDefault == "" {
		cfg.IntentionsDefault = IntentionsAllow // -dev allows unless a file says deny
	}
	for _, e := range agentFlagTable {
		if !set[e.name] {
			continue
		}
		switch {
		case e.str != nil:
			*e.str(&cfg) = *f.strs[e.name]
		case e.num != nil:
			*e.num(&cfg) = *f.nums[e.name]
		default:
			*e.on(&cfg) = *f.ons[e.name]
		}
	}
	if f.dev && !set["bind"] {
		// A dev agent keeps the cluster port on the address it serves on.
		cfg.BindAddr = "127.0.0.1"
		if set["client"] {
			cfg.BindAddr = cfg.ClientAddr
		}
	}
	if cfg.Join != "" && cfg.Token == "" && cfg.TokenFile == "" {
		cfg.Token = os.Getenv(JoinTokenEnv)
	}
	if f.dev && cfg.Join != "" {
		// A dev agent that joins another does not start a cluster of its own.
		cfg.Bootstrap = false
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}
