package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	vmetrics "github.com/vmesh/vmesh/dataplane/metrics"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/mesh/config"
)

// proxyCommand is `vmesh proxy --xds ADDR --node NAME`: the data plane
// alone, as its own process, fed only by the xDS server at ADDR, until
// SIGINT or SIGTERM (ctx). It runs locally and needs no agent API.
type proxyCommand struct {
	*Flags
	xds, node, admin, logLevel, logDir *string
	logJSON                            *bool
}

func newProxy(env *Env) Command {
	c := &proxyCommand{Flags: NewFlags(env, "proxy", "vmesh proxy --xds ADDR [flags]",
		`Runs the data plane alone, as its own process, fed by an agent's xDS
server. With --admin-addr it serves its own /metrics there.`)}
	c.xds = c.FS.String("xds", "", "the xDS server: a unix socket `path` (or unix:///path) or host:port (an agent's --xds-addr)")
	c.node = c.FS.String("node", "", "the xDS node `name`: an agent's node name makes this that host's mesh proxy (default: the host name)")
	c.admin = c.FS.String("admin-addr", "", "serve /metrics on this `address` (host:port; default: not served, as the agent's admin listener usually holds CLIENT:15000)")
	c.logLevel = c.FS.String("log-level", "info", "debug, info, warn or error")
	c.logDir = c.FS.String("access-log-dir", config.DefaultAccessLogDir, "the only `dir` file access logs from xDS are written in; a path elsewhere is refused")
	c.logJSON = c.FS.Bool("log-json", false, "log JSON lines")
	return c
}

func (c *proxyCommand) Synopsis() string {
	return "run the data plane alone, fed by an agent's xDS (--xds ADDR --node NAME)"
}

func (c *proxyCommand) Run(ctx context.Context, args []string) int {
	rest, code, done := c.Parse(args)
	if done {
		return code
	}
	env := c.env
	if len(rest) > 0 {
		return c.UsageError("unexpected argument %q", rest[0])
	}
	target, err := xdsTarget(*c.xds)
	if err != nil {
		fmt.Fprintf(env.Stderr, "vmesh proxy: --xds: %v\n", err)
		return ExitUsage
	}
	node := *c.node
	if node == "" {
		if node, err = os.Hostname(); err != nil || node == "" {
			fmt.Fprintln(env.Stderr, "vmesh proxy: --node is required (no host name to default to)")
			return ExitUsage
		}
	}
	if *c.admin != "" {
		if _, _, err := net.SplitHostPort(*c.admin); err != nil {
			fmt.Fprintf(env.Stderr, "vmesh proxy: --admin-addr: %q is not host:port\n", *c.admin)
			return ExitUsage
		}
	}
	if !filepath.IsAbs(*c.logDir) || filepath.Clean(*c.logDir) == "/" {
		fmt.Fprintf(env.Stderr, "vmesh proxy: --access-log-dir: %q is not an absolute path of a directory for logs\n", *c.logDir)
		return ExitUsage
	}
	logger := NewLogger(*c.logLevel, *c.logJSON, env.Stderr).With("component", "proxy")
	var metrics *proxy.Metrics
	if *c.admin != "" {
		// Its own registry, as each agent has: the process's runtime and
		// the proxy's traffic.
		reg := vmetrics.NewRegistry()
		metrics = proxy.NewMetrics(reg)
		stop, err := serveProxyAdmin(*c.admin, reg, logger)
		if err != nil {
			fmt.Fprintf(env.Stderr, "vmesh proxy: --admin-addr: %v\n", err)
			return ExitFailed
		}
		defer stop()
	}
	p, err := proxy.New(proxy.Config{XDSAddr: target, Node: node, Logger: logger, Metrics: metrics, AccessLogDir: *c.logDir})
	if err != nil {
		fmt.Fprintf(env.Stderr, "vmesh proxy: %v\n", err)
		return ExitUsage
	}
	logger.Info("proxy starting", "xds", target, "node", node)
	if err := p.Run(ctx); err != nil {
		fmt.Fprintf(env.Stderr, "vmesh proxy: %v\n", err)
		return ExitFailed
	}
	logger.Info("proxy stopped")
	return ExitOK
}

// serveProxyAdmin serves /metrics (and nothing else) on addr until stop.
func serveProxyAdmin(addr string, reg *prometheus.Registry, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", vmetrics.Handler(reg, reg, logger))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin listener stopped", "err", err)
		}
	}()
	logger.Info("serving metrics", "metrics", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		srv.Close()
		<-done
	}, nil
}

// xdsTarget turns --xds into a gRPC target: a path is a unix socket.
func xdsTarget(addr string) (string, error) {
	switch {
	case addr == "":
		return "", fmt.Errorf("required (the agent's xDS socket, or its --xds-addr)")
	case strings.HasPrefix(addr, "unix:"):
		return addr, nil
	case strings.HasPrefix(addr, "/") || strings.HasPrefix(addr, "."):
		return "unix://" + addr, nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return "", fmt.Errorf("%q is neither a socket path nor host:port", addr)
	}
	return addr, nil
}
