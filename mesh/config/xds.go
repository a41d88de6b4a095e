package config

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
)

// DefaultAdminPort is the admin listener's port (the proxy's admin:
// /config_dump and /metrics).
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

// RuntimeDir is where the xDS socket lives: systemd's RuntimeDirectory
// (/run/vmesh, the unit sets it) when there is one, else the data dir.
func (c *Config) RuntimeDir() string {
	if d := os.Getenv("RUNTIME_DIRECTORY"); d != "" {
		return filepath.SplitList(d)[0]
	}
	return c.DataDir
}

// XDSSocketPath returns the xDS socket path and creates its directory. A
// path too long for a unix socket (a deep data dir) moves to a directory
// in the temp dir named after the data dir, so it is stable across
// restarts; cleanup is that directory, or "" when there is none to remove.
func (c *Config) XDSSocketPath() (path, cleanup string, err error) {
	path = filepath.Join(c.RuntimeDir(), xdsSocketName)
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
