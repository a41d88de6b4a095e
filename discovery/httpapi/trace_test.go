package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestTracedNamesSpansByRoute(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	mux := http.NewServeMux()
	var inHandler trace.SpanContext
	mux.HandleFunc("PUT /v1/agent/service/deregister/{id}", func(w http.ResponseWriter, r *http.Request) {
		inHandler = trace.SpanContextFromContext(r.Context())
		w.WriteHeader(http.StatusInternalServerError)
	})
	h := Traced(mux, tp)

	req := httptest.NewRequest(http.MethodPut, "/v1/agent/service/deregister/web-1?token=secret", nil)
	req.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	h.ServeHTTP(httptest.NewRecorder(), req)

	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	s := spans[0]
	if s.Name() != "PUT /v1/agent/service/deregister/{id}" || s.SpanKind() != trace.SpanKindServer {
		t.Errorf("span %q kind %v, want the route pattern, server", s.Name(), s.SpanKind())
	}
	if s.Parent().SpanID().String() != "00f067aa0ba902b7" || s.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("span does not continue the caller's trace: parent %v", s.Parent())
	}
	if inHandler.SpanID() != s.SpanContext().SpanID() {
		t.Error("the handler's context does not carry the request's span")
	}
	attrs := map[attribute.Key]string{}
	for _, kv := range s.Attributes() {
		attrs[kv.Key] = kv.Value.Emit()
		if strings.Contains(kv.Value.Emit(), "secret") {
			t.Errorf("attribute %s records the query's token: %s", kv.Key, kv.Value.Emit())
		}
	}
	if attrs["http.route"] != "/v1/agent/service/deregister/{id}" || attrs["http.response.status_code"] != "500" || attrs["url.path"] != "/v1/agent/service/deregister/web-1" {
		t.Errorf("attributes %v", attrs)
	}
	if s.Status().Code != codes.Error {
		t.Errorf("status of a 500 = %v, want Error", s.Status())
	}

	if got := Traced(mux, nil); got != http.Handler(mux) {
		t.Error("Traced without a provider wraps the handler; it must cost nothing")
	}
}
