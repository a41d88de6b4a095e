// Package telemetry builds the agent's OpenTelemetry trace pipeline: a
// TracerProvider with a parent-based ratio sampler and a batching OTLP
// exporter (gRPC or HTTP/protobuf), configured by the agent's
// `telemetry { tracing { … } }` block and the standard OTEL_* environment
// variables, which win over the file (tracing.go says how).
//
// Data in: a TracingConfig and an environment lookup. Data out: a
// trace.TracerProvider (nil when tracing is off, so callers skip all
// span work) that the composition root hands to the proxy, the HTTP API,
// raft and the xDS server, and spans exported to the configured
// endpoint.
//
// It must not import any vmesh package: the packages it serves take the
// OpenTelemetry API's interfaces, not this package.
package telemetry
