package telemetry

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

func envOf(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestResolve(t *testing.T) {
	file := TracingConfig{Endpoint: "collector:4317", Protocol: ProtocolGRPC, SampleRatio: 0.5, ServiceName: "from-file"}
	for _, c := range []struct {
		name string
		cfg  TracingConfig
		env  []string
		want Settings
	}{
		{"off without an endpoint", TracingConfig{SampleRatio: DefaultSampleRatio}, nil,
			Settings{Protocol: ProtocolHTTP, Sampler: "parentbased_traceidratio", Ratio: DefaultSampleRatio, ServiceName: DefaultServiceName}},
		{"the file alone", file, nil,
			Settings{Enabled: true, Endpoint: "https://collector:4317", Protocol: ProtocolGRPC, Sampler: "parentbased_traceidratio", Ratio: 0.5, ServiceName: "from-file"}},
		{"env overrides the file", file, []string{
			"OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf",
			"OTEL_TRACES_SAMPLER", "always_on", "OTEL_TRACES_SAMPLER_ARG", "0.1", "OTEL_SERVICE_NAME", "from-env"},
			Settings{Enabled: true, Endpoint: "http://env:4318/v1/traces", Protocol: ProtocolHTTP, Sampler: "always_on", Ratio: 0.1, ServiceName: "from-env"}},
		{"the traces endpoint is used as it is and wins", TracingConfig{}, []string{
			"OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4318/custom"},
			Settings{Enabled: true, Endpoint: "http://traces:4318/custom", Protocol: ProtocolHTTP, Sampler: "parentbased_traceidratio", ServiceName: DefaultServiceName}},
		{"OTEL_SDK_DISABLED turns it off", file, []string{"OTEL_SDK_DISABLED", "true"},
			Settings{Endpoint: "https://collector:4317", Protocol: ProtocolGRPC, Sampler: "parentbased_traceidratio", Ratio: 0.5, ServiceName: "from-file"}},
		{"exporter none turns it off", file, []string{"OTEL_TRACES_EXPORTER", "none"},
			Settings{Endpoint: "https://collector:4317", Protocol: ProtocolGRPC, Sampler: "parentbased_traceidratio", Ratio: 0.5, ServiceName: "from-file"}},
		{"insecure and certificate from env", file, []string{"OTEL_EXPORTER_OTLP_INSECURE", "true", "OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"},
			Settings{Enabled: true, Endpoint: "https://collector:4317", Protocol: ProtocolGRPC, Sampler: "parentbased_traceidratio", Ratio: 0.5, Insecure: true, CAFile: "/ca.pem", ServiceName: "from-file"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Resolve(c.cfg, envOf(c.env...))
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("Resolve =\n %+v\nwant\n %+v", got, c.want)
			}
		})
	}
}

func TestResolveErrorsNameTheSetting(t *testing.T) {
	for _, c := range []struct {
		cfg  TracingConfig
		env  []string
		want string
	}{
		{TracingConfig{}, []string{"OTEL_EXPORTER_OTLP_PROTOCOL", "thrift"}, `OTEL_EXPORTER_OTLP_PROTOCOL: "thrift" is not grpc or http/protobuf`},
		{TracingConfig{}, []string{"OTEL_TRACES_SAMPLER", "sometimes"}, `OTEL_TRACES_SAMPLER: "sometimes" is not one of`},
		{TracingConfig{}, []string{"OTEL_TRACES_SAMPLER_ARG", "2"}, `OTEL_TRACES_SAMPLER_ARG: "2" is not a ratio between 0 and 1`},
		{TracingConfig{}, []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://x:1"}, `OTEL_EXPORTER_OTLP_ENDPOINT: "ftp://x:1/v1/traces": the scheme must be http or https`},
		{TracingConfig{}, []string{"OTEL_TRACES_EXPORTER", "zipkin"}, `OTEL_TRACES_EXPORTER: "zipkin" is not supported`},
		{TracingConfig{}, []string{"OTEL_EXPORTER_OTLP_INSECURE", "maybe"}, `OTEL_EXPORTER_OTLP_INSECURE: "maybe" is not true or false`},
		{TracingConfig{SampleRatio: -1}, nil, `telemetry.tracing.sample_ratio: -1 is not between 0 and 1`},
		{TracingConfig{Endpoint: "no port/path"}, nil, `telemetry.tracing.endpoint: "no port/path" is neither a URL nor host:port`},
	} {
		_, err := Resolve(c.cfg, envOf(c.env...))
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v %v: error %v, want one containing %q", c.cfg, c.env, err, c.want)
		}
	}
}

func TestNewTracingOffHasNoProvider(t *testing.T) {
	tr, err := NewTracing(context.Background(), TracingConfig{SampleRatio: 1}, envOf())
	if err != nil {
		t.Fatal(err)
	}
	if tr.TracerProvider() != nil {
		t.Fatal("tracing without an endpoint has a provider; callers would make spans")
	}
}

// TestNewTracingExportsOverBothProtocols: a span reaches a real OTLP
// receiver over gRPC and over HTTP, with the configured service name.
func TestNewTracingExportsOverBothProtocols(t *testing.T) {
	otlp := testkit.StartOTLP(t, "127.0.0.1")
	for _, c := range []struct{ proto, endpoint, kind string }{
		{ProtocolGRPC, "http://" + otlp.GRPCAddr, "grpc"},
		{ProtocolHTTP, otlp.HTTPURL + "/v1/traces", "http"},
	} {
		tr, err := NewTracing(context.Background(), TracingConfig{Endpoint: c.endpoint, Protocol: c.proto, SampleRatio: 1, ServiceName: "svc-" + c.kind}, envOf())
		if err != nil {
			t.Fatal(err)
		}
		_, span := tr.TracerProvider().Tracer("test").Start(context.Background(), "span-"+c.kind)
		span.End()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := tr.Shutdown(ctx); err != nil {
			t.Fatalf("%s: %v", c.proto, err)
		}
		cancel()
		if otlp.Requests(c.kind) == 0 {
			t.Errorf("%s: no export reached the receiver", c.proto)
		}
	}
	names := map[string]string{}
	for _, s := range otlp.Spans() {
		names[s.Name] = s.Service
	}
	if names["span-grpc"] != "svc-grpc" || names["span-http"] != "svc-http" {
		t.Errorf("received spans (name: service) %v", names)
	}
}
