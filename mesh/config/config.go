package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/discovery/local"
)

// JoinTokenEnv is the environment variable that may hold the join token
// for -join: unlike argv, the environment is not shown to other users.
const JoinTokenEnv = "VMESH_JOIN_TOKEN"

// ReadJoinToken is the join token for Join: Token, or TokenFile's
// content, with ReadTokenFile's warning.
func (c *Config) ReadJoinToken() (token, warning string, err error) {
	if c.TokenFile == "" {
		return strings.TrimSpace(c.Token), "", nil
	}
	token, warning, err = ReadTokenFile(c.TokenFile)
	if err != nil {
		return "", "", fmt.Errorf("token_file: %w", err)
	}
	return token, warning, nil
}

// ReadTokenFile reads a join token from path. warning is non-empty when
// the file is readable by others than its owner: the token is a secret.
func ReadTokenFile(path string) (token, warning string, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		warning = fmt.Sprintf("the join token file %s has mode %04o: others on this host may read the token; chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	if token = strings.TrimSpace(string(b)); token == "" {
		return "", "", fmt.Errorf("%s is empty", path)
	}
	return token, warning, nil
}

// Config is the agent's configuration: DefaultConfig, then config files in
// the order given, then flags. Validate reports every problem at once.
type Config struct {
	NodeName string `hcl:"node_name"`
	// NodeID is Consul's node_id: the UUID a new node takes (raft's
	// server ID); unset, it makes a random one. It cannot change later.
	NodeID     string `hcl:"node_id"`
	Datacenter string `hcl:"datacenter"`
	DataDir    string `hcl:"data_dir"`
	BindAddr   string `hcl:"bind_addr"`
	ClientAddr string `hcl:"client_addr"`
	Bootstrap  bool   `hcl:"bootstrap"`
	// Server makes a joiner a server (a raft member); without it a joiner
	// is a client. Bootstrap implies it.
	Server      bool          `hcl:"server"`
	LogLevel    string        `hcl:"log_level"`
	LogJSON     bool          `hcl:"log_json"`
	ServicesDir string        `hcl:"services_dir"`
	Ports       Ports         `hcl:"ports"`
	Addresses   Addresses     `hcl:"addresses"`
	Raft        RaftTune      `hcl:"raft"`
	Cluster     Cluster       `hcl:"cluster"`
	Capture     CaptureConfig `hcl:"capture"`
	Proxy       ProxyConfig   `hcl:"proxy"`
	DNS         DNSOptions    `hcl:"dns"`
	ACL         ACLConfig     `hcl:"acl"`
	Checks      ChecksConfig  `hcl:"checks"`
	// Telemetry is distributed tracing (docs/observability.md).
	Telemetry TelemetryConfig `hcl:"telemetry"`
	// Runtime is the Go garbage collector's settings (runtime.go).
	Runtime RuntimeConfig `hcl:"runtime"`
	// Join is a member's cluster address to join at start when this node
	// has no cluster state yet, with the join token read from TokenFile,
	// or from the VMESH_JOIN_TOKEN environment variable (Build puts it in
	// Token), or given as Token in a config file only root can read.
	Join      string `hcl:"join"`
	Token     string `hcl:"token"`
	TokenFile string `hcl:"token_file"`

	// IntentionsDefault is "allow" or "deny" (unset: deny; -dev: allow):
	// what a connection that no intention matches gets.
	IntentionsDefault string `hcl:"intentions_default"`

	// NodeMeta is Consul's node_meta: key/value pairs on this node's
	// catalog entry (?node-meta= filters on them).
	NodeMeta map[string]string `hcl:"node_meta"`
	// CheckUpdateInterval is Consul's check_update_interval: how long a
	// check's output-only change waits before it is written through raft
	// (a status change is written at once); 0 writes every change.
	// Default 5m.
	CheckUpdateInterval time.Duration `hcl:"check_update_interval"`
	// EnableScriptChecks is Consul's enable_script_checks: the agent
	// accepts and runs script checks (Args, run as the agent's user)
	// from its HTTP API and its service files. EnableLocalScriptChecks
	// (Consul's enable_local_script_checks) allows them from the files
	// only. Both off by default: whoever may register a check would run
	// commands on the host. Only this local config turns them on.
	EnableScriptChecks      bool `hcl:"enable_script_checks"`
	EnableLocalScriptChecks bool `hcl:"enable_local_script_checks"`

	// Service and Services hold the service definitions of the file being
	// decoded; LoadFiles moves them, with their file, to ServiceFiles.
	Service  *discovery.ServiceRegistration  `hcl:"service"`
	Services []discovery.ServiceRegistration `hcl:"services"`

	// Dev is the --dev flag: one self-bootstrapping server, data in a
	// temp dir, listeners on loopback, intentions default-allow.
	Dev bool

	// services are the definitions found in config files, by file.
	services []local.FileDefinition
}

// Ports are the agent's listening ports.
type Ports struct {
	HTTP    int `hcl:"http"`
	Cluster int `hcl:"cluster"`
	// DNS: -1 turns the DNS server off.
	DNS int `hcl:"dns"`
}

// Addresses override the address of one listener (host:port).
type Addresses struct {
	HTTP string `hcl:"http"`
	// XDS is an optional TCP address for xDS (the unix socket is always
	// there); Admin overrides CLIENT:15000.
	XDS   string `hcl:"xds"`
	Admin string `hcl:"admin"`
	// DNS overrides CLIENT:8600.
	DNS string `hcl:"dns"`
}

// RaftTune tunes log compaction.
type RaftTune struct {
	SnapshotThreshold uint64        `hcl:"snapshot_threshold"`
	TrailingLogs      uint64        `hcl:"trailing_logs"`
	SnapshotInterval  time.Duration `hcl:"snapshot_interval"`
}

// Cluster configures membership.
type Cluster struct {
	// Voters caps the raft voters: 1, 3 or 5. Every other node is a
	// nonvoter that still replicates everything.
	Voters      int    `hcl:"voters"`
	TrustDomain string `hcl:"trust_domain"`
	// NodeTTL: a node silent this long is marked critical; ReapAfter: a
	// node critical this long is removed.
	NodeTTL           time.Duration `hcl:"node_ttl"`
	ReapAfter         time.Duration `hcl:"reap_after"`
	HeartbeatInterval time.Duration `hcl:"heartbeat_interval"`
	// NodeCertTTL is the lifetime of node certificates: this node asks
	// for it when it renews its own (at about half its life), and a
	// server grants at most its own. NodeCertGrace is how long after its
	// expiry a server still lets a node certificate renew itself (a node
	// that was away comes back by itself).
	NodeCertTTL   time.Duration `hcl:"node_cert_ttl"`
	NodeCertGrace time.Duration `hcl:"node_cert_grace"`
}

// Defaults, as the operator docs list them (Consul's ports where Consul
// has one, so its clients find the agent unconfigured).
const (
	DefaultHTTPPort    = 8500
	DefaultClusterPort = 7400
	DefaultDataDir     = "/var/lib/vmesh"
	DefaultConfigFile  = "/etc/vmesh/vmesh.hcl"
	DefaultServicesDir = "/etc/vmesh/services.d"
)

// DefaultConfig is the configuration before any file or flag.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	if host == "" {
		host = "vmesh"
	}
	return Config{
		NodeName:            host,
		Datacenter:          "dc1",
		DataDir:             DefaultDataDir,
		BindAddr:            "0.0.0.0",
		ClientAddr:          "127.0.0.1",
		LogLevel:            "info",
		Ports:               Ports{HTTP: DefaultHTTPPort, Cluster: DefaultClusterPort, DNS: DefaultDNSPort},
		DNS:                 defaultDNSOptions(),
		Checks:              defaultChecksConfig(),
		CheckUpdateInterval: defaultCheckUpdateInterval,
		Proxy:               ProxyConfig{Enabled: true},
		Telemetry:           TelemetryConfig{Tracing: TracingConfig{SampleRatio: DefaultSampleRatio}},
		Cluster: Cluster{
			Voters: 3, TrustDomain: "vmesh.local",
			NodeTTL: 10 * time.Second, ReapAfter: 72 * time.Hour, HeartbeatInterval: time.Second,
			NodeCertTTL: 24 * time.Hour, NodeCertGrace: 30 * 24 * time.Hour,
		},
	}
}

// HTTPAddr is where the HTTP API listens.
func (c *Config) HTTPAddr() string {
	if c.Addresses.HTTP != "" {
		return c.Addresses.HTTP
	}
	return net.JoinHostPort(c.ClientAddr, strconv.Itoa(c.Ports.HTTP))
}

// ClusterBind is where the cluster port listens.
func (c *Config) ClusterBind() string {
	return net.JoinHostPort(c.BindAddr, strconv.Itoa(c.Ports.Cluster))
}

// ClusterAddr is the address peers reach this agent's raft at.
func (c *Config) ClusterAddr() string {
	host := c.BindAddr
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = AdvertiseIP()
	}
	return net.JoinHostPort(host, strconv.Itoa(c.Ports.Cluster))
}

// AdvertiseIP picks the host's first private IPv4 address, as Consul does
// for a bind address of 0.0.0.0, or loopback when there is none.
func AdvertiseIP() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP.To4()); ok && ip.IsPrivate() {
					return ip.String()
				}
			}
		}
	}
	return "127.0.0.1"
}

// Validate reports every problem in the configuration, each naming its key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if strings.TrimSpace(c.NodeName) == "" {
		bad("node_name", "must not be empty")
	} else if strings.ContainsAny(c.NodeName, "/ \t\n") {
		bad("node_name", "%q may not contain '/' or white space", c.NodeName)
	}
	if c.Datacenter == "" {
		bad("datacenter", "must not be empty")
	}
	if c.NodeID != "" && !uuidRE.MatchString(c.NodeID) {
		bad("node_id", "%q is not a UUID (8-4-4-4-12 hex digits)", c.NodeID)
	}
	for _, p := range validateNodeMeta(c.NodeMeta) {
		bad("node_meta", "%s", p)
	}
	if c.DataDir == "" && !c.Dev {
		bad("data_dir", "must be set")
	}
	for _, p := range []struct {
		key  string
		port int
	}{{"ports.http", c.Ports.HTTP}, {"ports.cluster", c.Ports.Cluster}} {
		if p.port < 0 || p.port > 65535 {
			bad(p.key, "must be between 0 and 65535, got %d", p.port)
		}
	}
	for _, a := range []struct{ key, v string }{{"bind_addr", c.BindAddr}, {"client_addr", c.ClientAddr}} {
		if _, err := netip.ParseAddr(a.v); err != nil {
			bad(a.key, "%q is not an IP address", a.v)
		}
	}
	if c.Addresses.HTTP != "" {
		if _, err := netip.ParseAddrPort(c.Addresses.HTTP); err != nil {
			bad("addresses.http", "%q is not IP:port", c.Addresses.HTTP)
		}
	}
	switch strings.ToLower(c.LogLevel) {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	switch c.Cluster.Voters {
	case 1, 3, 5:
	default:
		bad("cluster.voters", "must be 1, 3 or 5, got %d", c.Cluster.Voters)
	}
	if c.Cluster.TrustDomain == "" || strings.ContainsAny(c.Cluster.TrustDomain, "/: ") || strings.ToLower(c.Cluster.TrustDomain) != c.Cluster.TrustDomain {
		bad("cluster.trust_domain", "%q is not a SPIFFE trust domain (lowercase letters, digits, dots, dashes)", c.Cluster.TrustDomain)
	}
	if c.Cluster.HeartbeatInterval <= 0 || c.Cluster.NodeTTL <= c.Cluster.HeartbeatInterval {
		bad("cluster.node_ttl", "must be longer than cluster.heartbeat_interval (%s), got %s", c.Cluster.HeartbeatInterval, c.Cluster.NodeTTL)
	}
	if c.Cluster.ReapAfter < c.Cluster.NodeTTL {
		bad("cluster.reap_after", "must be at least cluster.node_ttl, got %s", c.Cluster.ReapAfter)
	}
	// The same bounds as raft.MinNodeCertTTL and raft.MaxNodeCertTTL.
	if t := c.Cluster.NodeCertTTL; t < time.Minute || t > 8760*time.Hour {
		bad("cluster.node_cert_ttl", "must be between 1m and 8760h (a year; it is renewed at about half of it), got %s", t)
	}
	if g := c.Cluster.NodeCertGrace; g < time.Minute {
		bad("cluster.node_cert_grace", "must be at least 1m (how long after its expiry a node certificate may still renew itself), got %s", g)
	}
	switch {
	case c.Token != "" && c.TokenFile != "":
		bad("token_file", "give the join token once: token_file or token, not both")
	case c.Join != "" && c.Token == "" && c.TokenFile == "":
		bad("join", "needs a join token: -token-file FILE, the %s environment variable, or token_file in a config file", JoinTokenEnv)
	case c.Join == "" && (c.Token != "" || c.TokenFile != ""):
		bad("join", "a join token is given but join (the member to join) is not")
	}
	if c.TokenFile != "" {
		if _, err := os.Stat(c.TokenFile); err != nil {
			bad("token_file", "%v", err)
		}
	}
	if c.Join != "" {
		if _, _, err := net.SplitHostPort(c.Join); err != nil {
			bad("join", "%q is not host:port", c.Join)
		}
	}
	if c.Join != "" && c.Bootstrap {
		bad("bootstrap", "a node either bootstraps a new cluster or joins one, not both")
	}
	if c.Raft.SnapshotInterval < 0 {
		bad("raft.snapshot_interval", "must not be negative")
	}
	errs = append(errs, c.validateXDS()...)
	errs = append(errs, c.validateIntentions()...)
	errs = append(errs, c.validateProxy()...)
	errs = append(errs, c.validateDNS()...)
	errs = append(errs, c.validateCapture()...)
	errs = append(errs, c.validateACL()...)
	errs = append(errs, c.validateChecks()...)
	errs = append(errs, c.validateTelemetry()...)
	errs = append(errs, c.validateRuntime()...)
	return errors.Join(errs...)
}

// ServiceFiles are the service definitions found in the config files,
// each with the file it came from.
func (c *Config) ServiceFiles() []local.FileDefinition {
	return append([]local.FileDefinition(nil), c.services...)
}

// SetServiceFiles replaces the definitions from config files: a reload
// takes them from a freshly loaded Config.
func (c *Config) SetServiceFiles(defs []local.FileDefinition) {
	c.services = append([]local.FileDefinition(nil), defs...)
}

// Error marks a configuration problem, whether found while loading or by
// a subsystem at start: the agent exits with status 2 for it, not 1.
type Error struct{ Err error }

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Files expands paths: a file is itself; a directory gives its *.hcl and
// *.json files in name order, so operators order them with a prefix.
func Files(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("config %s: %w", p, err)
		}
		if !fi.IsDir() {
			out = append(out, p)
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return nil, fmt.Errorf("config dir %s: %w", p, err)
		}
		var names []string
		for _, e := range ents {
			ext := filepath.Ext(e.Name())
			if !e.IsDir() && (ext == ".hcl" || ext == ".json") {
				names = append(names, filepath.Join(p, e.Name()))
			}
		}
		sort.Strings(names)
		out = append(out, names...)
	}
	return out, nil
}

// LoadFiles decodes each file of paths (see Files) into c in order, so
// later files win; service definitions are kept with the file they came
// from. It reports the problems of every file, not only the first.
func (c *Config) LoadFiles(paths []string) error {
	files, err := Files(paths)
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range files {
		c.Service, c.Services = nil, nil
		if err := DecodeFile(f, c); err != nil {
			errs = append(errs, err)
			continue
		}
		c.services = append(c.services, collectServices(f, c.Service, c.Services)...)
	}
	c.Service, c.Services = nil, nil
	return errors.Join(errs...)
}

// IsServer says whether this agent is a server: -server, or -bootstrap
// (and so a -dev agent that joins no one).
func (c *Config) IsServer() bool { return c.Server || c.Bootstrap }

// Consul's limits on node_meta.
const (
	maxNodeMetaPairs    = 64
	maxNodeMetaKeyLen   = 128
	maxNodeMetaValueLen = 512
)

// validateNodeMeta applies Consul's node_meta rules; keys starting with
// "consul-" are Consul's and those starting with "vmesh-" vmesh's own.
func validateNodeMeta(meta map[string]string) []string {
	var out []string
	if len(meta) > maxNodeMetaPairs {
		out = append(out, fmt.Sprintf("%d pairs; at most %d", len(meta), maxNodeMetaPairs))
	}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case k == "":
			out = append(out, "a key is empty")
		case len(k) > maxNodeMetaKeyLen:
			out = append(out, fmt.Sprintf("key %q is longer than %d characters", k, maxNodeMetaKeyLen))
		case strings.HasPrefix(k, "consul-"), strings.HasPrefix(k, "vmesh-"):
			out = append(out, fmt.Sprintf("key %q: the consul- and vmesh- prefixes are reserved", k))
		}
		if len(meta[k]) > maxNodeMetaValueLen {
			out = append(out, fmt.Sprintf("the value of %q is longer than %d characters", k, maxNodeMetaValueLen))
		}
	}
	return out
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
