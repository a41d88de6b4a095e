package raft

import (
	"context"

	"github.com/vmesh/vmesh/discovery"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Tracing of writes: a "raft.apply" span around a write the leader
// commits (its command type and index), and a "raft.forward" client span
// around a write sent to the leader, whose trace context rides in the
// ForwardRequest so the leader's apply span is its child. Without a
// TracerProvider the tracer is nil and none of this runs.

const tracerName = "github.com/vmesh/vmesh/raft"

var w3c = propagation.TraceContext{}

// newTracer is tp's tracer, nil for a nil provider.
func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(tracerName)
}

// startWriteSpan starts a write's span when tracing (else returns ctx and
// a nil span).
func startWriteSpan(ctx context.Context, tracer trace.Tracer, name string, kind trace.SpanKind, buf []byte) (context.Context, trace.Span) {
	if tracer == nil {
		return ctx, nil
	}
	ctx, span := tracer.Start(ctx, name, trace.WithSpanKind(kind))
	if span.IsRecording() && len(buf) > 0 {
		t := discovery.MessageType(buf[0]) &^ discovery.IgnoreUnknownTypeFlag
		span.SetAttributes(attribute.Int("vmesh.raft.command", int(t)))
	}
	return ctx, span
}

// endWriteSpan ends a write's span with its index and outcome.
func endWriteSpan(span trace.Span, index uint64, err error) {
	if span == nil {
		return
	}
	if span.IsRecording() {
		if index > 0 {
			span.SetAttributes(attribute.Int64("vmesh.raft.index", int64(index)))
		}
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

// traceparent is ctx's span as a W3C traceparent ("" when none).
func traceparent(ctx context.Context) string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return ""
	}
	c := propagation.MapCarrier{}
	w3c.Inject(ctx, c)
	return c["traceparent"]
}

// withTraceparent continues the trace a forwarded write carries.
func withTraceparent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return w3c.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}
