package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Distributed tracing and request IDs of the HTTP connection manager.
//
// Every request gets an x-request-id (a UUIDv4 when it came without one;
// one it came with is kept), whether or not tracing is on: access logs
// and applications correlate on it.
//
// With a TracerProvider (Config.TracerProvider), every request is one
// span of this hop: a server span on an inbound listener (the request
// came from a peer's proxy, or from outside the mesh), a client span on
// every other listener (the local application calling out). The span
// continues the trace of the request's W3C traceparent/tracestate, or of
// its B3 headers (single "b3" or multi X-B3-*) when it has no
// traceparent, or starts one; the request then goes on (to the peer, or
// to the application) with a traceparent — and the B3 headers in the
// form they came in — naming this span as the parent. Headers are
// rewritten on the downstream request itself, before anything else reads
// it, so what logs read there is what was sent on. Without a provider
// nothing here allocates or touches the trace headers: they pass through
// as any header does.
//
// TCP proxying makes no spans: a connection carries no trace context to
// continue, and a span per connection would be one unrelated root trace
// per connection.

// Attribute names of vmesh's own.
const (
	attrPeerID     = "vmesh.peer.spiffe_id"
	attrCluster    = "vmesh.upstream.cluster"
	attrRetries    = "vmesh.retry.count"
	attrListener   = "vmesh.listener"
	attrRequestID  = "http.request.header.x-request-id"
	headerB3       = "B3"
	headerB3Trace  = "X-B3-Traceid"
	headerB3Span   = "X-B3-Spanid"
	headerB3Parent = "X-B3-Parentspanid"
	headerB3Sample = "X-B3-Sampled"
	headerB3Flags  = "X-B3-Flags"
	headerReqID    = "X-Request-Id"
	tracerName     = "github.com/vmesh/vmesh/dataplane/proxy"
)

var w3c = propagation.TraceContext{}

// b3Form is how a request carried B3 (the form its headers are
// rewritten in).
type b3Form uint8

const (
	b3None b3Form = iota
	b3Single
	b3Multi
)

// streamTrace is a traced stream's span and what it learns on the way.
type streamTrace struct {
	span   trace.Span
	server bool
	b3     b3Form

	mu       sync.Mutex
	attempts int
	peerID   string // the upstream's verified identity (client spans)
}

// ensureRequestID keeps the request's x-request-id or gives it a new one.
func ensureRequestID(h http.Header) string {
	if v := h[headerReqID]; len(v) > 0 && v[0] != "" {
		return v[0]
	}
	id := newUUID()
	h[headerReqID] = []string{id}
	return id
}

// newUUID is a random (version 4) UUID.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// traceStart gives the request its ID and, when tracing, starts its span
// and rewrites its trace headers.
func (s *stream) traceStart() {
	r := s.r
	reqID := ensureRequestID(r.Header)
	tracer := s.hc.p.tracer
	if tracer == nil {
		return
	}
	st := &streamTrace{server: s.lrt.spec.src.GetTrafficDirection() == core.TrafficDirection_INBOUND}
	parent, form := extractTrace(r.Header)
	st.b3 = form
	kind := trace.SpanKindClient
	if st.server {
		kind = trace.SpanKindServer
	}
	name, attrs := spanNameAttrs(r, s.grpc, st.server, s.hc)
	attrs = append(attrs, attribute.StringSlice(attrRequestID, []string{reqID}), attribute.String(attrListener, s.hc.rl.name))
	_, st.span = tracer.Start(parent, name, trace.WithSpanKind(kind), trace.WithTimestamp(s.start), trace.WithAttributes(attrs...))
	injectTrace(r.Header, trace.ContextWithSpan(parent, st.span), form)
	s.tr = st
}

// extractTrace reads the request's trace context: W3C, else B3. The B3
// form is the one the request carries, whichever context was used (a
// proxy before this one sent both), so both are rewritten.
func extractTrace(h http.Header) (context.Context, b3Form) {
	ctx := context.Background()
	form := b3None
	switch {
	case len(h[headerB3]) > 0:
		form = b3Single
	case len(h[headerB3Trace]) > 0:
		form = b3Multi
	}
	if len(h["Traceparent"]) > 0 {
		if c := w3c.Extract(ctx, propagation.HeaderCarrier(h)); trace.SpanContextFromContext(c).IsValid() {
			return c, form
		}
	}
	var sc trace.SpanContext
	ok := false
	switch form {
	case b3Single:
		sc, ok = parseB3Single(h.Get(headerB3))
	case b3Multi:
		sc, ok = parseB3(h.Get(headerB3Trace), h.Get(headerB3Span), h.Get(headerB3Sample), h.Get(headerB3Flags))
	}
	if ok {
		ctx = trace.ContextWithRemoteSpanContext(ctx, sc)
	}
	return ctx, form
}

// parseB3Single reads "b3: {traceid}-{spanid}[-{sampled}[-{parent}]]"
// (a lone sampling decision carries no context).
func parseB3Single(v string) (trace.SpanContext, bool) {
	parts := strings.Split(v, "-")
	if len(parts) < 2 {
		return trace.SpanContext{}, false
	}
	sampled := ""
	if len(parts) > 2 {
		sampled = parts[2]
	}
	flags := ""
	if sampled == "d" {
		sampled, flags = "", "1"
	}
	return parseB3(parts[0], parts[1], sampled, flags)
}

func parseB3(traceID, spanID, sampled, flags string) (trace.SpanContext, bool) {
	if len(traceID) == 16 {
		traceID = "0000000000000000" + traceID
	}
	tid, err := trace.TraceIDFromHex(traceID)
	if err != nil {
		return trace.SpanContext{}, false
	}
	sid, err := trace.SpanIDFromHex(spanID)
	if err != nil {
		return trace.SpanContext{}, false
	}
	var tf trace.TraceFlags
	if sampled == "1" || strings.EqualFold(sampled, "true") || flags == "1" {
		tf = trace.FlagsSampled
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: tf, Remote: true})
	return sc, sc.IsValid()
}

// injectTrace writes ctx's span as the parent: traceparent (and
// tracestate), and B3 in the form the request came with.
func injectTrace(h http.Header, ctx context.Context, form b3Form) {
	delete(h, "Tracestate")
	w3c.Inject(ctx, propagation.HeaderCarrier(h))
	sc := trace.SpanContextFromContext(ctx)
	sampled := "0"
	if sc.IsSampled() {
		sampled = "1"
	}
	switch form {
	case b3Single:
		h[headerB3] = []string{sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + sampled}
	case b3Multi:
		if p := h.Get(headerB3Span); p != "" {
			h[headerB3Parent] = []string{p}
		}
		h[headerB3Trace] = []string{sc.TraceID().String()}
		h[headerB3Span] = []string{sc.SpanID().String()}
		h[headerB3Sample] = []string{sampled}
		delete(h, headerB3Flags)
	}
}

// spanNameAttrs are a request's span name and its attributes known at
// the start: OpenTelemetry's HTTP conventions, and RPC's for gRPC.
func spanNameAttrs(r *http.Request, grpc, server bool, hc *httpConn) (string, []attribute.KeyValue) {
	attrs := make([]attribute.KeyValue, 0, 14)
	attrs = append(attrs,
		attribute.String("http.request.method", r.Method),
		attribute.String("url.path", r.URL.Path),
		attribute.String("network.protocol.version", protoVersion(r)),
	)
	scheme := "http"
	if hc.tls {
		scheme = "https"
	}
	attrs = append(attrs, attribute.String("url.scheme", scheme))
	host, port := splitHostPort(r.Host)
	if host != "" {
		attrs = append(attrs, attribute.String("server.address", host))
	}
	if port > 0 {
		attrs = append(attrs, attribute.Int("server.port", port))
	}
	if server {
		if h, _ := splitHostPort(hc.remote); h != "" {
			attrs = append(attrs, attribute.String("client.address", h))
		}
		if len(hc.ids) > 0 {
			attrs = append(attrs, attribute.String(attrPeerID, hc.ids[0]))
		}
	}
	if ua := r.Header.Get("User-Agent"); ua != "" {
		attrs = append(attrs, attribute.String("user_agent.original", ua))
	}
	name := r.Method
	if grpc {
		attrs = append(attrs, attribute.String("rpc.system", "grpc"))
		if svc, method, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/"); ok {
			attrs = append(attrs, attribute.String("rpc.service", svc), attribute.String("rpc.method", method))
			name = svc + "/" + method
		}
	}
	return name, attrs
}

func protoVersion(r *http.Request) string {
	if r.ProtoMajor == 2 {
		return "2"
	}
	return strconv.Itoa(r.ProtoMajor) + "." + strconv.Itoa(r.ProtoMinor)
}

func splitHostPort(hp string) (string, int) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return hp, 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// traceAttempt counts an attempt and, on a client span, learns the
// identity the upstream's certificate proved.
func (s *stream) traceAttempt(ua *upstreamAttempt) {
	st := s.tr
	if st == nil {
		return
	}
	st.mu.Lock()
	st.attempts++
	st.mu.Unlock()
	if st.server || !st.span.IsRecording() {
		return
	}
	ua.trace.GotConn = func(info httptrace.GotConnInfo) {
		ua.gotConnHook(info)
		if id := connPeerID(info.Conn); id != "" {
			st.mu.Lock()
			st.peerID = id
			st.mu.Unlock()
		}
	}
}

// connPeerID is the SPIFFE ID of an upstream connection's peer ("" when
// it is plaintext).
func connPeerID(c net.Conn) string {
	if rc, ok := c.(*releaseConn); ok {
		c = rc.Conn
	}
	tc, ok := c.(*tls.Conn)
	if !ok {
		return ""
	}
	if ids := peerIDs(tc.ConnectionState()); len(ids) > 0 {
		return ids[0]
	}
	return ""
}

// traceEnd ends the stream's span with what the response was.
func (s *stream) traceEnd() {
	st := s.tr
	if st == nil {
		return
	}
	span := st.span
	if !span.IsRecording() {
		span.End()
		return
	}
	st.mu.Lock()
	attempts, peer := st.attempts, st.peerID
	st.mu.Unlock()
	code := s.w.code
	attrs := make([]attribute.KeyValue, 0, 6)
	if code != 0 {
		attrs = append(attrs, attribute.Int("http.response.status_code", code))
	}
	if s.upstream != "" {
		attrs = append(attrs, attribute.String(attrCluster, s.upstream))
	}
	if attempts > 1 {
		attrs = append(attrs, attribute.Int(attrRetries, attempts-1))
	}
	if peer != "" {
		attrs = append(attrs, attribute.String(attrPeerID, peer))
	}
	failed := code == 0 || code >= 500
	if s.grpc {
		if gs, ok := grpcStatus(s.w.Header()); ok {
			attrs = append(attrs, attribute.Int("rpc.grpc.status_code", gs))
			failed = failed || grpcFailed(gs, st.server)
		}
	}
	span.SetAttributes(attrs...)
	switch {
	case failed && code == 0:
		span.SetStatus(codes.Error, "no response")
	case failed:
		span.SetStatus(codes.Error, "")
	}
	span.End()
}

// grpcStatus is the response's grpc-status: a trailer, or a header of a
// trailers-only response.
func grpcStatus(h http.Header) (int, bool) {
	v := h.Get("Grpc-Status")
	if v == "" {
		v = h.Get(http.TrailerPrefix + "Grpc-Status")
	}
	if v == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil
}

// grpcFailed: the RPC conventions' error statuses (a server span leaves
// out those that are the client's doing).
func grpcFailed(code int, server bool) bool {
	if code == 0 {
		return false
	}
	if !server {
		return true
	}
	switch code {
	case 2, 4, 12, 13, 14, 15: // Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss
		return true
	}
	return false
}
