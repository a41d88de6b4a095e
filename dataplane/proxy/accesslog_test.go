package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	accesslog "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	fileal "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/envoyfmt"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// sampleEntry is a request that went through: every operator has a value.
func sampleEntry() *logEntry {
	r := httptest.NewRequest(http.MethodPost, "http://web.mesh/orders?id=7", nil)
	r.Header.Set("X-Request-Id", "req-1")
	r.Header.Set("User-Agent", "curl/8")
	r.Header.Set("X-Forwarded-For", "10.0.0.9")
	r.Header.Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp := http.Header{"Content-Type": {"text/plain"}, "Grpc-Status": {"0"}}
	return &logEntry{
		start: time.Date(2026, 12, 7, 22, 54, 38, 123456789, time.UTC), protocol: "HTTP/1.1", code: 200,
		details: detailsViaUpstream, bytesIn: 11, bytesOut: 22, duration: 1500 * time.Millisecond,
		reqDuration: -1, respDuration: -1, upstreamHost: "10.0.0.2:15443", upstreamCluster: "web",
		downstreamLocal: "127.0.0.1:21001", downstreamRemote: "127.0.0.1:40000",
		peerIDs: []string{"spiffe://t.mesh/ns/default/dc/dc1/svc/client"}, localURI: "spiffe://t.mesh/ns/default/dc/dc1/svc/web",
		sni: "web.default.mesh", req: r, respHeaders: resp, trailers: resp,
	}
}

func TestLogFormatText(t *testing.T) {
	e := sampleEntry()
	cases := []struct{ format, want string }{
		{"%START_TIME%", "2026-12-07T22:54:38.123Z"},
		{"%START_TIME(%Y/%m/%d %H:%M:%E6S)%", "2026/12/07 22:54:38.123456"},
		{"%START_TIME(%s)%", "1796684078"},
		{"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%", "POST /orders?id=7 HTTP/1.1"},
		{"%REQ(:AUTHORITY)% %REQ(x-request-id)% %REQ(USER-AGENT)% %REQ(X-FORWARDED-FOR)%", "web.mesh req-1 curl/8 10.0.0.9"},
		{"%REQ(X-REQUEST-ID):3%", "req"},
		{"%REQ(X-MISSING)%", "-"},
		{"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%", "200 - via_upstream"},
		{"%BYTES_RECEIVED% %BYTES_SENT% %DURATION%", "11 22 1500"},
		{"%UPSTREAM_HOST% %UPSTREAM_CLUSTER%", "10.0.0.2:15443 web"},
		{"%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "127.0.0.1:21001 127.0.0.1:40000 127.0.0.1"},
		{"%DOWNSTREAM_PEER_URI_SAN%", "spiffe://t.mesh/ns/default/dc/dc1/svc/client"},
		{"%DOWNSTREAM_LOCAL_URI_SAN% %REQUESTED_SERVER_NAME%", "spiffe://t.mesh/ns/default/dc/dc1/svc/web web.default.mesh"},
		{"%TRACE_ID%", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"%RESP(CONTENT-TYPE)% %TRAILER(GRPC-STATUS)%", "text/plain 0"},
		{"%ROUTE_NAME% %UPSTREAM_LOCAL_ADDRESS% %REQUEST_DURATION% %RESPONSE_FLAGS_LONG%", "- - - -"},
		{"100%% done\n", "100% done\n"},
	}
	for _, c := range cases {
		tf, err := compileText(c.format)
		if err != nil {
			t.Errorf("%q: %v", c.format, err)
			continue
		}
		f := &logFormat{text: tf}
		if got := string(f.render(nil, e)); got != c.want {
			t.Errorf("%q rendered %q, want %q", c.format, got, c.want)
		}
	}
}

func TestLogFormatErrors(t *testing.T) {
	for _, c := range []struct{ format, want string }{
		{"%RESPONSE_CODE", "unclosed command operator"},
		{"%RESPONSE_COD%", "unknown command operator %RESPONSE_COD%"},
		{"%REQ()%", "missing the header name"},
		{"%REQ(X-A%", "missing )"},
		{"%REQ(X-A):x%", "only :N"},
		{"%DURATION(x)%", "takes no argument"},
		{"%START_TIME(%Q)%", "%Q is not supported"},
		{"%START_TIME(at %H)%", "literal"},
	} {
		_, err := compileText(c.format)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one with %q", c.format, err, c.want)
		}
		// The API's check refuses the same strings.
		if envoyfmt.Check(c.format) == nil && !strings.HasPrefix(c.format, "%START_TIME(") {
			t.Errorf("%q: envoyfmt.Check accepts it", c.format)
		}
	}
}

// The API validates formats with discovery's list of operators; the proxy
// must know exactly those.
func TestLogOperatorsAgree(t *testing.T) {
	var ours []string
	for k := range logOps {
		ours = append(ours, k)
	}
	theirs := slices.Clone(envoyfmt.Operators)
	slices.Sort(ours)
	slices.Sort(theirs)
	if !slices.Equal(ours, theirs) {
		t.Errorf("proxy operators %v\nenvoyfmt.Operators %v", ours, theirs)
	}
}

func TestLogFormatJSON(t *testing.T) {
	st, err := structpb.NewStruct(map[string]any{
		"code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "path": "%REQ(:PATH)%", "missing": "%REQ(X-NONE)%",
		"dur": "%DURATION%", "mixed": "took %DURATION% ms", "const": 7.0, "on": true,
		"nested": map[string]any{"peer": "%DOWNSTREAM_PEER_URI_SAN%"}, "quote": "a \"%REQ(USER-AGENT)%\"\n",
	})
	if err != nil {
		t.Fatal(err)
	}
	fields, err := compileJSON(st)
	if err != nil {
		t.Fatal(err)
	}
	f := &logFormat{json: fields}
	e := sampleEntry()
	e.flags = flagUH | flagURX
	line := f.render(nil, e)
	if !bytes.HasSuffix(line, []byte("}\n")) || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("not one line: %q", line)
	}
	var got map[string]any
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	want := map[string]any{
		"code": 200.0, "flags": "UH,URX", "path": "/orders?id=7", "missing": nil, "dur": 1500.0,
		"mixed": "took 1500 ms", "const": 7.0, "on": true,
		"nested": map[string]any{"peer": "spiffe://t.mesh/ns/default/dc/dc1/svc/client"}, "quote": "a \"curl/8\"\n",
	}
	for k, w := range want {
		if g := got[k]; !jsonEqual(g, w) {
			t.Errorf("%s = %#v, want %#v (line %s)", k, g, w, line)
		}
	}
	// A control character an attacker puts in a header stays inside the
	// string: one line, valid JSON.
	e.req.Header.Set("User-Agent", "x\"}\n{\"forged\":1")
	line = f.render(nil, e)
	if bytes.Count(line, []byte("\n")) != 1 || json.Unmarshal(line, &got) != nil || got["forged"] != nil {
		t.Errorf("header injection: %q", line)
	}
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// Every response flag renders as Envoy spells it, short and long, in
// Envoy's order.
func TestResponseFlags(t *testing.T) {
	want := map[respFlags][2]string{
		flagUH: {"UH", "NoHealthyUpstream"}, flagUF: {"UF", "UpstreamConnectionFailure"}, flagUO: {"UO", "UpstreamOverflow"},
		flagNR: {"NR", "NoRouteFound"}, flagURX: {"URX", "UpstreamRetryLimitExceeded"}, flagNC: {"NC", "NoClusterFound"},
		flagDC: {"DC", "DownstreamConnectionTermination"}, flagUT: {"UT", "UpstreamRequestTimeout"},
		flagUR: {"UR", "UpstreamRemoteReset"}, flagUC: {"UC", "UpstreamConnectionTermination"},
		flagSI: {"SI", "StreamIdleTimeout"}, flagDPE: {"DPE", "DownstreamProtocolError"}, flagUPE: {"UPE", "UpstreamProtocolError"},
	}
	if len(want) != len(flagNames) {
		t.Fatalf("%d flags tested, %d defined", len(want), len(flagNames))
	}
	for f, w := range want {
		if got := string(f.appendShort(nil)); got != w[0] {
			t.Errorf("%b short: %q, want %q", f, got, w[0])
		}
		if got := string(f.appendLong(nil)); got != w[1] {
			t.Errorf("%b long: %q, want %q", f, got, w[1])
		}
	}
	if got := (flagUF | flagUH | flagURX).String(); got != "UH,UF,URX" {
		t.Errorf("several flags: %q", got)
	}
	if got := respFlags(0).String(); got != "-" {
		t.Errorf("no flag: %q", got)
	}
}

// Every local reply maps to Envoy's flag and details.
func TestLocalReplyCause(t *testing.T) {
	cases := []struct {
		r       *localReply
		flags   respFlags
		details string
	}{
		{reply(http.StatusForbidden, bodyRBACDenied), 0, "rbac_access_denied_matched_policy[none]"},
		{reply(http.StatusForbidden, ""), 0, "upgrade_failed"},
		{reply(http.StatusBadRequest, bodyBadPath), 0, "path_normalization_failed"},
		{reply(http.StatusNotFound, ""), flagNR, "route_not_found"},
		{reply(http.StatusBadGateway, "upstream protocol error"), flagUPE, detailsUpstreamPE},
	}
	kinds := map[failKind]respFlags{
		failNoCluster: flagNC, failNoHost: flagUH, failOverflow: flagUO, failConnect: flagUF, failRefused: flagUR,
		failReset: flagUC, failPerTryTimeout: flagUT, failRouteTimeout: flagUT, failIdle: flagSI,
	}
	s := &stream{}
	for k, f := range kinds {
		var lr *localReply
		if !errors.As(s.failure(k), &lr) {
			t.Fatalf("kind %d: no local reply", k)
		}
		cases = append(cases, struct {
			r       *localReply
			flags   respFlags
			details string
		}{lr, f, ""})
	}
	for _, c := range cases {
		f, d := localReplyCause(c.r)
		if f != c.flags || (c.details != "" && d != c.details) || d == "" {
			t.Errorf("%d %q: %v %q, want %v %q", c.r.code, c.r.body, f, d, c.flags, c.details)
		}
	}
}

func fileLogger(t *testing.T, path string, format *core.SubstitutionFormatString) *accesslog.AccessLog {
	t.Helper()
	a, err := anypb.New(&fileal.FileAccessLog{Path: path, AccessLogFormat: &fileal.FileAccessLog_LogFormat{LogFormat: format}})
	if err != nil {
		t.Fatal(err)
	}
	return &accesslog.AccessLog{Name: "envoy.access_loggers.file", ConfigType: &accesslog.AccessLog_TypedConfig{TypedConfig: a}}
}

func TestParseAccessLogs(t *testing.T) {
	text := func(s string) *core.SubstitutionFormatString {
		return &core.SubstitutionFormatString{Format: &core.SubstitutionFormatString_TextFormatSource{
			TextFormatSource: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: s}}}}
	}
	logs, err := parseAccessLogs([]*accesslog.AccessLog{fileLogger(t, "/var/log/a.log", text("%RESPONSE_CODE%\n"))}, "listener x")
	if err != nil || len(logs) != 1 || logs[0].sink != "file:/var/log/a.log" {
		t.Fatalf("%v %v", logs, err)
	}
	for _, c := range []struct {
		l    *accesslog.AccessLog
		want string
	}{
		{fileLogger(t, "", nil), `listener x.access_log[0] file.path: "" is not an absolute path`},
		{fileLogger(t, "/proc/sysrq-trigger", nil), "is under /proc/"},
		{fileLogger(t, "/tmp/a", text("%BOGUS%")), "listener x.access_log[0].log_format.text_format_source: unknown command operator %BOGUS%"},
		{&accesslog.AccessLog{Name: "x", Filter: &accesslog.AccessLogFilter{}, ConfigType: fileLogger(t, "/tmp/a", nil).ConfigType}, "filter"},
	} {
		_, err := parseAccessLogs([]*accesslog.AccessLog{c.l}, "listener x")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want one with %q", err, c.want)
		}
	}
}

// A sink writes what it is given, survives a logrotate that moves the
// file away (the next lines go to a new file at the path), and flushes on
// close.
func TestLogSinkRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	p := &Proxy{log: slog.New(slog.NewTextHandler(testWriter{t}, nil)), cfg: Config{AccessLogDir: dir}}
	tf, _ := compileText("%REQ(X-REQUEST-ID)%\n")
	spec := &accessLogSpec{sink: "file:" + path, path: path, format: &logFormat{text: tf}}
	line := func(id string) {
		e := sampleEntry()
		e.req.Header.Set("X-Request-Id", id)
		p.sinks.get(p, spec).write(spec.format, e)
	}
	read := func(p string) string { b, _ := os.ReadFile(p); return string(b) }
	line("one")
	testkit.WaitFor(t, 5*time.Second, "the first line", func() bool { return read(path) == "one\n" })
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	// Lines written until the sink notices go to the old file; after, to
	// the new one.
	testkit.WaitFor(t, 10*time.Second, "a line in the new file", func() bool {
		line("two")
		return strings.Contains(read(path), "two\n")
	})
	if !strings.HasPrefix(read(path+".1"), "one\n") {
		t.Errorf("rotated file: %q", read(path+".1"))
	}
	line("last")
	p.sinks.close()
	p.wg.Wait()
	if !strings.HasSuffix(read(path), "last\n") {
		t.Errorf("not flushed on close: %q", read(path))
	}
	line("after") // dropped, without blocking or panicking
}

// A full buffer drops lines instead of blocking the request path.
func TestLogSinkBounded(t *testing.T) {
	s := &logSink{wake: make(chan struct{}, 1)} // no writer runs
	tf, _ := compileText(strings.Repeat("x", 1000) + "\n")
	f := &logFormat{text: tf}
	for range 2 * sinkMaxPending / 1000 {
		s.write(f, sampleEntry())
	}
	if len(s.pending) > sinkMaxPending || s.dropped == 0 {
		t.Errorf("pending %d bytes, dropped %d", len(s.pending), s.dropped)
	}
}

// Refusals are rate-limited per reason, and the next line says how many
// were not written.
func TestRefusalRateLimit(t *testing.T) {
	var buf testkit.SyncBuffer
	p := &Proxy{log: slog.New(slog.NewTextHandler(&buf, nil))}
	now := time.Unix(1000, 0)
	p.refusals.now = func() time.Time { return now }
	for range refusalBurst + 5 {
		p.refusals.note(p, detailsRBAC, "request refused")
	}
	p.refusals.note(p, detailsNoHealthy, "request refused") // another reason has its own bucket
	out := buf.String()
	if n := strings.Count(out, "reason="+detailsRBAC); n != refusalBurst {
		t.Errorf("%d RBAC lines, want %d:\n%s", n, refusalBurst, out)
	}
	if !strings.Contains(out, "reason="+detailsNoHealthy) {
		t.Errorf("the no-healthy refusal was suppressed:\n%s", out)
	}
	now = now.Add(refusalEvery)
	p.refusals.note(p, detailsRBAC, "request refused")
	if !strings.Contains(buf.String(), "suppressed_since_last_line=5") {
		t.Errorf("no count of suppressed lines:\n%s", buf.String())
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// BenchmarkLogRender: one line of the default JSON format.
func BenchmarkLogRender(b *testing.B) {
	fields := map[string]any{}
	for k, v := range xds.DefaultAccessLogJSON {
		fields[k] = v
	}
	st, err := structpb.NewStruct(fields)
	if err != nil {
		b.Fatal(err)
	}
	js, err := compileJSON(st)
	if err != nil {
		b.Fatal(err)
	}
	f := &logFormat{json: js}
	e := sampleEntry()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.render(buf[:0], e)
	}
}
