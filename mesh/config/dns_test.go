package config

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

func TestDNSConfig(t *testing.T) {
	cfg := DefaultConfig()
	if cfg.DNSAddr() != "127.0.0.1:8600" || cfg.VIPRange().String() != "240.0.0.0/4" || !cfg.DNS.OnlyPassing || cfg.DNS.VIPTTL != 30*time.Second {
		t.Errorf("defaults: dns %s, range %s, %+v", cfg.DNSAddr(), cfg.VIPRange(), cfg.DNS)
	}
	dir := t.TempDir()
	testkit.WriteFile(t, dir, "dns.hcl", `
ports { dns = 8653 }
capture { vip_range = "10.200.0.0/16" }
dns {
  recursors    = ["10.0.0.2", "10.0.0.3:5353"]
  service_ttl  = "5s"
  node_ttl     = "10s"
  vip_ttl      = "1m"
  only_passing = false
  recursor_allowed_cidrs = ["10.20.0.0/16", "192.0.2.7"]
  rate_limit = 50
  rate_limit_burst = 70
}
`)
	cfg, err := parseAgentFlags(t, "-config", dir, "-client", "127.0.0.4", "-data-dir", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DNSAddr() != "127.0.0.4:8653" || cfg.VIPRange().String() != "10.200.0.0/16" || cfg.DNS.OnlyPassing ||
		cfg.DNS.ServiceTTL != 5*time.Second || cfg.DNS.NodeTTL != 10*time.Second || cfg.DNS.VIPTTL != time.Minute ||
		!slices.Equal(cfg.DNS.Recursors, []string{"10.0.0.2", "10.0.0.3:5353"}) {
		t.Errorf("from file: dns %s, range %s, %+v", cfg.DNSAddr(), cfg.VIPRange(), cfg.DNS)
	}
	if got := fmt.Sprint(cfg.RecursionAllowed()); got != "[10.20.0.0/16 192.0.2.7/32]" || cfg.DNS.RateLimit != 50 || cfg.DNS.RateLimitBurst != 70 {
		t.Errorf("from file: recursion allowed %s, rate %d burst %d", got, cfg.DNS.RateLimit, cfg.DNS.RateLimitBurst)
	}
	if d := DefaultConfig(); d.DNS.RateLimit != 500 || len(d.RecursionAllowed()) != 0 {
		t.Errorf("defaults: rate %d, recursion allowed %v; want 500 and none (this host only)", d.DNS.RateLimit, d.RecursionAllowed())
	}
	cfg, err = parseAgentFlags(t, "-config", dir, "-dns-addr", "127.0.0.1:53", "-data-dir", t.TempDir())
	if err != nil || cfg.DNSAddr() != "127.0.0.1:53" {
		t.Errorf("-dns-addr: %q, %v", cfg.DNSAddr(), err)
	}
	off := DefaultConfig()
	off.Ports.DNS = -1
	if off.DNSAddr() != "" || off.Validate() != nil {
		t.Errorf("ports.dns = -1: addr %q, %v", off.DNSAddr(), off.Validate())
	}

	for _, tt := range []struct {
		name string
		mod  func(c *Config)
		want string
	}{
		{"ipv6 range", func(c *Config) { c.Capture.VIPRange = "fd00::/8" }, "capture.vip_range: \"fd00::/8\": VIPs are IPv4"},
		{"loopback range", func(c *Config) { c.Capture.VIPRange = "127.1.0.0/16" }, "overlaps loopback"},
		{"range covering loopback", func(c *Config) { c.Capture.VIPRange = "64.0.0.0/1" }, "overlaps loopback"},
		{"everything", func(c *Config) { c.Capture.VIPRange = "0.0.0.0/0" }, "capture.vip_range"},
		{"not a CIDR", func(c *Config) { c.Capture.VIPRange = "240.0.0.0" }, "capture.vip_range: \"240.0.0.0\" is not a CIDR"},
		{"dns port", func(c *Config) { c.Ports.DNS = 70000 }, "ports.dns: must be between"},
		{"dns address", func(c *Config) { c.Addresses.DNS = "localhost:53" }, "addresses.dns: \"localhost:53\" is not IP:port"},
		{"recursor", func(c *Config) { c.DNS.Recursors = []string{"1.1.1.1", "dns.google"} }, "dns.recursors[1]: \"dns.google\""},
		{"ttl", func(c *Config) { c.DNS.NodeTTL = -time.Second }, "dns.node_ttl: must not be negative"},
		{"allowed cidr", func(c *Config) { c.DNS.RecursorAllowedCIDRs = []string{"10.0.0.0/8", "corp"} }, `dns.recursor_allowed_cidrs[1]: "corp" is not a CIDR`},
		{"allowed cidr host bits", func(c *Config) { c.DNS.RecursorAllowedCIDRs = []string{"10.1.2.3/8"} }, `dns.recursor_allowed_cidrs[0]: "10.1.2.3/8" has host bits set (did you mean 10.0.0.0/8?)`},
		{"allowed everyone", func(c *Config) { c.DNS.RecursorAllowedCIDRs = []string{"::/0"} }, "open resolver"},
		{"rate limit", func(c *Config) { c.DNS.RateLimit = -1 }, "dns.rate_limit: must not be negative"},
		{"rate burst", func(c *Config) { c.DNS.RateLimitBurst = -5 }, "dns.rate_limit_burst: must not be negative"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mod(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want %q", err, tt.want)
			}
		})
	}
}
