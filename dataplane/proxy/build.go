package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// state is what the client has accepted of each resource type, parsed.
type state struct {
	listeners map[string]*listenerSpec
	clusters  map[string]*clusterSpec
	endpoints map[string]*endpointsSpec
	secrets   map[string]*secretSpec
	routes    map[string]*routeConfigSpec
}

// clone is a shallow copy: a response replaces one type's map whole.
func (s *state) clone() *state {
	c := *s
	return &c
}

// snapshot is one complete, resolved configuration. The proxy serves from
// exactly one at a time (Proxy.cur); a new one replaces it in one atomic
// store, so a connection never sees half of an update.
type snapshot struct {
	listeners map[string]*listenerRT
	clusters  map[string]*clusterRT
	// pool holds the upstream HTTP transports; every snapshot shares it
	// with the one it replaces.
	pool *transportPool
}

type listenerRT struct {
	spec *listenerSpec
	// tls is the server config of each chain that terminates TLS.
	tls map[*chainSpec]*tls.Config
	// routes is the route configuration of each HTTP chain (inline, or
	// its RDS resource).
	routes map[*chainSpec]*routeConfigSpec
	// life is shared by the versions of the listener while it stays
	// bound to its address; HTTP connections drain when it ends.
	life *listenerLife
}

// clusterRT is a cluster with its endpoints and TLS resolved.
type clusterRT struct {
	spec  *clusterSpec
	hosts []*host       // healthy and degraded endpoints (never unhealthy ones)
	st    *clusterState // shared with the cluster's earlier versions (policy.go)
	lb    *lbState      // this version's: round robin weights, rings, tables
}

type host struct {
	addr    netip.AddrPort
	weight  uint32
	healthy bool        // false: degraded
	tls     *tls.Config // nil: plaintext
	st      *hostState  // shared with earlier versions at this address
	// tlsKey identifies tls by what it is built from (spec and secret
	// contents), so a new version keeps an unchanged config.
	tlsKey string
	// transport caches the pool's transport for this host (the pool's
	// lock and key hashing are per request otherwise); used while the
	// pool still holds it.
	transport atomic.Pointer[upstreamTransport]
}

// errWarming marks a resource whose dependencies (endpoints, secrets) have
// not arrived yet.
var errWarming = errors.New("warming")

// build resolves st into a snapshot. A listener or cluster whose
// secrets or endpoints are missing keeps its previous version (Envoy's
// warming); without one it is left out until they arrive.
func build(st *state, prev *snapshot) *snapshot {
	if prev == nil {
		prev = &snapshot{}
	}
	next := &snapshot{listeners: map[string]*listenerRT{}, clusters: map[string]*clusterRT{}, pool: prev.pool}
	if next.pool == nil {
		next.pool = newTransportPool()
	}
	for name, cs := range st.clusters {
		rt, err := buildCluster(cs, st, prev.clusters[name])
		if err != nil {
			if old := prev.clusters[name]; old != nil {
				next.clusters[name] = old
			}
			continue
		}
		next.clusters[name] = rt
	}
	for name, ls := range st.listeners {
		old := prev.listeners[name]
		rt, err := buildListener(ls, st)
		if err != nil {
			if old != nil {
				next.listeners[name] = old
			}
			continue
		}
		// Still bound to the same address: the same life (apply keeps
		// the socket).
		if old != nil && old.spec.addr == ls.addr {
			rt.life = old.life
		} else {
			rt.life = newListenerLife()
		}
		next.listeners[name] = rt
	}
	return next
}

func buildListener(ls *listenerSpec, st *state) (*listenerRT, error) {
	rt := &listenerRT{spec: ls, tls: map[*chainSpec]*tls.Config{}, routes: map[*chainSpec]*routeConfigSpec{}}
	chains := ls.chains
	if ls.def != nil {
		chains = append(chains[:len(chains):len(chains)], ls.def)
	}
	for _, c := range chains {
		if c.http != nil {
			rc := c.http.inline
			if rc == nil {
				if rc = st.routes[c.http.rds]; rc == nil {
					return nil, fmt.Errorf("%w: route configuration %s", errWarming, c.http.rds)
				}
			}
			rt.routes[c] = rc
		}
		if c.tls == nil {
			continue
		}
		cfg, err := serverTLS(c.tls, st)
		if err != nil {
			return nil, err
		}
		rt.tls[c] = cfg
	}
	return rt, nil
}

func buildCluster(cs *clusterSpec, st *state, prev *clusterRT) (*clusterRT, error) {
	rt := &clusterRT{spec: cs, st: &clusterState{}}
	oldHosts := map[netip.AddrPort]*hostState{}
	oldTLS := map[string]*tls.Config{}
	if prev != nil {
		rt.st = prev.st
		for _, h := range prev.hosts {
			oldHosts[h.addr] = h.st
			if h.tls != nil {
				oldTLS[h.tlsKey] = h.tls
			}
		}
	}
	var eps *endpointsSpec
	switch cs.kind {
	case kindOriginalDst:
		rt.buildLB()
		return rt, nil
	case kindStatic:
		eps = cs.static
	case kindEDS:
		eps = st.endpoints[cs.edsName]
		if eps == nil {
			return nil, errWarming
		}
	}
	for _, e := range eps.eps {
		h := &host{addr: e.addr, weight: e.weight, st: oldHosts[e.addr]}
		switch e.health {
		case core.HealthStatus_UNKNOWN, core.HealthStatus_HEALTHY:
			h.healthy = true
		case core.HealthStatus_DEGRADED:
		default:
			continue // unhealthy, draining, timeout: never used
		}
		if h.st == nil {
			h.st = &hostState{}
		}
		if u := cs.socketFor(e.match); u != nil {
			h.tlsKey = tlsKey(u, st)
			cfg := oldTLS[h.tlsKey]
			if cfg == nil {
				var err error
				if cfg, err = clientTLS(u, st); err != nil {
					return nil, err
				}
				// One config for the cluster's endpoints alike, so the
				// upstream transports key on it (http_upstream.go).
				oldTLS[h.tlsKey] = cfg
			}
			h.tls = cfg
		}
		rt.hosts = append(rt.hosts, h)
	}
	rt.buildLB()
	return rt, nil
}

// tlsKey names what an upstream TLS config is built from: the transport
// socket and the contents of its secrets.
func tlsKey(u *upstreamTLS, st *state) string {
	digest := func(name string) string {
		if s := st.secrets[name]; s != nil {
			return fmt.Sprintf("%x", s.digest)
		}
		return "-"
	}
	return fmt.Sprintf("%q %q %q %s %q %s %s", u.sni, u.alpn, u.certSecret, digest(u.certSecret), u.rootsSecret, digest(u.rootsSecret), sansKey(u.sans))
}

// socketFor is the transport socket for an endpoint with metadata md: the
// first transport_socket_match whose criteria md holds, else the
// cluster's own.
func (cs *clusterSpec) socketFor(md *structpb.Struct) *upstreamTLS {
	for _, m := range cs.tlsMatches {
		ok := true
		for k, v := range m.match.GetFields() {
			if got, has := md.GetFields()[k]; !has || !proto.Equal(got, v) {
				ok = false
				break
			}
		}
		if ok {
			return m.tls
		}
	}
	return cs.tls
}

func secretPair(st *state, certName, rootsName string) (*tls.Certificate, *x509.CertPool, error) {
	var cert *tls.Certificate
	var roots *x509.CertPool
	if certName != "" {
		s := st.secrets[certName]
		if s == nil || s.cert == nil {
			return nil, nil, fmt.Errorf("%w: secret %s", errWarming, certName)
		}
		cert = s.cert
	}
	if rootsName != "" {
		s := st.secrets[rootsName]
		if s == nil || s.roots == nil {
			return nil, nil, fmt.Errorf("%w: secret %s", errWarming, rootsName)
		}
		roots = s.roots
	}
	return cert, roots, nil
}

// verifyPeer checks a peer's chain against roots, as Envoy's validation
// context with trusted_ca only does: the chain, not a host name (mesh
// certificates name SPIFFE IDs) nor an extended key usage.
func verifyPeer(certs []*x509.Certificate, roots *x509.CertPool) error {
	if len(certs) == 0 {
		return errors.New("proxy: the peer sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

func clientTLS(u *upstreamTLS, st *state) (*tls.Config, error) {
	cert, roots, err := secretPair(st, u.certSecret, u.rootsSecret)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		ServerName: u.sni,
		NextProtos: u.alpn,
		MinVersion: tls.VersionTLS12,
		// The chain is checked in VerifyConnection against the mesh
		// roots, then the leaf's identity against the ones expected of
		// the endpoint; Go's host name check does not apply to SPIFFE
		// leaves.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyPeer(cs.PeerCertificates, roots); err != nil {
				return err
			}
			return checkSANs(cs.PeerCertificates[0], u.sans)
		},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg, nil
}

func serverTLS(d *downstreamTLS, st *state) (*tls.Config, error) {
	cert, roots, err := secretPair(st, d.certSecret, d.rootsSecret)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{*cert}, NextProtos: d.alpn, MinVersion: tls.VersionTLS12}
	if roots != nil {
		cfg.ClientAuth = tls.RequestClientCert
		if d.requireClient {
			cfg.ClientAuth = tls.RequireAnyClientCert
		}
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // only when not required
			}
			if err := verifyPeer(cs.PeerCertificates, roots); err != nil {
				return err
			}
			return checkSANs(cs.PeerCertificates[0], d.sans)
		}
	}
	return cfg, nil
}
