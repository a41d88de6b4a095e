package config

import (
	"fmt"
	"path/filepath"
	"strings"
)

// DefaultAccessLogDir is where a (non -dev) agent's proxy may write file
// access logs.
const DefaultAccessLogDir = "/var/log/vmesh"

// DevAccessLogSubdir is, under -dev, the default access log directory
// inside the data dir (a temp dir unless -data-dir is given).
const DevAccessLogSubdir = "access-logs"

// TelemetryConfig is what the agent writes about the traffic it carries.
type TelemetryConfig struct {
	// AccessLogDir is the only directory the in-process proxy writes file
	// access logs in: proxy-defaults' AccessLogs.Path comes from the
	// cluster (anyone with mesh:write), so the host bounds it. A path
	// outside is refused with a warn line. Empty: DefaultAccessLogDir, or
	// under -dev the data dir's DevAccessLogSubdir (AccessLogDirFor).
	AccessLogDir string `hcl:"access_log_dir"`
}

// AccessLogDirFor is the access log directory in effect, given the data
// dir the agent runs with (-dev makes a temp one at start).
func (c *Config) AccessLogDirFor(dataDir string) string {
	switch {
	case c.Telemetry.AccessLogDir != "":
		return filepath.Clean(c.Telemetry.AccessLogDir)
	case c.Dev && dataDir != "":
		return filepath.Join(dataDir, DevAccessLogSubdir)
	default:
		return DefaultAccessLogDir
	}
}

func (c *Config) validateTelemetry() []error {
	var errs []error
	d := c.Telemetry.AccessLogDir
	switch {
	case d == "":
	case !filepath.IsAbs(d):
		errs = append(errs, fmt.Errorf("telemetry.access_log_dir: %q is not an absolute path", d))
	case filepath.Clean(d) == "/":
		errs = append(errs, fmt.Errorf("telemetry.access_log_dir: %q would let the cluster's proxy-defaults write any file; name a directory for logs only", d))
	default:
		for _, sys := range []string{"/proc", "/sys", "/dev"} {
			if c := filepath.Clean(d); c == sys || strings.HasPrefix(c, sys+"/") {
				errs = append(errs, fmt.Errorf("telemetry.access_log_dir: %q is under %s", d, sys))
			}
		}
	}
	return errs
}
