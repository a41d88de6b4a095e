package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// TelemetryConfig is the `telemetry` block: distributed tracing and
// where access logs may be written (docs/observability.md).
type TelemetryConfig struct {
	Tracing TracingConfig `hcl:"tracing"`
	// AccessLogDir is the only directory the in-process proxy writes file
	// access logs in: proxy-defaults' AccessLogs.Path comes from the
	// cluster (anyone with mesh:write), so the host bounds it. A path
	// outside is refused with a warn line. Empty: DefaultAccessLogDir, or
	// under -dev the data dir's DevAccessLogSubdir (AccessLogDirFor).
	AccessLogDir string `hcl:"access_log_dir"`
}

// TracingConfig is `telemetry { tracing { … } }`: where and how the
// agent exports its spans over OTLP. The standard OTEL_* environment
// variables override each field (as in every OpenTelemetry SDK); with no
// endpoint here nor in OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, tracing is
// off.
type TracingConfig struct {
	// Endpoint is the OTLP receiver: a URL (http:// sends without TLS)
	// or host:port (TLS unless insecure).
	Endpoint string `hcl:"endpoint"`
	// Protocol is "grpc" or "http/protobuf" (the default, as in
	// OpenTelemetry).
	Protocol string `hcl:"protocol"`
	// SampleRatio is the share of new traces recorded (default 0.01); a
	// request whose caller sampled its trace is always recorded.
	SampleRatio float64 `hcl:"sample_ratio"`
	// Insecure sends without TLS; CAFile verifies the receiver's
	// certificate (default: the system roots).
	Insecure bool   `hcl:"insecure"`
	CAFile   string `hcl:"ca_file"`
	// ServiceName is the spans' service.name (default "vmesh").
	ServiceName string `hcl:"service_name"`
}

// DefaultSampleRatio is telemetry.tracing.sample_ratio's default (the
// same as telemetry.DefaultSampleRatio, which says why).
const DefaultSampleRatio = 0.01

func (c *Config) validateTelemetry() []error {
	errs := c.validateAccessLogDir()
	t := c.Telemetry.Tracing
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("telemetry.tracing.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch t.Protocol {
	case "", "grpc", "http/protobuf":
	default:
		bad("protocol", "%q is not grpc or http/protobuf", t.Protocol)
	}
	if t.SampleRatio < 0 || t.SampleRatio > 1 {
		bad("sample_ratio", "must be between 0 and 1, got %v", t.SampleRatio)
	}
	if e := t.Endpoint; e != "" {
		if strings.Contains(e, "://") {
			u, err := url.Parse(e)
			switch {
			case err != nil:
				bad("endpoint", "%q is not a URL: %v", e, err)
			case u.Scheme != "http" && u.Scheme != "https":
				bad("endpoint", "%q: the scheme must be http or https", e)
			case u.Host == "":
				bad("endpoint", "%q has no host", e)
			}
		} else if strings.ContainsAny(e, "/ ") || !strings.Contains(e, ":") {
			bad("endpoint", "%q is neither a URL nor host:port", e)
		}
	}
	if t.CAFile != "" {
		if t.Insecure {
			bad("ca_file", "is set but insecure = true sends without TLS")
		} else if _, err := os.Stat(t.CAFile); err != nil {
			bad("ca_file", "%v", err)
		}
	}
	return errs
}

// DefaultAccessLogDir is where a (non -dev) agent's proxy may write file
// access logs.
const DefaultAccessLogDir = "/var/log/vmesh"

// DevAccessLogSubdir is, under -dev, the default access log directory
// inside the data dir (a temp dir unless -data-dir is given).
const DevAccessLogSubdir = "access-logs"

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

// validateAccessLogDir checks telemetry.access_log_dir.
func (c *Config) validateAccessLogDir() []error {
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
