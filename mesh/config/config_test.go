package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

func parseAgentFlags(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(testkit.Writer(t))
	var f AgentFlags
	f.Register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parsing %v: %v", args, err)
	}
	return f.Build(fs)
}

func TestConfigFilesAndFlags(t *testing.T) {
	dir := t.TempDir()
	testkit.WriteFile(t, dir, "10-base.hcl", `
node_name  = "from-file"
datacenter = "east"
data_dir   = "/var/lib/elsewhere"
ports {
  http = 8501
}
raft {
  trailing_logs     = 99
  snapshot_interval = "30s"
}
service {
  name = "a"
  port = 1
}
`)
	testkit.WriteFile(t, dir, "20-override.json", `{"datacenter": "west", "LogLevel": "debug", "services": [{"name": "b", "port": 2}]}`)
	testkit.WriteFile(t, dir, "ignored.txt", "not a config file")

	cfg, err := parseAgentFlags(t, "-config", dir, "--node", "from-flag", "-client", "127.0.0.5")
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"node name (flag beats file)", cfg.NodeName, "from-flag"},
		{"datacenter (later file wins)", cfg.Datacenter, "west"},
		{"data dir", cfg.DataDir, "/var/lib/elsewhere"},
		{"log level (CamelCase key)", cfg.LogLevel, "debug"},
		{"http addr (client flag + file port)", cfg.HTTPAddr(), "127.0.0.5:8501"},
		{"trailing logs", cfg.Raft.TrailingLogs, uint64(99)},
		{"snapshot interval", cfg.Raft.SnapshotInterval, 30 * time.Second},
		{"services from both files", len(cfg.ServiceFiles()), 2},
		{"not bootstrapping by default", cfg.Bootstrap, false},
		{"services dir default", cfg.ServicesDir, DefaultServicesDir},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if cfg.ServiceFiles()[0].Service.Name != "a" || !strings.HasSuffix(cfg.ServiceFiles()[0].File, "10-base.hcl") || cfg.ServiceFiles()[0].Service.Line != 12 {
		t.Errorf("first service = %+v, want a from 10-base.hcl:12", cfg.ServiceFiles()[0])
	}
}

func TestConfigDev(t *testing.T) {
	cfg, err := parseAgentFlags(t, "-dev")
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Bootstrap || cfg.DataDir != "" || cfg.HTTPAddr() != "127.0.0.1:8500" || cfg.BindAddr != "127.0.0.1" || cfg.ServicesDir != "" {
		t.Fatalf("dev config = %+v; want bootstrap, temp data dir, everything on 127.0.0.1, no services dir", cfg)
	}
	cfg, err = parseAgentFlags(t, "--dev", "--client", "127.0.0.9")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPAddr() != "127.0.0.9:8500" || cfg.ClusterAddr() != "127.0.0.9:7400" {
		t.Fatalf("dev with -client: http %s cluster %s; want both on 127.0.0.9", cfg.HTTPAddr(), cfg.ClusterAddr())
	}
}

func TestConfigDevJoin(t *testing.T) {
	tokenFile := testkit.WriteFile(t, t.TempDir(), "token", "vmesh1.a.b."+strings.Repeat("0", 64))
	cfg, err := parseAgentFlags(t, "-dev", "-node", "two", "-join", "127.0.0.1:7400", "-token-file", tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bootstrap || !cfg.Dev || cfg.Join != "127.0.0.1:7400" {
		t.Fatalf("dev with -join = bootstrap %v, dev %v, join %q; want a dev agent that joins instead of bootstrapping", cfg.Bootstrap, cfg.Dev, cfg.Join)
	}
	if _, err := parseAgentFlags(t, "-bootstrap", "-join", "127.0.0.1:7400", "-token-file", tokenFile); err == nil || !strings.Contains(err.Error(), "bootstrap") {
		t.Fatalf("-bootstrap with -join = %v; want an error naming bootstrap", err)
	}
}

func TestConfigValidateReportsEverything(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NodeName = "has space"
	cfg.Ports.HTTP = 70000
	cfg.ClientAddr = "localhost"
	cfg.Addresses.HTTP = "nope"
	cfg.LogLevel = "loud"
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, key := range []string{"node_name", "ports.http", "client_addr", "addresses.http", "log_level"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("Validate error does not name %s:\n%v", key, err)
		}
	}
	if d := DefaultConfig(); d.Validate() != nil {
		t.Fatalf("DefaultConfig does not validate: %v", d.Validate())
	}
}

func TestProxyLeafCertTTL(t *testing.T) {
	dir := t.TempDir()
	good := testkit.WriteFile(t, dir, "good.hcl", "proxy {\n  leaf_cert_ttl = \"60s\"\n}\n")
	cfg, err := parseAgentFlags(t, "-dev", "-config", good)
	if err != nil {
		t.Fatalf("loading %s: %v", good, err)
	}
	if cfg.Proxy.LeafCertTTL != time.Minute {
		t.Fatalf("proxy.leaf_cert_ttl = %s, want 1m", cfg.Proxy.LeafCertTTL)
	}
	bad := testkit.WriteFile(t, dir, "bad.hcl", "proxy {\n  leaf_cert_ttl = \"5s\"\n}\n")
	_, err = parseAgentFlags(t, "-dev", "-config", bad)
	if err == nil || !strings.Contains(err.Error(), "proxy.leaf_cert_ttl") {
		t.Fatalf("a 5s leaf_cert_ttl: got %v, want an error naming proxy.leaf_cert_ttl", err)
	}
}

// TestNodeCertTTL: node_cert_ttl and node_cert_grace default to 24h and
// 30 days, take a minute (what a test of renewal needs), and are refused
// out of range with an error naming the key.
func TestNodeCertTTL(t *testing.T) {
	d := DefaultConfig()
	if d.Cluster.NodeCertTTL != 24*time.Hour || d.Cluster.NodeCertGrace != 30*24*time.Hour {
		t.Errorf("defaults: node_cert_ttl %s, node_cert_grace %s; want 24h and 720h", d.Cluster.NodeCertTTL, d.Cluster.NodeCertGrace)
	}
	dir := t.TempDir()
	good := testkit.WriteFile(t, dir, "good.hcl", "cluster {\n  node_cert_ttl   = \"1m\"\n  node_cert_grace = \"48h\"\n}\n")
	cfg, err := parseAgentFlags(t, "-dev", "-config", good)
	if err != nil {
		t.Fatalf("loading %s: %v", good, err)
	}
	if cfg.Cluster.NodeCertTTL != time.Minute || cfg.Cluster.NodeCertGrace != 48*time.Hour {
		t.Fatalf("node_cert_ttl %s, node_cert_grace %s; want 1m and 48h", cfg.Cluster.NodeCertTTL, cfg.Cluster.NodeCertGrace)
	}
	for _, tc := range []struct{ body, words string }{
		{"cluster {\n  node_cert_ttl = \"30s\"\n}\n", "cluster.node_cert_ttl: must be between 1m and 8760h"},
		{"cluster {\n  node_cert_ttl = \"9000h\"\n}\n", "cluster.node_cert_ttl: must be between 1m and 8760h"},
		{"cluster {\n  node_cert_grace = \"0s\"\n}\n", "cluster.node_cert_grace: must be at least 1m"},
	} {
		bad := testkit.WriteFile(t, dir, "bad.hcl", tc.body)
		_, err := parseAgentFlags(t, "-dev", "-config", bad)
		if err == nil || !strings.Contains(err.Error(), tc.words) {
			t.Errorf("%q: got %v, want an error naming %q", tc.body, err, tc.words)
		}
	}
}

// A join token never comes from argv: -token is refused, naming the two
// ways that do not show it in ps; the file and the environment work, and
// -join without a token says where to put one.
func TestConfigJoinToken(t *testing.T) {
	tok := "vmesh1.a.b." + strings.Repeat("0", 64)
	dir := t.TempDir()
	private := testkit.WriteFile(t, dir, "private", tok+"\n")
	if err := os.Chmod(private, 0o600); err != nil {
		t.Fatal(err)
	}
	shared := testkit.WriteFile(t, dir, "shared", tok)
	if err := os.Chmod(shared, 0o644); err != nil {
		t.Fatal(err)
	}

	_, err := parseAgentFlags(t, "-join", "127.0.0.1:7400", "-token", tok)
	if !errors.Is(err, ErrArgvToken) || !strings.Contains(err.Error(), "-token-file") || !strings.Contains(err.Error(), JoinTokenEnv) {
		t.Errorf("-token on argv = %v; want it refused, pointing at -token-file and %s", err, JoinTokenEnv)
	}
	if _, err := parseAgentFlags(t, "-dev", "-join", "127.0.0.1:7400"); err == nil ||
		!strings.Contains(err.Error(), "join: needs a join token: -token-file FILE, the "+JoinTokenEnv) {
		t.Errorf("-join without a token = %v; want an error naming the token sources", err)
	}
	if _, err := parseAgentFlags(t, "-dev", "-join", "127.0.0.1:7400", "-token-file", filepath.Join(dir, "nope")); err == nil ||
		!strings.Contains(err.Error(), "token_file:") {
		t.Errorf("a missing token file = %v; want an error naming token_file", err)
	}

	cfg, err := parseAgentFlags(t, "-dev", "-join", "127.0.0.1:7400", "-token-file", private)
	if err != nil {
		t.Fatal(err)
	}
	if got, warning, err := cfg.ReadJoinToken(); got != tok || warning != "" || err != nil {
		t.Errorf("ReadJoinToken from a 0600 file = %q, %q, %v; want the token, no warning", got, warning, err)
	}
	cfg.TokenFile = shared
	if got, warning, err := cfg.ReadJoinToken(); got != tok || !strings.Contains(warning, "0644") || err != nil {
		t.Errorf("ReadJoinToken from a 0644 file = %q, %q, %v; want the token and a warning naming the mode", got, warning, err)
	}

	t.Setenv(JoinTokenEnv, tok)
	cfg, err = parseAgentFlags(t, "-dev", "-join", "127.0.0.1:7400")
	if err != nil {
		t.Fatal(err)
	}
	if got, _, _ := cfg.ReadJoinToken(); got != tok {
		t.Errorf("token from %s = %q", JoinTokenEnv, got)
	}
}

// TestServerRole: -server or -bootstrap (and so -dev) make a server; a
// joiner without -server, -dev -join included, is a client.
func TestServerRole(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"-dev"}, true},
		{[]string{"-dev", "-join", "127.0.0.1:7400"}, false},
		{[]string{"-dev", "-join", "127.0.0.1:7400", "-server"}, true},
		{[]string{"-data-dir", dir, "-bootstrap"}, true},
		{[]string{"-data-dir", dir, "-join", "127.0.0.1:7400"}, false},
		{[]string{"-data-dir", dir, "-join", "127.0.0.1:7400", "-server"}, true},
		{[]string{"-data-dir", dir}, false},
	} {
		t.Setenv(JoinTokenEnv, "vmesh1.id.secret."+strings.Repeat("a", 64))
		cfg, err := parseAgentFlags(t, tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if cfg.IsServer() != tc.want {
			t.Errorf("%v: IsServer() = %v; want %v", tc.args, cfg.IsServer(), tc.want)
		}
	}
	f := filepath.Join(dir, "s.hcl")
	if err := os.WriteFile(f, []byte("server = true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err := parseAgentFlags(t, "-config", f, "-data-dir", dir); err != nil || !cfg.IsServer() {
		t.Errorf("server = true in a config file: IsServer() = %v, %v; want true", cfg.IsServer(), err)
	}
}

// The proxy's connection limits: read from the proxy block, and refused
// negative or with a per-listener limit above the global one, naming the
// keys.
func TestProxyConnectionLimits(t *testing.T) {
	dir := t.TempDir()
	good := testkit.WriteFile(t, dir, "good.hcl", "proxy {\n  max_connections = 5000\n  max_connections_per_listener = 2000\n}\n")
	cfg, err := parseAgentFlags(t, "-dev", "-config", good)
	if err != nil {
		t.Fatalf("loading %s: %v", good, err)
	}
	if cfg.Proxy.MaxConnections != 5000 || cfg.Proxy.MaxConnectionsPerListener != 2000 {
		t.Fatalf("limits %d, %d; want 5000, 2000", cfg.Proxy.MaxConnections, cfg.Proxy.MaxConnectionsPerListener)
	}
	for body, key := range map[string]string{
		"proxy {\n  max_connections = -1\n}\n":                                      "proxy.max_connections",
		"proxy {\n  max_connections_per_listener = -5\n}\n":                         "proxy.max_connections_per_listener",
		"proxy {\n  max_connections = 10\n  max_connections_per_listener = 20\n}\n": "proxy.max_connections_per_listener: 20 is more than proxy.max_connections",
	} {
		bad := testkit.WriteFile(t, dir, "bad.hcl", body)
		if _, err := parseAgentFlags(t, "-dev", "-config", bad); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%q: got %v, want an error naming %s", body, err, key)
		}
	}
}
