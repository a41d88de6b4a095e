package proxy

import (
	"net/http"
	"regexp"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestNewUUIDIsV4(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 100 {
		id := newUUID()
		if !re.MatchString(id) || seen[id] {
			t.Fatalf("newUUID = %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
	h := http.Header{"X-Request-Id": {"kept"}}
	if ensureRequestID(h) != "kept" || h.Get("X-Request-Id") != "kept" {
		t.Errorf("a request's own x-request-id was replaced: %v", h)
	}
}

func TestExtractTrace(t *testing.T) {
	const tid, sid = "463ac35c9f6413ad48485a3953bb6124", "a2fb4a1d1a96d312"
	for _, c := range []struct {
		name    string
		h       http.Header
		tid     string // "" : no context
		sampled bool
		form    b3Form
	}{
		{"w3c", http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-01"}}, tid, true, b3None},
		{"w3c wins over b3, b3 still rewritten", http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-00"}, "B3": {"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"}}, tid, false, b3Single},
		{"b3 single", http.Header{"B3": {tid + "-" + sid + "-1"}}, tid, true, b3Single},
		{"b3 single debug", http.Header{"B3": {tid + "-" + sid + "-d"}}, tid, true, b3Single},
		{"b3 single 64-bit trace id", http.Header{"B3": {"48485a3953bb6124-" + sid + "-0"}}, "000000000000000048485a3953bb6124", false, b3Single},
		{"b3 single sampling only", http.Header{"B3": {"0"}}, "", false, b3Single},
		{"b3 multi", http.Header{"X-B3-Traceid": {tid}, "X-B3-Spanid": {sid}, "X-B3-Sampled": {"1"}}, tid, true, b3Multi},
		{"b3 multi bad span id", http.Header{"X-B3-Traceid": {tid}, "X-B3-Spanid": {"xyz"}}, "", false, b3Multi},
		{"bad traceparent, nothing else", http.Header{"Traceparent": {"00-zz-" + sid + "-01"}}, "", false, b3None},
		{"none", http.Header{}, "", false, b3None},
	} {
		ctx, form := extractTrace(c.h)
		sc := trace.SpanContextFromContext(ctx)
		got := ""
		if sc.IsValid() {
			got = sc.TraceID().String()
		}
		if got != c.tid || form != c.form || (got != "" && sc.IsSampled() != c.sampled) {
			t.Errorf("%s: trace %q sampled %v form %v; want %q %v %v", c.name, got, sc.IsSampled(), form, c.tid, c.sampled, c.form)
		}
	}
}

func TestInjectTraceB3Forms(t *testing.T) {
	tid, _ := trace.TraceIDFromHex("463ac35c9f6413ad48485a3953bb6124")
	sid, _ := trace.SpanIDFromHex("a2fb4a1d1a96d312")
	ctx := trace.ContextWithSpanContext(t.Context(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	h := http.Header{"X-B3-Traceid": {"old"}, "X-B3-Spanid": {"1111111111111111"}, "X-B3-Flags": {"1"}, "Tracestate": {"stale=1"}}
	injectTrace(h, ctx, b3Multi)
	if h.Get("Traceparent") != "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-01" || h.Get("Tracestate") != "" {
		t.Errorf("traceparent %q tracestate %q", h.Get("Traceparent"), h.Get("Tracestate"))
	}
	if h.Get("X-B3-Traceid") != tid.String() || h.Get("X-B3-Spanid") != sid.String() || h.Get("X-B3-Parentspanid") != "1111111111111111" ||
		h.Get("X-B3-Sampled") != "1" || h.Get("X-B3-Flags") != "" {
		t.Errorf("b3 multi headers %v", h)
	}
	h = http.Header{"B3": {"x"}}
	injectTrace(h, ctx, b3Single)
	if h.Get("B3") != tid.String()+"-"+sid.String()+"-1" {
		t.Errorf("b3 single %q", h.Get("B3"))
	}
}
