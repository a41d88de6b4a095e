package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/dataplane/proxy"
)

// runProxy is `vmesh proxy --xds ADDR --node NAME`: the data plane alone,
// as its own process, fed only by the xDS server at ADDR, until SIGINT or
// SIGTERM (ctx). With --admin-addr it serves its own /metrics there.
func runProxy(ctx context.Context, env *cliEnv, args []string) int {
	fs := newFlagSet("proxy", env)
	xdsAddr := fs.String("xds", "", "the xDS server: a unix socket `path` (or unix:///path) or host:port (an agent's --xds-addr)")
	node := fs.String("node", "", "the xDS node `name`: an agent's node name makes this that host's mesh proxy (default: the host name)")
	adminAddr := fs.String("admin-addr", "", "serve /metrics on this `address` (host:port; default: not served, as the agent's admin listener usually holds CLIENT:15000)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logJSON := fs.Bool("log-json", false, "log JSON lines")
	rest, err := parseArgs(fs, args)
	if err != nil {
		return exitUsage
	}
	if len(rest) > 0 {
		fmt.Fprintf(env.stderr, "vmesh proxy: unexpected argument %q\n", rest[0])
		return exitUsage
	}
	target, err := xdsTarget(*xdsAddr)
	if err != nil {
		fmt.Fprintf(env.stderr, "vmesh proxy: --xds: %v\n", err)
		return exitUsage
	}
	if *node == "" {
		if *node, err = os.Hostname(); err != nil || *node == "" {
			fmt.Fprintln(env.stderr, "vmesh proxy: --node is required (no host name to default to)")
			return exitUsage
		}
	}
	if *adminAddr != "" {
		if _, _, err := net.SplitHostPort(*adminAddr); err != nil {
			fmt.Fprintf(env.stderr, "vmesh proxy: --admin-addr: %q is not host:port\n", *adminAddr)
			return exitUsage
		}
	}
	logger := newLogger(Config{LogLevel: *logLevel, LogJSON: *logJSON}, env.stderr).With("component", "proxy")
	var metrics *proxy.Metrics
	if *adminAddr != "" {
		reg := newRegistry()
		metrics = proxy.NewMetrics(reg)
		stop, err := serveProxyAdmin(*adminAddr, reg, logger)
		if err != nil {
			fmt.Fprintf(env.stderr, "vmesh proxy: --admin-addr: %v\n", err)
			return exitFailed
		}
		defer stop()
	}
	p, err := proxy.New(proxy.Config{XDSAddr: target, Node: *node, Logger: logger, Metrics: metrics})
	if err != nil {
		fmt.Fprintf(env.stderr, "vmesh proxy: %v\n", err)
		return exitUsage
	}
	logger.Info("proxy starting", "xds", target, "node", *node)
	if err := p.Run(ctx); err != nil {
		fmt.Fprintf(env.stderr, "vmesh proxy: %v\n", err)
		return exitFailed
	}
	logger.Info("proxy stopped")
	return exitOK
}

// serveProxyAdmin serves /metrics (and nothing else) on addr until stop.
func serveProxyAdmin(addr string, reg *prometheus.Registry, logger *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metricsHandler(reg, logger))
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
