package proxy_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/telemetry"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// tracedMesh is the mesh fixture with each proxy exporting to one real
// OTLP receiver: node-a over gRPC, node-b over HTTP/protobuf.
type tracedMesh struct {
	*meshFixture
	otlp    *testkit.OTLP
	tracing []*telemetry.Tracing
}

func newTracedMesh(t *testing.T, ratio float64) *tracedMesh {
	t.Helper()
	otlp := testkit.StartOTLP(t, "127.0.0.1")
	tm := &tracedMesh{otlp: otlp}
	noEnv := func(string) string { return "" }
	tps := map[string]trace.TracerProvider{}
	for node, cfg := range map[string]telemetry.TracingConfig{
		"node-a": {Endpoint: "http://" + otlp.GRPCAddr, Protocol: telemetry.ProtocolGRPC},
		"node-b": {Endpoint: otlp.HTTPURL + "/v1/traces", Protocol: telemetry.ProtocolHTTP},
	} {
		cfg.SampleRatio, cfg.ServiceName = ratio, node
		tr, err := telemetry.NewTracing(context.Background(), cfg, noEnv)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tr.Shutdown(context.Background()) })
		tm.tracing = append(tm.tracing, tr)
		tps[node] = tr.TracerProvider()
	}
	tm.meshFixture = newMeshFixtureTraced(t, nil, func(node string) trace.TracerProvider { return tps[node] })
	return tm
}

// flush exports what both proxies ended so far.
func (tm *tracedMesh) flush() {
	tm.t.Helper()
	for _, tr := range tm.tracing {
		if err := tr.ForceFlush(context.Background()); err != nil {
			tm.t.Fatalf("flushing spans: %v", err)
		}
	}
}

// hop is the client and the server span of trace id, waited for.
func (tm *tracedMesh) hop(t *testing.T, traceID string) (client, server testkit.Span) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, "a client and a server span of trace "+traceID, func() bool {
		tm.flush()
		client, server = testkit.Span{}, testkit.Span{}
		for _, s := range tm.otlp.Trace(traceID) {
			switch s.Kind {
			case tracepb.Span_SPAN_KIND_CLIENT:
				client = s
			case tracepb.Span_SPAN_KIND_SERVER:
				server = s
			}
		}
		return client.Span != nil && server.Span != nil
	})
	if n := len(tm.otlp.Trace(traceID)); n != 2 {
		t.Errorf("trace %s has %d spans, want one client and one server span", traceID, n)
	}
	if client.Service != "node-a" || server.Service != "node-b" {
		t.Errorf("client span from %q, server span from %q; want node-a and node-b", client.Service, server.Service)
	}
	if server.ParentID() != client.SpanID() {
		t.Errorf("server span's parent = %s, want the client span %s", server.ParentID(), client.SpanID())
	}
	return client, server
}

func wantAttrs(t *testing.T, s testkit.Span, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := s.Attr(k); got != v {
			t.Errorf("%s span %q: %s = %q, want %q", s.Kind, s.Name, k, got, v)
		}
	}
}

// traceparentOf splits a traceparent: trace ID, parent span ID, flags.
func traceparentOf(t *testing.T, v string) (string, string, string) {
	t.Helper()
	p := strings.Split(v, "-")
	if len(p) != 4 || p[0] != "00" || len(p[1]) != 32 || len(p[2]) != 16 {
		t.Fatalf("traceparent %q is not W3C", v)
	}
	return p[1], p[2], p[3]
}

// TestMeshTracing: requests through node-a's outbound and node-b's
// inbound side make a client and a server span, exported to a real OTLP
// receiver over gRPC (node-a) and HTTP (node-b), continuing the caller's
// trace (W3C or B3); the app gets a traceparent whose parent is the
// server span, and an x-request-id.
func TestMeshTracing(t *testing.T) {
	tm := newTracedMesh(t, 1)
	web := startHTTPApp(t, "web", false)
	tm.service("web", "web-1", "http", web.port, false)
	tm.service("greeter", "greeter-1", "grpc", startGRPCApp(t, "greeter"), false)
	tm.client("web", "greeter")
	tm.waitHTTP(tm.url("web", "/"), 200)
	h1 := &http.Client{Timeout: 5 * time.Second}

	t.Run("w3c", func(t *testing.T) {
		const tid, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
		req := newReq(t, "GET", tm.url("web", "/traced?x=1"), nil)
		req.Header.Set("Traceparent", "00-"+tid+"-"+caller+"-01")
		req.Header.Set("Tracestate", "vendor=kept")
		resp, s, _ := do(t, h1, req)
		if resp.StatusCode != 200 {
			t.Fatalf("GET = %d", resp.StatusCode)
		}
		client, server := tm.hop(t, tid)
		if client.ParentID() != caller {
			t.Errorf("client span's parent = %s, want the caller's span %s", client.ParentID(), caller)
		}
		gotTID, parent, flags := traceparentOf(t, s.Header.Get("Traceparent"))
		if gotTID != tid || parent != server.SpanID() || flags != "01" {
			t.Errorf("the app got traceparent %q; want trace %s, parent %s (the server span), sampled", s.Header.Get("Traceparent"), tid, server.SpanID())
		}
		if ts := s.Header.Get("Tracestate"); ts != "vendor=kept" {
			t.Errorf("the app got tracestate %q, want vendor=kept", ts)
		}
		id := s.Header.Get("X-Request-Id")
		if !uuidV4.MatchString(id) {
			t.Errorf("the app got x-request-id %q, want a generated UUIDv4", id)
		}
		common := map[string]string{
			"http.request.method": "GET", "url.path": "/traced", "http.response.status_code": "200",
			"network.protocol.version": "1.1", "http.request.header.x-request-id": id,
		}
		wantAttrs(t, client, common)
		wantAttrs(t, server, common)
		wantAttrs(t, client, map[string]string{"vmesh.peer.spiffe_id": "spiffe://vmesh.local/svc/web", "server.address": "127.0.0.2"})
		wantAttrs(t, server, map[string]string{"vmesh.peer.spiffe_id": "spiffe://vmesh.local/svc/client"})
		for _, sp := range []testkit.Span{client, server} {
			if sp.Attr("vmesh.upstream.cluster") == "" || sp.Name != "GET" {
				t.Errorf("%s span: name %q, cluster %q", sp.Kind, sp.Name, sp.Attr("vmesh.upstream.cluster"))
			}
			if sp.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
				t.Errorf("%s span of a 200 has status Error", sp.Kind)
			}
		}
	})

	t.Run("request id kept", func(t *testing.T) {
		req := newReq(t, "GET", tm.url("web", "/"), nil)
		req.Header.Set("X-Request-Id", "caller-chose-this")
		_, s, _ := do(t, h1, req)
		if got := s.Header.Values("X-Request-Id"); len(got) != 1 || got[0] != "caller-chose-this" {
			t.Errorf("the app got x-request-id %q, want the caller's", got)
		}
	})

	t.Run("new trace", func(t *testing.T) {
		_, s, _ := do(t, h1, newReq(t, "GET", tm.url("web", "/fresh"), nil))
		tid, parent, _ := traceparentOf(t, s.Header.Get("Traceparent"))
		client, server := tm.hop(t, tid)
		if client.ParentID() != "" {
			t.Errorf("client span of a request without trace context has parent %s, want a root", client.ParentID())
		}
		if parent != server.SpanID() {
			t.Errorf("the app's traceparent names parent %s, want the server span %s", parent, server.SpanID())
		}
	})

	t.Run("b3 multi", func(t *testing.T) {
		const tid, caller = "463ac35c9f6413ad48485a3953bb6124", "0020000000000001"
		req := newReq(t, "GET", tm.url("web", "/b3"), nil)
		req.Header.Set("X-B3-TraceId", tid)
		req.Header.Set("X-B3-SpanId", caller)
		req.Header.Set("X-B3-Sampled", "1")
		_, s, _ := do(t, h1, req)
		client, server := tm.hop(t, tid)
		if client.ParentID() != caller {
			t.Errorf("client span's parent = %s, want the B3 caller %s", client.ParentID(), caller)
		}
		if got := s.Header.Get("X-B3-Spanid"); got != server.SpanID() || s.Header.Get("X-B3-Traceid") != tid {
			t.Errorf("the app got X-B3-SpanId %q X-B3-TraceId %q, want %s %s", got, s.Header.Get("X-B3-Traceid"), server.SpanID(), tid)
		}
		if gotTID, parent, _ := traceparentOf(t, s.Header.Get("Traceparent")); gotTID != tid || parent != server.SpanID() {
			t.Errorf("the app got traceparent %q", s.Header.Get("Traceparent"))
		}
	})

	t.Run("b3 single", func(t *testing.T) {
		const tid, caller = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
		req := newReq(t, "GET", tm.url("web", "/b3single"), nil)
		req.Header.Set("B3", tid+"-"+caller+"-1")
		_, s, _ := do(t, h1, req)
		client, server := tm.hop(t, tid)
		if client.ParentID() != caller {
			t.Errorf("client span's parent = %s, want the B3 caller %s", client.ParentID(), caller)
		}
		if want := tid + "-" + server.SpanID() + "-1"; s.Header.Get("B3") != want {
			t.Errorf("the app got b3 %q, want %q", s.Header.Get("B3"), want)
		}
	})

	t.Run("5xx", func(t *testing.T) {
		const tid = "11111111111111111111111111111111"
		req := newReq(t, "GET", tm.url("web", "/?status=503"), nil)
		req.Header.Set("Traceparent", "00-"+tid+"-2222222222222222-01")
		resp, _, _ := do(t, h1, req)
		if resp.StatusCode != 503 {
			t.Fatalf("GET = %d, want the app's 503", resp.StatusCode)
		}
		client, server := tm.hop(t, tid)
		for _, sp := range []testkit.Span{client, server} {
			if sp.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || sp.Attr("http.response.status_code") != "503" {
				t.Errorf("%s span of a 503: status %v, code %q", sp.Kind, sp.Status, sp.Attr("http.response.status_code"))
			}
		}
	})

	t.Run("grpc", func(t *testing.T) {
		c := grpcClient(t, tm.addr("greeter"))
		const tid = "33333333333333333333333333333333"
		ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+tid+"-4444444444444444-01")
		if _, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
		client, server := tm.hop(t, tid)
		for _, sp := range []testkit.Span{client, server} {
			wantAttrs(t, sp, map[string]string{"rpc.system": "grpc", "rpc.service": "grpc.testing.TestService", "rpc.method": "UnaryCall",
				"rpc.grpc.status_code": "0", "network.protocol.version": "2"})
			if sp.Name != "grpc.testing.TestService/UnaryCall" {
				t.Errorf("%s span name %q", sp.Kind, sp.Name)
			}
		}

		const failTID = "55555555555555555555555555555555"
		ctx = metadata.AppendToOutgoingContext(context.Background(), "traceparent", "00-"+failTID+"-6666666666666666-01")
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.Unavailable), Message: "down"}})
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("UnaryCall = %v, want Unavailable", err)
		}
		client, server = tm.hop(t, failTID)
		for _, sp := range []testkit.Span{client, server} {
			if sp.Attr("rpc.grpc.status_code") != "14" || sp.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR {
				t.Errorf("%s span of an Unavailable call: rpc.grpc.status_code %q, status %v", sp.Kind, sp.Attr("rpc.grpc.status_code"), sp.Status)
			}
		}
	})
	if tm.otlp.Requests("grpc") == 0 || tm.otlp.Requests("http") == 0 {
		t.Errorf("exports: %d over gRPC, %d over HTTP; want both", tm.otlp.Requests("grpc"), tm.otlp.Requests("http"))
	}
}

// TestMeshTracingSampledOut: with a sample ratio of 0 no span of a new
// or unsampled trace is exported, and the trace context still goes on
// (unsampled) to the app; a sampled caller's trace is still recorded
// (the sampler follows the parent).
func TestMeshTracingSampledOut(t *testing.T) {
	tm := newTracedMesh(t, 0)
	web := startHTTPApp(t, "web", false)
	tm.service("web", "web-1", "http", web.port, false)
	tm.client("web")
	tm.waitHTTP(tm.url("web", "/"), 200)
	h1 := &http.Client{Timeout: 5 * time.Second}

	const tid = "77777777777777777777777777777777"
	req := newReq(t, "GET", tm.url("web", "/"), nil)
	req.Header.Set("Traceparent", "00-"+tid+"-8888888888888888-00")
	_, s, _ := do(t, h1, req)
	gotTID, parent, flags := traceparentOf(t, s.Header.Get("Traceparent"))
	if gotTID != tid || flags != "00" || parent == "8888888888888888" {
		t.Errorf("the app got traceparent %q; want trace %s, a new parent, unsampled", s.Header.Get("Traceparent"), tid)
	}
	_, s, _ = do(t, h1, newReq(t, "GET", tm.url("web", "/"), nil))
	if _, _, flags := traceparentOf(t, s.Header.Get("Traceparent")); flags != "00" {
		t.Errorf("a new trace's traceparent at the app = %q, want unsampled", s.Header.Get("Traceparent"))
	}
	if !uuidV4.MatchString(s.Header.Get("X-Request-Id")) {
		t.Errorf("x-request-id at the app = %q", s.Header.Get("X-Request-Id"))
	}
	// Flushing exports every span ended so far: none.
	tm.flush()
	if spans := tm.otlp.Spans(); len(spans) != 0 {
		t.Fatalf("%d spans exported with a sample ratio of 0, want none: %v", len(spans), spans[0])
	}

	// The pipeline works: a sampled parent is followed.
	const sampled = "99999999999999999999999999999999"
	req = newReq(t, "GET", tm.url("web", "/"), nil)
	req.Header.Set("Traceparent", "00-"+sampled+"-8888888888888888-01")
	do(t, h1, req)
	tm.hop(t, sampled)
}

// clientSpan waits for the client span of trace id (a call to an
// external service has no server span).
func (tm *tracedMesh) clientSpan(t *testing.T, traceID string) testkit.Span {
	t.Helper()
	var client testkit.Span
	testkit.WaitFor(t, 10*time.Second, "the client span of trace "+traceID, func() bool {
		tm.flush()
		for _, s := range tm.otlp.Trace(traceID) {
			if s.Kind == tracepb.Span_SPAN_KIND_CLIENT {
				client = s
			}
		}
		return client.Span != nil
	})
	return client
}

// TestMeshTracingRetriesAndFailures: a client span counts the retries of
// its request (an endpoint refusing connections, retried on connect
// failure), and a request no endpoint takes is an Error span with the
// proxy's 503.
func TestMeshTracingRetriesAndFailures(t *testing.T) {
	tm := newTracedMesh(t, 1)
	good := startHTTPApp(t, "good", false)
	deadPort := testkit.FreePort(t, "127.0.0.1")
	tm.service("half", "half-good", "http", good.port, true)
	tm.service("half", "half-dead", "http", deadPort, true)
	tm.service("dead", "dead-1", "http", deadPort, true)
	tm.entry(`{"Kind":"service-router","Name":"half","Routes":[{"Match":{"HTTP":{"PathPrefix":"/"}},"Destination":{"NumRetries":2,"RetryOnConnectFailure":true}}]}`)
	tm.client("half", "dead")
	tm.waitHTTP(tm.url("half", "/"), 200)
	c := &http.Client{Timeout: 5 * time.Second}

	retried := 0
	for i := range 6 {
		tid := "a0000000000000000000000000000" + string(rune('a'+i)) + "00"
		req := newReq(t, "GET", tm.url("half", "/"), nil)
		req.Header.Set("Traceparent", "00-"+tid+"-1000000000000001-01")
		if resp, _, _ := do(t, c, req); resp.StatusCode != 200 {
			t.Fatalf("GET %d to half = %d", i, resp.StatusCode)
		}
		s := tm.clientSpan(t, tid)
		switch s.Attr("vmesh.retry.count") {
		case "":
		case "1", "2":
			retried++
		default:
			t.Errorf("vmesh.retry.count = %q", s.Attr("vmesh.retry.count"))
		}
		if s.Attr("vmesh.peer.spiffe_id") != "" {
			t.Errorf("a plaintext external endpoint has a peer identity %q", s.Attr("vmesh.peer.spiffe_id"))
		}
	}
	if retried == 0 {
		t.Error("no span of 6 requests to a service with one dead endpoint counts a retry")
	}

	const tid = "dead0000000000000000000000000000"
	req := newReq(t, "GET", tm.url("dead", "/"), nil)
	req.Header.Set("Traceparent", "00-"+tid+"-1000000000000001-01")
	if resp, _, _ := do(t, c, req); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET to dead = %d, want 503", resp.StatusCode)
	}
	s := tm.clientSpan(t, tid)
	if s.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || s.Attr("http.response.status_code") != "503" || s.Attr("vmesh.upstream.cluster") == "" {
		t.Errorf("span of a request no endpoint took: status %v, code %q, cluster %q", s.Status, s.Attr("http.response.status_code"), s.Attr("vmesh.upstream.cluster"))
	}
}
