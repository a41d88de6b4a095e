package mesh

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/vmesh/vmesh/dataplane/proxy"
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

// proxyFlags is the agent's -proxy flag.
type proxyFlags struct{ enabled bool }

func (f *proxyFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.enabled, "proxy", true, "run the in-process proxy, fed by this agent's xDS over its unix socket; -proxy=false to bring your own Envoy (docs/proxy.md)")
}

func (f *proxyFlags) apply(set map[string]bool, cfg *Config) {
	if set["proxy"] {
		cfg.Proxy.Enabled = f.enabled
	}
}

// startProxy runs the in-process proxy under ctx: the same code as `vmesh
// proxy`, reading its whole config from this agent's xDS socket as this
// host's mesh proxy. It stops when ctx ends (Close cancels it).
func (a *Agent) startProxy(ctx context.Context) error {
	if !a.cfg.Proxy.Enabled {
		return nil
	}
	if a.xds.socket == "" {
		return fmt.Errorf("the in-process proxy needs the xDS socket, which is not set up")
	}
	p, err := proxy.New(proxy.Config{
		XDSAddr: "unix://" + a.xds.socket,
		Node:    a.cfg.NodeName,
		Logger:  a.logger.With("component", "proxy"),
		Metrics: proxy.NewMetrics(a.metrics),
		Mark:    a.proxyMark(),
	})
	if err != nil {
		return err
	}
	a.goLoop(func() {
		if err := p.Run(ctx); err != nil && ctx.Err() == nil {
			a.logger.Error("in-process proxy stopped", "err", err)
		}
	})
	return nil
}
