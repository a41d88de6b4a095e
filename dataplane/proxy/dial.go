package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"strings"
)

// Upstream sockets: every connection the proxy opens to an endpoint (or an
// original destination) is dialed here, so each carries Config.Mark and
// is bounded by the cluster's connect_timeout and the proxy's lifetime.

// dial connects to an endpoint of a cluster, with TLS when the endpoint
// has a transport socket. connect_timeout bounds the TCP connect and the
// TLS handshake together, as Envoy's does (its connection is up when the
// handshake is done).
func (p *Proxy) dial(c *clusterRT, h *host) (conn net.Conn, err error) {
	defer func() { c.countDial(h, err) }()
	ctx, cancel := context.WithTimeout(p.dialCtx(), c.spec.connectTimeout)
	defer cancel()
	up, err := p.dialer().DialContext(ctx, "tcp", h.addr.String())
	if err != nil || h.tls == nil {
		return up, err
	}
	tc := tls.Client(up, h.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		up.Close()
		if p.dialCtx().Err() == nil {
			// Not the proxy stopping: the endpoint or its certificate.
			p.cfg.Metrics.TLSHandshakeFailed("upstream", c.spec.name)
		}
		var pm *peerMismatchError
		if errors.As(err, &pm) {
			// A valid certificate of the wrong identity: a misrouted
			// endpoint or an impostor, never to be talked to.
			p.cfg.Metrics.UpstreamPeerMismatch(c.spec.name)
			p.log.Warn("upstream peer identity mismatch: connection refused", "cluster", c.spec.name, "endpoint", h.addr,
				"expected", strings.Join(pm.expected, " or "), "presented", strings.Join(pm.presented, ", "))
		}
		return nil, err
	}
	return tc, nil
}

// dialAddr connects to addr in plaintext (an original destination).
func (p *Proxy) dialAddr(c *clusterRT, addr netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(p.dialCtx(), c.spec.connectTimeout)
	defer cancel()
	return p.dialer().DialContext(ctx, "tcp", addr.String())
}

// dialCtx is the proxy's lifetime (Run's context): a dial in progress
// when the proxy stops is abandoned.
func (p *Proxy) dialCtx() context.Context {
	if p.ctx == nil {
		return context.Background()
	}
	return p.ctx
}

// dialer marks the sockets it opens with Config.Mark (SO_MARK), so the
// traffic capture's iptables rules can tell the proxy's own connections
// from the applications' and leave them alone.
func (p *Proxy) dialer() *net.Dialer {
	d := &net.Dialer{}
	if p.cfg.Mark != 0 {
		d.Control = MarkSocket(p.cfg.Mark)
	}
	return d
}
