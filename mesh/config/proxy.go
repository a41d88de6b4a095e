package config

import (
	"fmt"
	"time"
)

// ProxyConfig is the in-process proxy. It is on by default: the agent is
// its host's data plane (TCP, HTTP/1.1, HTTP/2, gRPC, WebSocket over
// mTLS; docs/proxy.md). Turn it off (`-proxy=false`) to run Envoy from
// `vmesh envoy bootstrap` instead.
type ProxyConfig struct {
	Enabled bool `hcl:"enabled"`
	// LeafCertTTL is how long this host's service certificates are valid
	// (default 72h, Consul's leaf_cert_ttl); each is renewed at half its
	// lifetime and the proxy swaps it in without dropping a connection.
	LeafCertTTL time.Duration `hcl:"leaf_cert_ttl"`
	// MaxConnections bounds the downstream connections the proxy holds
	// at once, all its listeners together (0: derived from the open file
	// limit, leaving the agent's raft, API and DNS their descriptors;
	// docs/proxy.md). MaxConnectionsPerListener bounds one listener's
	// (0: half of MaxConnections). Connections over either are closed as
	// they are accepted.
	MaxConnections            int `hcl:"max_connections"`
	MaxConnectionsPerListener int `hcl:"max_connections_per_listener"`
}

// minLeafCertTTL keeps renewal (at half the lifetime) sane.
const minLeafCertTTL = 30 * time.Second

func (c *Config) validateProxy() []error {
	var errs []error
	p := c.Proxy
	if t := p.LeafCertTTL; t != 0 && t < minLeafCertTTL {
		errs = append(errs, fmt.Errorf("proxy.leaf_cert_ttl: must be at least %s, got %s", minLeafCertTTL, t))
	}
	if p.MaxConnections < 0 {
		errs = append(errs, fmt.Errorf("proxy.max_connections: must not be negative, got %d", p.MaxConnections))
	}
	if p.MaxConnectionsPerListener < 0 {
		errs = append(errs, fmt.Errorf("proxy.max_connections_per_listener: must not be negative, got %d", p.MaxConnectionsPerListener))
	}
	if p.MaxConnections > 0 && p.MaxConnectionsPerListener > p.MaxConnections {
		errs = append(errs, fmt.Errorf("proxy.max_connections_per_listener: %d is more than proxy.max_connections (%d)",
			p.MaxConnectionsPerListener, p.MaxConnections))
	}
	return errs
}
