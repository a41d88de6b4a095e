package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// traceApp answers with the trace headers it received, as response
// headers.
func traceApp(t *testing.T, ip string) int {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, k := range []string{"Traceparent", "X-Request-Id"} {
			w.Header().Set("Got-"+k, r.Header.Get(k))
		}
		fmt.Fprint(w, "traced")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

// tracedPair boots two agents running their proxies, exporting spans to
// otlp as their OTEL_* environment says (n1 over gRPC, n2 over HTTP), with
// the sampler given, and a "web" app on n2 that n1's "client" calls
// through the upstream it returns.
func tracedPair(t *testing.T, prefix string, otlp *testkit.OTLP, sampler ...string) (n1, n2 *node, upstream string) {
	t.Helper()
	common := append([]string{"OTEL_BSP_SCHEDULE_DELAY=100"}, sampler...)
	n1 = newNode(t, "n1", prefix+"1", "-proxy")
	n1.env = append([]string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + otlp.GRPCAddr, "OTEL_EXPORTER_OTLP_PROTOCOL=grpc", "OTEL_SERVICE_NAME=vmesh-n1"}, common...)
	n1.start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return n1.leader() != "" })
	n2 = newNode(t, "n2", prefix+"2", "-proxy")
	n2.env = append([]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=" + otlp.HTTPURL + "/v1/traces", "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf", "OTEL_SERVICE_NAME=vmesh-n2"}, common...)
	n2.start("-join", n1.clusterAddr(), "-token-file", n1.tokenFile("1h"))
	testkit.WaitFor(t, 20*time.Second, "n2 knows the leader", func() bool { return n2.leader() != "" })

	port := traceApp(t, n2.ip)
	n2.registerJSON(fmt.Sprintf(`{"ID":"web-1","Name":"web","Address":%q,"Port":%d,"Meta":{"protocol":"http"}}`, n2.ip, port))
	n1.registerJSON(`{"ID":"client-1","Name":"client","Port":1,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"web","LocalBindPort":21001}]}}}}`)
	n1.intention("client", "web", "allow")
	upstream = "http://" + hostPort(n1.ip, 21001)
	c := &http.Client{Timeout: 2 * time.Second}
	testkit.WaitFor(t, 30*time.Second, "web through n1's upstream", func() bool {
		resp, err := c.Get(upstream + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return n1, n2, upstream
}

func tracedGet(t *testing.T, url, traceparent, requestID string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if traceparent != "" {
		req.Header.Set("Traceparent", traceparent)
	}
	if requestID != "" {
		req.Header.Set("X-Request-Id", requestID)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s = %d", url, resp.StatusCode)
	}
	return resp
}

// TestProxyTracingEndToEnd: two agents configured only by OTEL_*
// variables on their commands export to a real OTLP receiver (n1 over
// gRPC, n2 over HTTP). A request through n1's upstream to n2's app makes
// a client span (n1) and a server span (n2) in the caller's trace, the
// app gets a traceparent naming the server span and an x-request-id
// (generated, or the caller's), and the control plane's writes show up
// as HTTP API and raft spans: a registration on the follower n2 is its
// API span, its raft.forward, and the leader n1's raft.apply, in one
// trace.
func TestProxyTracingEndToEnd(t *testing.T) {
	skipShort(t)
	t.Parallel()
	otlp := testkit.StartOTLP(t, "127.46.0.9")
	_, _, upstream := tracedPair(t, "127.46.0.", otlp, "OTEL_TRACES_SAMPLER=parentbased_always_on")

	const tid, caller = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	resp := tracedGet(t, upstream+"/orders", "00-"+tid+"-"+caller+"-01", "")
	var client, server testkit.Span
	testkit.WaitFor(t, 20*time.Second, "the client and server spans of the request", func() bool {
		for _, s := range otlp.Trace(tid) {
			switch s.Kind {
			case tracepb.Span_SPAN_KIND_CLIENT:
				client = s
			case tracepb.Span_SPAN_KIND_SERVER:
				server = s
			}
		}
		return client.Span != nil && server.Span != nil
	})
	if client.Service != "vmesh-n1" || server.Service != "vmesh-n2" {
		t.Errorf("client span from %q, server span from %q", client.Service, server.Service)
	}
	if client.ParentID() != caller || server.ParentID() != client.SpanID() {
		t.Errorf("parents: client %s (want %s), server %s (want the client span %s)", client.ParentID(), caller, server.ParentID(), client.SpanID())
	}
	if want := "00-" + tid + "-" + server.SpanID() + "-01"; resp.Header.Get("Got-Traceparent") != want {
		t.Errorf("the app got traceparent %q, want %q", resp.Header.Get("Got-Traceparent"), want)
	}
	id := resp.Header.Get("Got-X-Request-Id")
	if len(id) != 36 || id[14] != '4' {
		t.Errorf("the app got x-request-id %q, want a generated UUIDv4", id)
	}
	for _, s := range []testkit.Span{client, server} {
		if s.Attr("http.request.method") != "GET" || s.Attr("url.path") != "/orders" || s.Attr("http.response.status_code") != "200" ||
			s.Attr("http.request.header.x-request-id") != id || !strings.HasPrefix(s.Attr("vmesh.peer.spiffe_id"), "spiffe://") {
			t.Errorf("%s span attributes: %v", s.Kind, s.Attributes)
		}
	}
	if resp := tracedGet(t, upstream+"/kept", "", "mine-42"); resp.Header.Get("Got-X-Request-Id") != "mine-42" {
		t.Errorf("the app got x-request-id %q, want the caller's mine-42", resp.Header.Get("Got-X-Request-Id"))
	}

	// The control plane: the registrations were HTTP API requests that
	// went through raft.
	testkit.WaitFor(t, 20*time.Second, "an HTTP API span with its route and a raft apply span", func() bool {
		api, apply := false, false
		for _, s := range otlp.Spans() {
			api = api || (s.Kind == tracepb.Span_SPAN_KIND_SERVER && s.Name == "PUT /v1/agent/service/register")
			apply = apply || s.Name == "raft.apply"
		}
		return api && apply
	})
	// n2's registration was forwarded to the leader: n2's API span is
	// the parent of its raft.forward, whose child is n1's raft.apply.
	testkit.WaitFor(t, 20*time.Second, "n2's API span -> raft.forward -> n1's raft.apply", func() bool {
		spans := otlp.Spans()
		byID := map[string]testkit.Span{}
		for _, s := range spans {
			byID[s.SpanID()] = s
		}
		for _, s := range spans {
			if s.Name != "raft.apply" || s.Service != "vmesh-n1" {
				continue
			}
			fwd, ok := byID[s.ParentID()]
			if !ok || fwd.Name != "raft.forward" || fwd.Service != "vmesh-n2" || fwd.Kind != tracepb.Span_SPAN_KIND_CLIENT {
				continue
			}
			if api, ok := byID[fwd.ParentID()]; ok && api.Service == "vmesh-n2" && api.Name == "PUT /v1/agent/service/register" {
				return true
			}
		}
		return false
	})
	if otlp.Requests("grpc") == 0 || otlp.Requests("http") == 0 {
		t.Errorf("exports: %d over gRPC, %d over HTTP; want both", otlp.Requests("grpc"), otlp.Requests("http"))
	}
}

// TestProxyTracingSampledOut: with OTEL_TRACES_SAMPLER_ARG=0 the agents
// export no proxy span of a new trace, and the app still gets a
// traceparent (unsampled) and an x-request-id.
func TestProxyTracingSampledOut(t *testing.T) {
	skipShort(t)
	t.Parallel()
	otlp := testkit.StartOTLP(t, "127.47.0.9")
	_, _, upstream := tracedPair(t, "127.47.0.", otlp, "OTEL_TRACES_SAMPLER=parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG=0")
	const tid = "5b8efff798038103d269b633813fc60c"
	resp := tracedGet(t, upstream+"/unsampled", "00-"+tid+"-eee19b7ec3c1b174-00", "")
	if got := resp.Header.Get("Got-Traceparent"); !strings.HasPrefix(got, "00-"+tid+"-") || !strings.HasSuffix(got, "-00") || strings.Contains(got, "eee19b7ec3c1b174") {
		t.Errorf("the app got traceparent %q; want trace %s, a new parent, unsampled", got, tid)
	}
	if len(resp.Header.Get("Got-X-Request-Id")) != 36 {
		t.Errorf("the app got x-request-id %q", resp.Header.Get("Got-X-Request-Id"))
	}
	// A sampled request afterwards is exported: once its spans are in,
	// the unsampled one's would be too (each agent exports in order).
	const sampled = "6c8efff798038103d269b633813fc60c"
	tracedGet(t, upstream+"/sampled", "00-"+sampled+"-eee19b7ec3c1b174-01", "")
	testkit.WaitFor(t, 20*time.Second, "the sampled request's two spans", func() bool { return len(otlp.Trace(sampled)) == 2 })
	if spans := otlp.Trace(tid); len(spans) != 0 {
		t.Errorf("%d spans of the unsampled trace exported, want none", len(spans))
	}
	for _, s := range otlp.Spans() {
		if s.Kind == tracepb.Span_SPAN_KIND_CLIENT && s.TraceID() != sampled {
			t.Errorf("a proxy client span of another trace was exported with ratio 0: %s %s", s.Name, s.TraceID())
		}
	}
}
