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
}

// minLeafCertTTL keeps renewal (at half the lifetime) sane.
const minLeafCertTTL = 30 * time.Second

func (c *Config) validateProxy() []error {
	if t := c.Proxy.LeafCertTTL; t != 0 && t < minLeafCertTTL {
		return []error{fmt.Errorf("proxy.leaf_cert_ttl: must be at least %s, got %s", minLeafCertTTL, t)}
	}
	return nil
}
