package mesh

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	vmetrics "github.com/vmesh/vmesh/dataplane/metrics"
	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery/httpapi"
	"github.com/vmesh/vmesh/mesh/membership"
	"github.com/vmesh/vmesh/raft"
)

// xdsState is the agent's xDS server and admin listener.
type xdsState struct {
	server        *xds.Server
	leaves        *raft.LeafIssuer
	socket        string
	socketCleanup string
	adminLn       net.Listener
	adminSrv      *http.Server
}

// signLeaf is the leaf issuer's signer: on a server its own CA key (its
// sealed copy, opened with its node key for each signature), on a client
// a server over the cluster RPC. Either signs only for this node.
func (a *Agent) signLeaf(ctx context.Context, req *raft.SignLeafRequest) (*x509.Certificate, error) {
	if s := a.member.Server(); s != nil {
		return s.SignLeaf(ctx, req)
	}
	if c := a.member.Client(); c != nil {
		return c.SignLeaf(ctx, req)
	}
	return nil, membership.ErrNotJoined
}

// startXDS serves the catalog as xDS on the unix socket (and TCP if
// configured), runs the leaf certificate issuer, and opens the admin
// listener.
func (a *Agent) startXDS(context.Context) error {
	ctx := a.life.ctx // the server outlives Start's context
	sock, cleanup, err := a.cfg.XDSSocketPath()
	if err != nil {
		return err
	}
	a.xds.socket, a.xds.socketCleanup = sock, cleanup
	a.xds.leaves = raft.NewLeafIssuer(a.store, a.cfg.NodeName, a.signLeaf, a.cfg.Proxy.LeafCertTTL, a.logger.With("component", "leaf"))
	xcfg := xds.Config{
		Store:      a.store,
		Secrets:    NewLeafSecrets(a.xds.leaves, a.cfg.NodeName),
		Options:    a.xdsOpts,
		UnixSocket: sock,
		TCPAddr:    a.cfg.Addresses.XDS,
		NodeName:   a.cfg.NodeName,
		Logger:     a.logger.With("component", "xds"),
		Metrics:    xds.NewMetrics(a.metrics),
		// Set before raft starts (the tracing part comes first).
		TracerProvider: a.tracerProvider(),
	}
	if a.acl != nil {
		xcfg.TCPAuth = func(ctx context.Context, token string) (xds.TokenAuthorizer, error) {
			_, authz, err := a.acl.Resolve(ctx, token)
			if err != nil {
				return nil, err
			}
			return authz, nil
		}
	}
	srv, err := xds.NewServer(xcfg)
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	a.xds.server = srv
	a.life.goLoop("leaf certificates", func(ctx context.Context) error {
		a.xds.leaves.Run(ctx)
		return nil
	})
	admin := a.adminHandler()
	ln, err := net.Listen("tcp", a.cfg.AdminAddr())
	if err != nil {
		// The admin listener is diagnostics only; its port is the
		// proxy's well-known one and may be taken (a second agent on one
		// address, an Envoy). Say so and run without it rather than not
		// run at all: /v1/vmesh/xds/config_dump and /v1/vmesh/metrics
		// serve the same.
		a.logger.Warn("admin listener not started; the xDS server's config dump and /metrics are on the HTTP API at /v1/vmesh/xds/config_dump and /v1/vmesh/metrics",
			"addr", a.cfg.AdminAddr(), "err", err)
		return nil
	}
	a.xds.adminLn = ln
	a.xds.adminSrv = &http.Server{Handler: admin, ReadHeaderTimeout: 10 * time.Second}
	a.life.goLoop("admin listener", func(context.Context) error {
		if err := a.xds.adminSrv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return nil
}

// diagnostics are the xDS server's and Prometheus' handlers that the HTTP
// API serves too: the admin listener may not be there (its port taken).
func (a *Agent) diagnostics() httpapi.Diagnostics {
	d := httpapi.Diagnostics{Metrics: a.metricsHandler()}
	if srv := a.xds.server; srv != nil {
		d.XDSClients, d.XDSConfigDump = srv.ClientsHandler(), srv.ConfigDumpHandler()
	}
	return d
}

func (a *Agent) metricsHandler() http.Handler {
	return vmetrics.Handler(a.gatherer(), a.metrics, a.logger.With("component", "metrics"))
}

// xdsOptions are the translation settings of this agent's xDS server; the
// capture runner computes the per-user ports with the same (capture.go).
func (a *Agent) xdsOptions() xds.Options {
	return a.cfg.UserPortOptions(xds.Options{OutboundAddr: a.cfg.ClientAddr, IntentionsDefaultAllow: a.cfg.IntentionsDefaultAllow(), Host: a.cfg.HostOptions()})
}

// NewLeafSecrets serves node's leaf certificates and the CA roots to that
// node's proxy over SDS; other nodes' proxies get none. The agent uses it
// for its own node; tests that run a proxy beside an xDS server use it too.
func NewLeafSecrets(leaves *raft.LeafIssuer, node string) xds.SecretSource {
	return leafSecrets{leaves: leaves, node: node}
}

type leafSecrets struct {
	leaves *raft.LeafIssuer
	node   string
}

func (s leafSecrets) Secrets(node string) []*tlsv3.Secret {
	if node != s.node {
		return nil
	}
	lv := s.leaves.Leaves()
	if lv.RootsPEM == nil {
		return nil
	}
	out := []*tlsv3.Secret{xds.RootsSecret(lv.RootsPEM)}
	if lv.Node != nil {
		out = append(out, xds.CertSecret(xds.SecretNodeCert, lv.Node.CertPEM, lv.Node.KeyPEM))
	}
	for _, l := range lv.Services {
		out = append(out, xds.CertSecret(xds.ServiceSecret(l.Name), l.CertPEM, l.KeyPEM))
	}
	return out
}

func (s leafSecrets) Changed() <-chan struct{} { return s.leaves.Changed() }

// XDSAddrs are the addresses the xDS server listens on, once started: the
// unix socket first.
func (a *Agent) XDSAddrs() []net.Addr {
	if a.xds.server == nil {
		return nil
	}
	return a.xds.server.Addrs()
}

// AdminAddr is the admin listener's address, or "" when it is not
// listening.
func (a *Agent) AdminAddr() string {
	if a.xds.adminLn == nil {
		return ""
	}
	return a.xds.adminLn.Addr().String()
}

func (a *Agent) xdsBanner() {
	if a.out == nil || a.xds.server == nil {
		return
	}
	for _, addr := range a.XDSAddrs() {
		fmt.Fprintf(a.out, "            xDS: %s://%s\n", addr.Network(), addr)
	}
	admin := a.AdminAddr()
	if admin == "" {
		admin = "not listening (" + a.cfg.AdminAddr() + " is taken)"
	} else {
		admin = "http://" + admin + " (/ready, /stats, /clusters, /config_dump, /metrics: docs/admin.md)"
	}
	fmt.Fprintf(a.out, "          Admin: %s\n", admin)
	if a.cfg.Proxy.Enabled {
		fmt.Fprintf(a.out, "          Proxy: in-process (outbound %s, mesh port %d)\n",
			net.JoinHostPort(a.cfg.ClientAddr, strconv.Itoa(xds.DefaultOutboundPort)), xds.DefaultMeshPort)
	} else {
		fmt.Fprintf(a.out, "          Proxy: off (-proxy=false: bring your own, see vmesh envoy bootstrap)\n")
	}
}

// closeXDS stops the admin listener and the xDS server; streams end, so
// clients reconnect to the next agent start.
func (a *Agent) closeXDS() error {
	if a.xds.adminSrv != nil {
		a.xds.adminSrv.Close()
	} else if a.xds.adminLn != nil {
		a.xds.adminLn.Close()
	}
	if a.xds.server != nil {
		a.xds.server.Close()
	}
	if a.xds.socketCleanup != "" {
		os.RemoveAll(a.xds.socketCleanup)
	}
	return nil
}

// operator is the agent as the HTTP API's /v1/vmesh/* endpoints see it
// (httpapi.Operator): its membership (join, leave, tokens, members,
// snapshots) and the Envoy bootstrap, which only the agent can render.
type operator struct {
	*membership.Membership
	a *Agent
}

// EnvoyBootstrap renders an Envoy bootstrap pointing at this agent's xDS
// server (GET /v1/vmesh/envoy/bootstrap): the agent knows where that
// listens, the CLI does not.
func (o operator) EnvoyBootstrap(node, admin string, tcp bool) ([]byte, error) {
	a := o.a
	opts := xds.BootstrapOptions{Node: node, Admin: admin}
	if opts.Node == "" {
		opts.Node = a.cfg.NodeName
	}
	if opts.Admin == "" {
		opts.Admin = xds.DefaultEnvoyAdmin
	}
	for _, addr := range a.XDSAddrs() {
		switch addr.Network() {
		case "unix":
			opts.Socket = addr.String()
		case "tcp":
			opts.TCP = addr.String()
		}
	}
	if tcp {
		if opts.TCP == "" {
			return nil, errors.New("the agent serves xDS on its unix socket only (start it with --xds-addr)")
		}
		opts.Socket = ""
	}
	return xds.EnvoyBootstrap(opts)
}

// leafSource is the leaf issuer as the HTTP API's Connect endpoints read
// it (httpapi.LeafSource).
type leafSource struct{ issuer *raft.LeafIssuer }

func (s leafSource) ServiceLeaf(service string) (*httpapi.ServiceLeaf, <-chan struct{}) {
	changed := s.issuer.Changed() // before Leaves: a change in between wakes the caller
	for _, l := range s.issuer.Leaves().Services {
		if l.Name == service {
			return &httpapi.ServiceLeaf{CertPEM: l.CertPEM, KeyPEM: l.KeyPEM, URI: l.URI, Index: l.Index}, changed
		}
	}
	return nil, changed
}
