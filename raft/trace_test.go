package raft

import (
	"context"
	"testing"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestApplySpans: a write the leader commits is a raft.apply span, child
// of the caller's span, with its index; a write the catalog refuses is
// an Error span. Without a provider no span is made (the tracer is nil).
func TestApplySpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	s, err := Open(Config{NodeID: "node-1", Addr: "127.0.0.1:8300", DataDir: t.TempDir(), Bootstrap: true,
		Logger: testkit.Logger(t).With("component", "raft"), TracerProvider: tp}, discovery.NewStore())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	hurryElection(t, s)
	waitLeader(t, s)

	ctx, parent := tp.Tracer("test").Start(context.Background(), "caller")
	idx, err := s.Apply(ctx, nodeCmd("n1"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Apply(ctx, discovery.KVRequest{Op: discovery.KVCAS, Entry: discovery.KVEntry{Key: "k", ModifyIndex: 12345}})
	if err == nil {
		t.Fatal("a CAS conflict applied")
	}
	parent.End()

	var applies []sdktrace.ReadOnlySpan
	for _, sp := range rec.Ended() {
		if sp.Name() == "raft.apply" {
			applies = append(applies, sp)
		}
	}
	if len(applies) != 2 {
		t.Fatalf("%d raft.apply spans, want 2", len(applies))
	}
	for _, sp := range applies {
		if sp.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("raft.apply's parent = %v, want the caller's span", sp.Parent().SpanID())
		}
	}
	attrs := map[attribute.Key]attribute.Value{}
	for _, kv := range applies[0].Attributes() {
		attrs[kv.Key] = kv.Value
	}
	if attrs["vmesh.raft.index"].AsInt64() != int64(idx) || attrs["vmesh.raft.command"].AsInt64() != int64(discovery.RegisterNodeType) {
		t.Errorf("first apply's attributes %v, want index %d and the node command", applies[0].Attributes(), idx)
	}
	if applies[0].Status().Code == codes.Error || applies[1].Status().Code != codes.Error {
		t.Errorf("statuses %v, %v; want the refused CAS (only) an Error", applies[0].Status(), applies[1].Status())
	}
	if newTracer(nil) != nil {
		t.Error("a nil provider gives a tracer: writes would make spans with tracing off")
	}
}
