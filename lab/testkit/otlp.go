package testkit

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// OTLP is a real OTLP trace receiver for tests: the TraceService over
// gRPC and POST /v1/traces (binary protobuf) over HTTP, both plaintext on
// loopback. It keeps every span it is sent.
type OTLP struct {
	// GRPCAddr is host:port of the gRPC receiver; HTTPURL the HTTP
	// receiver's base URL (the exporter appends /v1/traces).
	GRPCAddr string
	HTTPURL  string

	mu    sync.Mutex
	spans []Span
	// requests counts export calls, by protocol.
	requests map[string]int
}

// Span is a received span with its resource's service.name.
type Span struct {
	Service string
	*tracepb.Span
}

// TraceID and SpanID are the span's IDs in hex; ParentID its parent's
// ("" for a root).
func (s Span) TraceID() string { return hex.EncodeToString(s.Span.TraceId) }
func (s Span) SpanID() string  { return hex.EncodeToString(s.Span.SpanId) }
func (s Span) ParentID() string {
	return hex.EncodeToString(s.Span.ParentSpanId)
}

// Attr is the span's attribute key as text ("" when absent).
func (s Span) Attr(key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return anyValue(kv.Value)
		}
	}
	return ""
}

func anyValue(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	case *commonpb.AnyValue_ArrayValue:
		var parts []string
		for _, e := range x.ArrayValue.GetValues() {
			parts = append(parts, anyValue(e))
		}
		return strings.Join(parts, ",")
	}
	return ""
}

type otlpGRPC struct {
	collectortrace.UnimplementedTraceServiceServer
	o *OTLP
}

func (g otlpGRPC) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	g.o.add("grpc", req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

// StartOTLP runs a receiver on ip (a loopback address) until the test
// ends.
func StartOTLP(t testing.TB, ip string) *OTLP {
	t.Helper()
	o := &OTLP{requests: map[string]int{}}
	gl, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, otlpGRPC{o: o})
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)
	o.GRPCAddr = gl.Addr().String()

	hl, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "application/x-protobuf" {
			http.Error(w, "content type "+ct+" is not application/x-protobuf", http.StatusUnsupportedMediaType)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		o.add("http", &req)
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })
	o.HTTPURL = "http://" + hl.Addr().String()
	return o
}

func (o *OTLP) add(proto string, req *collectortrace.ExportTraceServiceRequest) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.requests[proto]++
	for _, rs := range req.GetResourceSpans() {
		svc := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				svc = anyValue(kv.Value)
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				o.spans = append(o.spans, Span{Service: svc, Span: sp})
			}
		}
	}
}

// Spans are the spans received so far.
func (o *OTLP) Spans() []Span {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]Span(nil), o.spans...)
}

// Requests is how many export calls came over proto ("grpc" or "http").
func (o *OTLP) Requests(proto string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.requests[proto]
}

// Trace is the received spans of one trace (hex ID).
func (o *OTLP) Trace(traceID string) []Span {
	var out []Span
	for _, s := range o.Spans() {
		if s.TraceID() == traceID {
			out = append(out, s)
		}
	}
	return out
}
