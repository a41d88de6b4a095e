package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// inspectTimeout bounds how long a connection may take to send its first
// bytes (TLS ClientHello) on a listener with a tls_inspector, and the TLS
// handshake.
const inspectTimeout = 10 * time.Second

// proxyConn is one accepted connection and, once dialed, its upstream.
type proxyConn struct {
	down net.Conn

	mu sync.Mutex
	up net.Conn
}

func (c *proxyConn) setUp(up net.Conn) {
	c.mu.Lock()
	c.up = up
	c.mu.Unlock()
}

// abort ends the connection at once (drain timeout).
func (c *proxyConn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down.Close()
	if c.up != nil {
		c.up.Close()
	}
}

// reset closes a TCP connection with RST rather than FIN: a refused peer
// must not read the refusal as a clean end of stream.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// replayConn is a connection whose first bytes were already read (to find
// the SNI); they are read again first.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// readOnlyConn lets crypto/tls parse a ClientHello without answering it.
type readOnlyConn struct {
	net.Conn
	r io.Reader
}

func (c readOnlyConn) Read(b []byte) (int, error)  { return c.r.Read(b) }
func (c readOnlyConn) Write(b []byte) (int, error) { return 0, io.ErrClosedPipe }

var errHelloSeen = errors.New("client hello seen")

// inspect is Envoy's tls_inspector: it reads the ClientHello, if the
// connection starts with one, and returns the SNI and "tls" or
// "raw_buffer", with a connection that replays what was read.
func inspect(c net.Conn) (sni, transport string, out net.Conn) {
	var buf bytes.Buffer
	var hello *tls.ClientHelloInfo
	c.SetReadDeadline(time.Now().Add(inspectTimeout))
	tls.Server(readOnlyConn{Conn: c, r: io.TeeReader(c, &buf)}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			hello = h
			return nil, errHelloSeen
		},
	}).Handshake()
	c.SetReadDeadline(time.Time{})
	out = &replayConn{Conn: c, r: io.MultiReader(&buf, c)}
	if hello == nil {
		return "", "raw_buffer", out
	}
	return strings.ToLower(hello.ServerName), "tls", out
}

// match picks the filter chain for a connection as Envoy does: among the
// chains whose every criterion holds, the most specific by destination
// port, then destination prefix, then server name, then transport; else
// the default chain.
func (l *listenerSpec) match(dst netip.AddrPort, sni, transport string) *chainSpec {
	var best *chainSpec
	var bestScore [4]int
	for _, c := range l.chains {
		score := [4]int{0, -1, 0, 0}
		if c.port != 0 {
			if uint32(dst.Port()) != c.port {
				continue
			}
			score[0] = 1
		}
		if len(c.prefixes) > 0 {
			ok := false
			for _, p := range c.prefixes {
				if p.Contains(dst.Addr()) {
					ok = true
					score[1] = max(score[1], p.Bits())
				}
			}
			if !ok {
				continue
			}
		}
		if len(c.serverNames) > 0 {
			if !slices.Contains(c.serverNames, sni) {
				continue
			}
			score[2] = 1
		}
		if c.transport != "" {
			want := c.transport
			if transport != want {
				continue
			}
			score[3] = 1
		}
		if best == nil || slices.Compare(score[:], bestScore[:]) > 0 {
			best, bestScore = c, score
		}
	}
	if best == nil {
		return l.def
	}
	return best
}

// serve runs one accepted connection through its listener's current
// config.
func (p *Proxy) serve(rl *runningListener, pc *proxyConn) {
	start := time.Now()
	raw := pc.down
	defer raw.Close()
	lrt := p.cur.Load().listeners[rl.name]
	if lrt == nil || lrt.spec.addr != rl.addr {
		reset(raw)
		return
	}
	spec := lrt.spec
	dst, _ := netip.ParseAddrPort(raw.LocalAddr().String())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if spec.origDst {
		if od, err := originalDst(raw); err == nil {
			dst = od
		}
	}
	conn := raw
	sni, transport := "", "raw_buffer"
	if spec.tlsInspector {
		sni, transport, conn = inspect(raw)
	}
	chain := spec.match(dst, sni, transport)
	cl := &connLog{start: start, listener: rl.name, downstreamLocal: dst.String(), downstreamRemote: raw.RemoteAddr().String(), sni: sni}
	if !p.admitInbound(rl, spec, chain, raw) { // inbound.go: what is not mesh mTLS
		// (admitInbound logs its own rate-limited line)
		p.logConn(spec.logs, cl, flagNR, detailsNotMesh, "", "", 0, 0, false)
		reset(raw)
		return
	}
	if chain == nil {
		p.log.Debug("no filter chain matches", "listener", rl.name, "dst", dst, "sni", sni, "transport", transport)
		p.logConn(spec.logs, cl, flagNR, detailsNoChain, "", "", 0, 0, true)
		reset(raw)
		return
	}
	var ids []string
	var cs *tls.ConnectionState
	if cfg := lrt.tls[chain]; cfg != nil {
		tc := tls.Server(conn, cfg)
		ctx, cancel := context.WithTimeout(p.ctx, inspectTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			p.log.Debug("TLS handshake failed", "listener", rl.name, "chain", chain.name, "remote", raw.RemoteAddr(), "err", err)
			p.cfg.Metrics.TLSHandshakeFailed("downstream", rl.name)
			p.logConn(spec.logs, cl, 0, detailsTLSFailed, "", "", 0, 0, true)
			reset(raw)
			return
		}
		state := tc.ConnectionState()
		cs = &state
		ids = peerIDs(state)
		conn = tc
	}
	cl.ids = ids
	if !chain.rbac.allowed(ids) {
		p.log.Debug("connection denied by rbac", "listener", rl.name, "chain", chain.name, "peer", ids)
		logs := chain.proxy.logsOf()
		if chain.http != nil {
			logs = chain.http.logs
		}
		p.logConn(logs, cl, 0, detailsRBAC, "", "", 0, 0, true)
		reset(raw)
		return
	}
	if chain.http != nil {
		p.serveHTTP(rl, lrt, chain, conn, dst, cs, ids)
		return
	}
	var res tcpResult
	p.tcpProxy(chain.proxy, pc, conn, dst, rl, &res)
	refused := res.flags&(flagUH|flagUF|flagUO|flagNC) != 0
	p.logConn(chain.proxy.logs, cl, res.flags, res.details, res.cluster, res.upstream, res.in, res.out, refused)
}

// peerIDs are the verified peer's identities: its SPIFFE ID, else its URI
// SANs.
func peerIDs(cs tls.ConnectionState) []string {
	if len(cs.PeerCertificates) == 0 {
		return nil
	}
	if id, err := x509svid.IDFromCert(cs.PeerCertificates[0]); err == nil {
		return []string{id.String()}
	}
	var out []string
	for _, u := range cs.PeerCertificates[0].URIs {
		out = append(out, u.String())
	}
	return out
}

// tcpProxy connects the downstream to an endpoint of one of the proxy's
// clusters and splices the two.
func (p *Proxy) tcpProxy(tp *tcpProxySpec, pc *proxyConn, down net.Conn, dst netip.AddrPort, rl *runningListener, res *tcpResult) {
	name := tp.clusters[0].name
	if len(tp.clusters) > 1 {
		n := rand.Uint64N(tp.total)
		for _, c := range tp.clusters {
			if n < uint64(c.weight) {
				name = c.name
				break
			}
			n -= uint64(c.weight)
		}
	}
	c := p.cur.Load().clusters[name]
	res.cluster = name
	if c == nil {
		p.log.Debug("no such cluster (yet)", "listener", rl.name, "cluster", name)
		res.flags, res.details = flagNC, detailsNoCluster
		reset(pc.down)
		return
	}
	if c.spec.kind == kindOriginalDst {
		if dst == rl.addr || dst.Addr().IsUnspecified() {
			// Not redirected here: passing it on would dial ourselves.
			res.flags, res.details = flagUH, detailsNoHealthy
			reset(pc.down)
			return
		}
		res.upstream = dst.String()
		up, err := p.dialAddr(c, dst)
		if err != nil {
			res.flags, res.details = flagUF, detailsConnFailure
			reset(pc.down)
			return
		}
		pc.setUp(up)
		in, out := splice(down, up)
		res.in, res.out = in, out
		p.cfg.Metrics.Bytes(rl.name, tp.stat, name, in, out)
		return
	}
	release, ok := c.admit(breakerConnections)
	if !ok {
		p.log.Debug("circuit breaker open: max_connections", "cluster", name)
		res.flags, res.details = flagUO, detailsOverflow
		reset(pc.down)
		return
	}
	defer release()
	h := c.choose(time.Now(), lbContext{})
	if h == nil {
		p.log.Debug("no healthy endpoint", "cluster", name)
		res.flags, res.details = flagUH, detailsNoHealthy
		reset(pc.down)
		return
	}
	h.st.active.Add(1)
	defer h.st.active.Add(-1)
	res.upstream = h.addr.String()
	up, err := p.dial(c, h)
	o := outcomeSuccess
	if err != nil {
		o = outcomeConnectFailure
	}
	c.record(h, o, 0, time.Now())
	if err != nil {
		p.log.Debug("connecting upstream", "cluster", name, "endpoint", h.addr, "err", err)
		res.flags, res.details = flagUF, detailsConnFailure
		reset(pc.down)
		return
	}
	pc.setUp(up)
	in, out := splice(down, up)
	res.in, res.out = in, out
	p.cfg.Metrics.Bytes(rl.name, tp.stat, name, in, out)
}

// splice copies both ways and returns the bytes copied from a to b and
// from b to a. A clean end of stream on one side is passed on as a
// half-close; an error on either ends both.
func splice(a, b net.Conn) (aToB, bToA int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	cp := func(dst, src net.Conn) int64 {
		n, err := io.Copy(dst, src)
		if err != nil {
			a.Close()
			b.Close()
			return n
		}
		closeWrite(dst)
		return n
	}
	go func() {
		defer wg.Done()
		aToB = cp(b, a)
	}()
	bToA = cp(a, b)
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	c.Close()
}
