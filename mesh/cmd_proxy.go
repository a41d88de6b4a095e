package mesh

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/vmesh/vmesh/dataplane/proxy"
)

// runProxy is `vmesh proxy --xds ADDR --node NAME`: the data plane alone,
// as its own process, fed only by the xDS server at ADDR, until SIGINT or
// SIGTERM (ctx).
func runProxy(ctx context.Context, env *cliEnv, args []string) int {
	fs := newFlagSet("proxy", env)
	xdsAddr := fs.String("xds", "", "the xDS server: a unix socket `path` (or unix:///path) or host:port (an agent's --xds-addr)")
	node := fs.String("node", "", "the xDS node `name`: an agent's node name makes this that host's mesh proxy (default: the host name)")
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
	logger := newLogger(Config{LogLevel: *logLevel, LogJSON: *logJSON}, env.stderr).With("component", "proxy")
	p, err := proxy.New(proxy.Config{XDSAddr: target, Node: *node, Logger: logger})
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
