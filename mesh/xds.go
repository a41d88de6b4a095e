package mesh

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/raft"
)

// DefaultAdminPort is the admin listener's port (the proxy's admin:
// /config_dump and /metrics), the port Istio gives Envoy's admin.
const DefaultAdminPort = 15000

// xdsSocketName is the xDS unix socket's file name in the runtime dir.
const xdsSocketName = "xds.sock"

// maxSocketPath leaves room under the kernel's 108-byte sun_path limit.
const maxSocketPath = 100

// AdminAddr is where the admin listener listens.
func (c *Config) AdminAddr() string {
	if c.Addresses.Admin != "" {
		return c.Addresses.Admin
	}
	return net.JoinHostPort(c.ClientAddr, strconv.Itoa(DefaultAdminPort))
}

// runtimeDir is where the xDS socket lives: systemd's RuntimeDirectory
// (/run/vmesh, the unit sets it) when there is one, else the data dir.
func (c *Config) runtimeDir() string {
	if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
		return filepath.SplitList(d)[0]
	}
	return c.DataDir
}

// xdsSocketPath returns the xDS socket path and creates its directory. A
// path too long for a unix socket (a deep data dir) moves to a directory
// in the temp dir named after the data dir, so it is stable across
// restarts; cleanup is that directory, or "" when there is none to remove.
func (c *Config) xdsSocketPath() (path, cleanup string, err error) {
	path = filepath.Join(c.runtimeDir(), xdsSocketName)
	if len(path) <= maxSocketPath {
		return path, "", os.MkdirAll(filepath.Dir(path), 0o750)
	}
	sum := sha256.Sum256([]byte(c.DataDir))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("vmesh-%x", sum[:6]))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", fmt.Errorf("creating the xDS socket dir: %w", err)
	}
	return filepath.Join(dir, xdsSocketName), dir, nil
}

// validateXDS reports problems with the xDS and admin addresses.
func (c *Config) validateXDS() []error {
	var errs []error
	for _, a := range []struct{ key, v string }{{"addresses.xds", c.Addresses.XDS}, {"addresses.admin", c.Addresses.Admin}} {
		if a.v == "" {
			continue
		}
		if _, err := netip.ParseAddrPort(a.v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not IP:port", a.key, a.v))
		}
	}
	return errs
}

// xdsFlags are the agent's xDS flags.
type xdsFlags struct{ addr, admin string }

func (f *xdsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.addr, "xds-addr", "", "also serve xDS over TCP on this `address` (default: only the unix socket in the runtime dir)")
	fs.StringVar(&f.admin, "admin-addr", "", "admin `address`, serving /config_dump and /metrics (default CLIENT:15000)")
}

func (f *xdsFlags) apply(set map[string]bool, cfg *Config) {
	if set["xds-addr"] {
		cfg.Addresses.XDS = f.addr
	}
	if set["admin-addr"] {
		cfg.Addresses.Admin = f.admin
	}
}

// xdsState is the agent's xDS server and admin listener.
type xdsState struct {
	server        *xds.Server
	leaves        *raft.LeafIssuer
	socket        string
	socketCleanup string
	adminLn       net.Listener
	adminSrv      *http.Server
}

// startXDS serves the catalog as xDS on the unix socket (and TCP if
// configured), adds /v1/vmesh/xds/... and /v1/vmesh/envoy/bootstrap to the
// HTTP API, and opens the admin listener.
func (a *Agent) startXDS(ctx context.Context, mux *http.ServeMux) error {
	sock, cleanup, err := a.cfg.xdsSocketPath()
	if err != nil {
		return err
	}
	a.xds.socket, a.xds.socketCleanup = sock, cleanup
	a.xds.leaves = raft.NewLeafIssuer(a.store, a.cfg.NodeName, a.cfg.Proxy.LeafCertTTL, a.logger.With("component", "leaf"))
	srv, err := xds.NewServer(xds.Config{
		Store:      a.store,
		Secrets:    NewLeafSecrets(a.xds.leaves, a.cfg.NodeName),
		Options:    a.xdsOptions(),
		UnixSocket: sock,
		TCPAddr:    a.cfg.Addresses.XDS,
		Logger:     a.logger.With("component", "xds"),
		Metrics:    xds.NewMetrics(a.metrics),
	})
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	a.xds.server = srv
	mux.Handle("GET /v1/vmesh/xds/clients", srv.ClientsHandler())
	// Also on the API: the admin listener may not be there (see below).
	mux.Handle("GET /v1/vmesh/xds/config_dump", srv.ConfigDumpHandler())
	mux.HandleFunc("GET /v1/vmesh/envoy/bootstrap", a.handleEnvoyBootstrap)
	metrics := metricsHandler(a.metrics, a.logger.With("component", "metrics"))
	mux.Handle("GET /v1/vmesh/metrics", metrics)

	admin := http.NewServeMux()
	admin.Handle("GET /config_dump", srv.ConfigDumpHandler())
	admin.Handle("GET /metrics", metrics)
	admin.Handle("GET /v1/vmesh/xds/clients", srv.ClientsHandler())
	ln, err := net.Listen("tcp", a.cfg.AdminAddr())
	if err != nil {
		// The admin listener is diagnostics only; its port is the
		// proxy's well-known one and may be taken (a second agent on one
		// address, an Envoy). Say so and run without it rather than not
		// run at all: /v1/vmesh/xds/config_dump and /v1/vmesh/metrics
		// serve the same.
		a.logger.Warn("admin listener not started; /config_dump and /metrics are on the HTTP API at /v1/vmesh/xds/config_dump and /v1/vmesh/metrics",
			"addr", a.cfg.AdminAddr(), "err", err)
		return nil
	}
	a.xds.adminLn = ln
	a.xds.adminSrv = &http.Server{Handler: admin, ReadHeaderTimeout: 10 * time.Second}
	a.goLoop(func() {
		if err := a.xds.adminSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.logger.Error("admin listener stopped", "err", err)
		}
	})
	return nil
}

// xdsOptions are the translation settings of this agent's xDS server; the
// capture runner computes the per-user ports with the same (capture.go).
func (a *Agent) xdsOptions() xds.Options {
	return a.cfg.userPortOptions(xds.Options{OutboundAddr: a.cfg.ClientAddr, IntentionsDefaultAllow: a.cfg.intentionsDefaultAllow()})
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
		admin = "http://" + admin + " (/metrics, /config_dump)"
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
func (a *Agent) closeXDS() {
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
}
