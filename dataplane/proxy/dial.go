package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
)

// dial connects to an endpoint of a cluster, with TLS when the endpoint
// has a transport socket.
func (p *Proxy) dial(c *clusterRT, h *host) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(p.ctx, c.spec.connectTimeout)
	defer cancel()
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", h.addr.String())
	if err != nil || h.tls == nil {
		return up, err
	}
	tc := tls.Client(up, h.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		up.Close()
		return nil, err
	}
	return tc, nil
}

// dialAddr connects to addr in plaintext (an original destination).
func (p *Proxy) dialAddr(c *clusterRT, addr netip.AddrPort) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(p.ctx, c.spec.connectTimeout)
	defer cancel()
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr.String())
}
