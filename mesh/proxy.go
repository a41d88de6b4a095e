package mesh

import (
	"context"
	"fmt"
	"net"

	"github.com/vmesh/vmesh/dataplane/proxy"
)

// startProxy runs the in-process proxy as a background loop: the same
// code as `vmesh proxy`, reading its whole config from this agent's xDS
// socket as this host's mesh proxy. Close ends it.
func (a *Agent) startProxy(context.Context) error {
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
		// (0: the proxy's defaults, from the open file limit)
		MaxConnections:         a.cfg.Proxy.MaxConnections,
		MaxListenerConnections: a.cfg.Proxy.MaxConnectionsPerListener,
		TracerProvider:         a.tracerProvider(),
		AccessLogDir:           a.cfg.AccessLogDirFor(a.cfg.DataDir),
	})
	if err != nil {
		return err
	}
	a.proxy = p
	a.adminProxy.p.Store(p)
	a.life.goLoop("proxy", p.Run)
	return nil
}

// proxyListeners is what capture asks the in-process proxy
// (*proxy.Proxy): which listeners are bound, and when that changes.
type proxyListeners interface {
	ListenerAddrs() map[string]net.Addr
	ListenersChanged() <-chan struct{}
}
