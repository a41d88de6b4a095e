package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
)

// TelemetryConfig is the `telemetry` block: distributed tracing for now
// (docs/observability.md).
type TelemetryConfig struct {
	Tracing TracingConfig `hcl:"tracing"`
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
	var errs []error
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
