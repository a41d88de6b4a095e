package xds

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Tracing of pushes: one "xds.push" span per catalog view the server
// brings its clients to (views are debounced, so this is a few per
// second at most), with the view's raft index, the clients it served and
// how many got a new snapshot. Without a TracerProvider nothing runs.

// startPush starts a push's span (nil when not tracing).
func (s *Server) startPush(v *View, clients int) trace.Span {
	if s.cfg.TracerProvider == nil {
		return nil
	}
	_, span := s.cfg.TracerProvider.Tracer("github.com/vmesh/vmesh/dataplane/xds").Start(context.Background(), "xds.push",
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(attribute.Int64("vmesh.xds.index", int64(v.Index)), attribute.Int("vmesh.xds.clients", clients)))
	return span
}

// endPush ends it with the number of snapshots set.
func endPush(span trace.Span, pushed int) {
	if span == nil {
		return
	}
	span.SetAttributes(attribute.Int("vmesh.xds.pushed", pushed))
	span.End()
}
