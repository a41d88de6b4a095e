package telemetry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/credentials"
)

// Protocols of the OTLP exporter (OTEL_EXPORTER_OTLP_PROTOCOL's values).
const (
	ProtocolGRPC = "grpc"
	ProtocolHTTP = "http/protobuf"
)

// DefaultSampleRatio is the share of new traces sampled when neither the
// config nor OTEL_TRACES_SAMPLER_ARG says: 1%. The proxy sees every
// request of every service on its host, and a span pair per hop for all
// of them is more than most backends want; the sampler is parent-based,
// so a trace an application (or an upstream proxy) sampled is recorded
// whole whatever the ratio. It is the usual mesh default (Istio's).
const DefaultSampleRatio = 0.01

// DefaultServiceName is the service.name of the agent's spans when
// neither OTEL_SERVICE_NAME nor the config names one.
const DefaultServiceName = "vmesh"

// ErrConfig marks a tracing setting that cannot be used.
var ErrConfig = errors.New("telemetry: invalid tracing setting")

// TracingConfig is the agent's `telemetry { tracing { … } }` block. The
// standard OTEL_* environment variables override each of its fields
// (see Resolve): that is what OpenTelemetry users expect of any SDK, and
// it lets an operator point one agent elsewhere from its unit file.
type TracingConfig struct {
	// Endpoint is the OTLP receiver: a URL ("http://collector:4318",
	// "https://collector:4317") or host:port. Empty and no OTEL_*
	// endpoint: tracing is off.
	Endpoint string
	// Protocol is "grpc" or "http/protobuf" (empty: http/protobuf, the
	// OpenTelemetry default).
	Protocol string
	// SampleRatio is the share of new traces (no sampled parent) that are
	// recorded, 0 to 1.
	SampleRatio float64
	// Insecure sends without TLS; CAFile is a PEM bundle to verify the
	// receiver with (empty: the system roots).
	Insecure bool
	CAFile   string
	// ServiceName is the service.name resource attribute (empty: "vmesh").
	ServiceName string
	// Attributes are more resource attributes (e.g. host.name).
	Attributes map[string]string
}

// Settings are the resolved tracing settings: the config with the
// environment applied.
type Settings struct {
	Enabled     bool
	Endpoint    string // a URL
	Protocol    string
	Sampler     string // an OTEL_TRACES_SAMPLER value
	Ratio       float64
	Insecure    bool
	CAFile      string
	ServiceName string
}

// Resolve applies the environment (getenv, os.Getenv in the agent) to
// cfg. Environment variables win over the file:
//
//   - OTEL_SDK_DISABLED=true, or OTEL_TRACES_EXPORTER=none: tracing off.
//   - OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (used as it is), else
//     OTEL_EXPORTER_OTLP_ENDPOINT (/v1/traces appended for HTTP).
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL.
//   - OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG (the ratio; without
//     it, the config's sample_ratio).
//   - OTEL_EXPORTER_OTLP_[TRACES_]INSECURE, OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE.
//   - OTEL_SERVICE_NAME.
//
// Tracing is on when an endpoint is known. Headers, timeout and
// compression (OTEL_EXPORTER_OTLP_HEADERS, …) are read by the exporter
// itself, and OTEL_RESOURCE_ATTRIBUTES by the resource.
func Resolve(cfg TracingConfig, getenv func(string) string) (Settings, error) {
	env := func(keys ...string) (string, string) {
		for _, k := range keys {
			if v := strings.TrimSpace(getenv(k)); v != "" {
				return k, v
			}
		}
		return "", ""
	}
	s := Settings{Protocol: cfg.Protocol, Ratio: cfg.SampleRatio, Insecure: cfg.Insecure, CAFile: cfg.CAFile,
		ServiceName: cfg.ServiceName, Sampler: "parentbased_traceidratio"}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s", ErrConfig, key, fmt.Sprintf(format, args...)))
	}
	if k, v := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"); v != "" {
		s.Protocol = v
		if v != ProtocolGRPC && v != ProtocolHTTP {
			bad(k, "%q is not grpc or http/protobuf", v)
		}
	}
	if s.Protocol == "" {
		s.Protocol = ProtocolHTTP
	}
	endpoint, endpointKey := cfg.Endpoint, "telemetry.tracing.endpoint"
	if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")); v != "" {
		endpoint, endpointKey = v, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	} else if v := strings.TrimSpace(getenv("OTEL_EXPORTER_OTLP_ENDPOINT")); v != "" {
		endpoint, endpointKey = v, "OTEL_EXPORTER_OTLP_ENDPOINT"
		if s.Protocol == ProtocolHTTP {
			endpoint = strings.TrimSuffix(endpoint, "/") + "/v1/traces"
		}
	}
	if endpoint != "" {
		u, err := endpointURL(endpoint, s.Protocol)
		if err != nil {
			bad(endpointKey, "%v", err)
		}
		s.Endpoint, s.Enabled = u, err == nil
	}
	if k, v := env("OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_EXPORTER_OTLP_INSECURE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad(k, "%q is not true or false", v)
		}
		s.Insecure = b
	}
	if _, v := env("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_CERTIFICATE"); v != "" {
		s.CAFile = v
	}
	if v := strings.TrimSpace(getenv("OTEL_SERVICE_NAME")); v != "" {
		s.ServiceName = v
	}
	if s.ServiceName == "" {
		s.ServiceName = DefaultServiceName
	}
	if v := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")); v != "" {
		switch v {
		case "always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio":
			s.Sampler = v
		default:
			bad("OTEL_TRACES_SAMPLER", "%q is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio", v)
		}
	}
	if v := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG")); v != "" {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 || r > 1 {
			bad("OTEL_TRACES_SAMPLER_ARG", "%q is not a ratio between 0 and 1", v)
		}
		s.Ratio = r
	} else if s.Ratio < 0 || s.Ratio > 1 {
		bad("telemetry.tracing.sample_ratio", "%v is not between 0 and 1", s.Ratio)
	}
	if v := strings.TrimSpace(getenv("OTEL_SDK_DISABLED")); strings.EqualFold(v, "true") {
		s.Enabled = false
	}
	if v := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); v != "" {
		switch v {
		case "none":
			s.Enabled = false
		case "otlp":
		default:
			bad("OTEL_TRACES_EXPORTER", "%q is not supported (otlp or none)", v)
		}
	}
	return s, errors.Join(errs...)
}

// endpointURL makes endpoint a URL: host:port gets http:// (insecure
// follows Insecure then) or, for gRPC, stays without a path.
func endpointURL(endpoint, protocol string) (string, error) {
	if !strings.Contains(endpoint, "://") {
		if strings.ContainsAny(endpoint, "/ ") {
			return "", fmt.Errorf("%q is neither a URL nor host:port", endpoint)
		}
		endpoint = "https://" + endpoint
		if protocol == ProtocolHTTP {
			endpoint += "/v1/traces"
		}
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", fmt.Errorf("%q: %v", endpoint, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%q: the scheme must be http or https", endpoint)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%q has no host", endpoint)
	}
	return u.String(), nil
}

// Sampler is the sampler the settings name.
func (s Settings) sampler() sdktrace.Sampler {
	switch s.Sampler {
	case "always_on":
		return sdktrace.AlwaysSample()
	case "always_off":
		return sdktrace.NeverSample()
	case "traceidratio":
		return sdktrace.TraceIDRatioBased(s.Ratio)
	case "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample())
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample())
	}
	return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(s.Ratio))
}

// Tracing is the agent's trace pipeline.
type Tracing struct {
	Settings Settings
	sdk      *sdktrace.TracerProvider
}

// NewTracing resolves cfg against the environment and, when tracing is
// on, builds the provider and its exporter (which connects lazily: an
// unreachable receiver costs dropped spans, never a failed start).
func NewTracing(ctx context.Context, cfg TracingConfig, getenv func(string) string) (*Tracing, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	s, err := Resolve(cfg, getenv)
	if err != nil {
		return nil, err
	}
	t := &Tracing{Settings: s}
	if !s.Enabled {
		return t, nil
	}
	exp, err := newExporter(ctx, s)
	if err != nil {
		return nil, err
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", s.ServiceName)}
	for k, v := range cfg.Attributes {
		attrs = append(attrs, attribute.String(k, v))
	}
	// The environment's resource attributes first, then ours over them.
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithTelemetrySDK(), resource.WithAttributes(attrs...))
	if err != nil && res == nil {
		return nil, fmt.Errorf("telemetry: building the resource: %w", err)
	}
	t.sdk = sdktrace.NewTracerProvider(
		sdktrace.WithSampler(s.sampler()),
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
	)
	return t, nil
}

func newExporter(ctx context.Context, s Settings) (*otlptrace.Exporter, error) {
	var tlsCfg *tls.Config
	if s.CAFile != "" && !s.Insecure {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: ca_file: %v", ErrConfig, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: ca_file: %s holds no PEM certificate", ErrConfig, s.CAFile)
		}
		tlsCfg = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	u, _ := url.Parse(s.Endpoint)
	insecure := s.Insecure || u.Scheme == "http"
	if s.Protocol == ProtocolGRPC {
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(u.Host)}
		switch {
		case insecure:
			opts = append(opts, otlptracegrpc.WithInsecure())
		case tlsCfg != nil:
			opts = append(opts, otlptracegrpc.WithTLSCredentials(credentials.NewTLS(tlsCfg)))
		}
		return otlptracegrpc.New(ctx, opts...)
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(u.Host), otlptracehttp.WithURLPath(u.Path)}
	switch {
	case insecure:
		opts = append(opts, otlptracehttp.WithInsecure())
	case tlsCfg != nil:
		opts = append(opts, otlptracehttp.WithTLSClientConfig(tlsCfg))
	}
	return otlptracehttp.New(ctx, opts...)
}

// TracerProvider is the provider to hand to instrumented packages; nil
// when tracing is off, which they take as "no spans at all".
func (t *Tracing) TracerProvider() trace.TracerProvider {
	if t == nil || t.sdk == nil {
		return nil
	}
	return t.sdk
}

// ForceFlush exports the spans ended so far.
func (t *Tracing) ForceFlush(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	return t.sdk.ForceFlush(ctx)
}

// Shutdown flushes and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	return t.sdk.Shutdown(ctx)
}
