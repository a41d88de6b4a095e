package checks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// checkSinkCall is one call a fakeCheckSink received.
type checkSinkCall struct {
	checkID, status, output string
	at                      time.Time
}

// fakeCheckSink records calls under a mutex and signals each one on
// changed.
type fakeCheckSink struct {
	mu       sync.Mutex
	updates  []checkSinkCall
	deregs   []checkSinkCall // checkID holds the service ID
	failNext int             // fail this many more UpdateCheck calls
	changed  chan struct{}
}

func newFakeCheckSink() *fakeCheckSink {
	return &fakeCheckSink{changed: make(chan struct{}, 1)}
}

func (s *fakeCheckSink) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *fakeCheckSink) UpdateCheck(ctx context.Context, checkID, status, output string) error {
	s.mu.Lock()
	defer s.signal()
	defer s.mu.Unlock()
	if s.failNext > 0 {
		s.failNext--
		s.updates = append(s.updates, checkSinkCall{checkID, "error:" + status, output, time.Now()})
		return errors.New("sink unavailable")
	}
	s.updates = append(s.updates, checkSinkCall{checkID, status, output, time.Now()})
	return nil
}

func (s *fakeCheckSink) DeregisterService(ctx context.Context, serviceID string) error {
	s.mu.Lock()
	defer s.signal()
	defer s.mu.Unlock()
	s.deregs = append(s.deregs, checkSinkCall{checkID: serviceID, at: time.Now()})
	return nil
}

// updatesFor returns the successful UpdateCheck calls for checkID.
func (s *fakeCheckSink) updatesFor(checkID string) []checkSinkCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []checkSinkCall
	for _, c := range s.updates {
		if c.checkID == checkID && !strings.HasPrefix(c.status, "error:") {
			out = append(out, c)
		}
	}
	return out
}

// attemptsFor returns every UpdateCheck call for checkID, failed ones too.
func (s *fakeCheckSink) attemptsFor(checkID string) []checkSinkCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []checkSinkCall
	for _, c := range s.updates {
		if c.checkID == checkID {
			out = append(out, c)
		}
	}
	return out
}

func (s *fakeCheckSink) status(checkID string) string {
	u := s.updatesFor(checkID)
	if len(u) == 0 {
		return ""
	}
	return u[len(u)-1].status
}

func (s *fakeCheckSink) last(checkID string) checkSinkCall {
	u := s.updatesFor(checkID)
	if len(u) == 0 {
		return checkSinkCall{}
	}
	return u[len(u)-1]
}

func (s *fakeCheckSink) deregistrations() []checkSinkCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]checkSinkCall(nil), s.deregs...)
}

// waitStatus waits until the last status written for checkID is want.
func (s *fakeCheckSink) waitStatus(t *testing.T, checkID, want string) checkSinkCall {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, "check "+checkID+" to be "+want, func() bool {
		return s.status(checkID) == want
	})
	return s.last(checkID)
}

func newTestCheckRunner(t *testing.T, sink Sink) *Runner {
	t.Helper()
	r := New(testkit.Discard(), sink)
	r.maxJitter = 0
	t.Cleanup(r.Close)
	return r
}

// countingServer is an httptest server answering code with body, counting
// requests.
type countingServer struct {
	*httptest.Server
	hits atomic.Int64
	code atomic.Int64
}

func newCountingServer(t *testing.T, code int) *countingServer {
	t.Helper()
	s := &countingServer{}
	s.code.Store(int64(code))
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		w.WriteHeader(int(s.code.Load()))
		io.WriteString(w, "body")
	}))
	t.Cleanup(s.Close)
	return s
}

func httpCheck(id, url string, interval time.Duration, status string) *discovery.Check {
	return &discovery.Check{
		CheckID: id, Name: id, Status: status, ServiceID: "svc-" + id,
		Definition: discovery.CheckDefinition{HTTP: url, Interval: interval},
	}
}

func TestCheckRunnerHTTPStatuses(t *testing.T) {
	var redirectFollowed atomic.Int64
	mux := http.NewServeMux()
	for _, code := range []int{200, 204, 429, 500, 404} {
		mux.HandleFunc("/"+strconv.Itoa(code), func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
			io.WriteString(w, "reply "+http.StatusText(code))
		})
	}
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/target", http.StatusFound)
	})
	mux.HandleFunc("/target", func(w http.ResponseWriter, r *http.Request) {
		redirectFollowed.Add(1)
		io.WriteString(w, "ok")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	cases := []struct {
		id, path, want, output string
	}{
		{"ok", "/200", discovery.HealthPassing, "200 OK Output: reply OK"},
		{"nocontent", "/204", discovery.HealthPassing, "204 No Content Output: "},
		{"toomany", "/429", discovery.HealthWarning, "429 Too Many Requests Output: reply Too Many Requests"},
		{"error", "/500", discovery.HealthCritical, "500 Internal Server Error Output: reply Internal Server Error"},
		{"notfound", "/404", discovery.HealthCritical, "404 Not Found Output: reply Not Found"},
		{"redirect", "/redirect", discovery.HealthCritical, "302 Found Output: "},
	}
	var checks []*discovery.Check
	for _, c := range cases {
		checks = append(checks, httpCheck(c.id, srv.URL+c.path, 20*time.Millisecond, ""))
	}
	r.Sync(checks)
	for _, c := range cases {
		got := sink.waitStatus(t, c.id, c.want)
		wantOut := "HTTP GET " + srv.URL + c.path + ": " + c.output
		if !strings.HasPrefix(got.output, wantOut) {
			t.Errorf("%s: output %q, want prefix %q", c.id, got.output, wantOut)
		}
	}
	if n := redirectFollowed.Load(); n != 0 {
		t.Errorf("redirect was followed %d times", n)
	}
}

func TestCheckRunnerHTTPRequest(t *testing.T) {
	type seen struct {
		method, body, host string
		header             http.Header
	}
	reqs := make(chan seen, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		select {
		case reqs <- seen{r.Method, string(b), r.Host, r.Header.Clone()}:
		default:
		}
		io.WriteString(w, strings.Repeat("x", 10000))
	}))
	t.Cleanup(srv.Close)

	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)

	// Defaults.
	r.Sync([]*discovery.Check{httpCheck("get", srv.URL+"/health", time.Hour, "")})
	got := <-reqs
	if got.method != http.MethodGet || got.body != "" {
		t.Errorf("default request: %s with body %q", got.method, got.body)
	}
	if ua := got.header.Get("User-Agent"); ua != "vmesh-health-check" {
		t.Errorf("User-Agent %q", ua)
	}
	if a := got.header.Get("Accept"); a != "text/plain, text/*, */*" {
		t.Errorf("Accept %q", a)
	}
	out := sink.waitStatus(t, "get", discovery.HealthPassing).output
	if prefix := "HTTP GET " + srv.URL + "/health: 200 OK Output: xxx"; len(out) != DefaultOutputMax || !strings.HasPrefix(out, prefix) ||
		!strings.HasSuffix(out, "x ... (output cut to 4096 bytes)") {
		t.Errorf("output is %d bytes (%q...%q), want 4 KiB of the line and a note", len(out), out[:60], out[len(out)-60:])
	}

	// Method, body and headers from the definition.
	post := httpCheck("post", srv.URL+"/health", time.Hour, "")
	post.Definition.Method = http.MethodPost
	post.Definition.Body = `{"ping":true}`
	post.Definition.Header = map[string][]string{
		"accept":     {"application/json"},
		"X-Token":    {"a", "b"},
		"User-Agent": {"custom"},
		"Host":       {"example.test"},
	}
	r.Sync([]*discovery.Check{post})
	got = <-reqs
	if got.method != http.MethodPost || got.body != `{"ping":true}` {
		t.Errorf("request: %s with body %q", got.method, got.body)
	}
	if a := got.header.Values("Accept"); len(a) != 1 || a[0] != "application/json" {
		t.Errorf("Accept %q", a)
	}
	if ua := got.header.Values("User-Agent"); len(ua) != 1 || ua[0] != "custom" {
		t.Errorf("User-Agent %q", ua)
	}
	if v := got.header.Values("X-Token"); len(v) != 2 || v[0] != "a" || v[1] != "b" {
		t.Errorf("X-Token %q", v)
	}
	if got.host != "example.test" {
		t.Errorf("Host %q", got.host)
	}
	if out := sink.waitStatus(t, "post", discovery.HealthPassing).output; !strings.HasPrefix(out, "HTTP POST ") {
		t.Errorf("output %q", out)
	}
}

func TestCheckRunnerHTTPTimeoutAndTransportError(t *testing.T) {
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()

	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	timeout := httpCheck("slow", slow.URL, time.Hour, discovery.HealthPassing)
	timeout.Definition.Timeout = 50 * time.Millisecond
	start := time.Now()
	r.Sync([]*discovery.Check{timeout, httpCheck("dead", deadURL, time.Hour, discovery.HealthPassing)})
	if out := sink.waitStatus(t, "slow", discovery.HealthCritical).output; !strings.Contains(out, "deadline exceeded") &&
		!strings.Contains(out, "Timeout") {
		t.Errorf("timeout output %q", out)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("timed out after %v, want about 50ms", d)
	}
	if out := sink.waitStatus(t, "dead", discovery.HealthCritical).output; !strings.Contains(out, "refused") {
		t.Errorf("transport error output %q", out)
	}
}

func TestCheckRunnerHTTPTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(srv.Close)
	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	skip := httpCheck("skip", srv.URL, time.Hour, discovery.HealthCritical)
	skip.Definition.TLSSkipVerify = true
	r.Sync([]*discovery.Check{skip, httpCheck("verify", srv.URL, time.Hour, discovery.HealthPassing)})
	sink.waitStatus(t, "skip", discovery.HealthPassing)
	if out := sink.waitStatus(t, "verify", discovery.HealthCritical).output; !strings.Contains(out, "certificate") {
		t.Errorf("output %q", out)
	}
}

func TestCapOutput(t *testing.T) {
	short := "ok"
	if got := capOutput(short, 4096); got != short {
		t.Errorf("%q", got)
	}
	note := " ... (output cut to 4096 bytes)"
	// A 3-byte rune straddling the cut is dropped whole; the note fits
	// in the limit.
	s := strings.Repeat("x", 4095-len(note)) + "€" + strings.Repeat("y", len(note)+1)
	got := capOutput(s, 4096)
	if want := strings.Repeat("x", 4095-len(note)) + note; got != want || len(got) > 4096 {
		t.Errorf("got %d bytes ending %q, want %d ending %q", len(got), got[len(got)-50:], len(want), want[len(want)-50:])
	}
	if got := capOutput("abcdef", 3); got != "abc" {
		t.Errorf("a limit smaller than the note: %q, want the cut without it", got)
	}
}

func TestCheckRunnerTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	r.Sync([]*discovery.Check{
		{CheckID: "open", Status: discovery.HealthCritical, Definition: discovery.CheckDefinition{TCP: ln.Addr().String(), Interval: 20 * time.Millisecond}},
		{CheckID: "closed", Status: discovery.HealthPassing, Definition: discovery.CheckDefinition{TCP: closedAddr, Interval: 20 * time.Millisecond}},
	})
	if out := sink.waitStatus(t, "open", discovery.HealthPassing).output; out != "TCP connect "+ln.Addr().String()+": Success" {
		t.Errorf("open output %q", out)
	}
	if out := sink.waitStatus(t, "closed", discovery.HealthCritical).output; !strings.Contains(out, "refused") {
		t.Errorf("closed output %q", out)
	}
}

func TestCheckRunnerGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("db", healthpb.HealthCheckResponse_SERVING)
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	addr := ln.Addr().String()

	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	interval := 20 * time.Millisecond
	r.Sync([]*discovery.Check{
		{CheckID: "server", Definition: discovery.CheckDefinition{GRPC: addr, Interval: interval}},
		{CheckID: "db", Definition: discovery.CheckDefinition{GRPC: addr + "/db", Interval: interval}},
		{CheckID: "unknown", Definition: discovery.CheckDefinition{GRPC: addr + "/nope", Interval: interval}},
	})
	if out := sink.waitStatus(t, "server", discovery.HealthPassing).output; out != "gRPC check "+addr+": success" {
		t.Errorf("output %q", out)
	}
	sink.waitStatus(t, "db", discovery.HealthPassing)
	if out := sink.waitStatus(t, "unknown", discovery.HealthCritical).output; !strings.Contains(out, "NotFound") {
		t.Errorf("unknown service output %q", out)
	}

	hs.SetServingStatus("db", healthpb.HealthCheckResponse_NOT_SERVING)
	if out := sink.waitStatus(t, "db", discovery.HealthCritical).output; !strings.Contains(out, "NOT_SERVING") {
		t.Errorf("not serving output %q", out)
	}
	hs.SetServingStatus("db", healthpb.HealthCheckResponse_SERVING)
	sink.waitStatus(t, "db", discovery.HealthPassing)
	if n := len(sink.updatesFor("db")); n != 3 {
		t.Errorf("db: %d writes, want 3 (passing, critical, passing)", n)
	}
	if n := len(sink.updatesFor("server")); n != 1 {
		t.Errorf("server: %d writes, want 1", n)
	}
}

func TestCheckRunnerGRPCServerDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	r.Sync([]*discovery.Check{{CheckID: "down", Status: discovery.HealthPassing,
		Definition: discovery.CheckDefinition{GRPC: addr, Interval: 20 * time.Millisecond}}})
	if out := sink.waitStatus(t, "down", discovery.HealthCritical).output; !strings.Contains(out, "Unavailable") {
		t.Errorf("output %q", out)
	}
}

func TestCheckRunnerTTL(t *testing.T) {
	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	ttl := 200 * time.Millisecond
	start := time.Now()
	r.Sync([]*discovery.Check{
		{CheckID: "kept", Status: discovery.HealthPassing, Definition: discovery.CheckDefinition{TTL: ttl}},
		{CheckID: "lapsed", Status: discovery.HealthPassing, Definition: discovery.CheckDefinition{TTL: ttl}},
	})
	ctx := context.Background()

	// "kept" is kept alive for longer than its TTL. The same status and
	// output are not written again; a new output is.
	var last time.Time
	for i := range 8 {
		output := ""
		if i >= 4 {
			output = "fine"
		}
		last = time.Now()
		if err := r.UpdateTTL(ctx, "kept", discovery.HealthPassing, output); err != nil {
			t.Fatal(err)
		}
		time.Sleep(ttl / 4)
	}
	// Meanwhile "lapsed" got no update: it expired TTL after the start.
	got := sink.waitStatus(t, "lapsed", discovery.HealthCritical)
	if got.output != "TTL expired" {
		t.Errorf("output %q", got.output)
	}
	if d := got.at.Sub(start); d < ttl {
		t.Errorf("expired after %v, before the TTL", d)
	}

	u := sink.updatesFor("kept")
	if len(u) != 1 || u[0].status != discovery.HealthPassing || u[0].output != "fine" {
		t.Fatalf("kept alive: writes %+v, want one (passing, fine)", u)
	}

	// Left alone, it expires TTL after the last update.
	got = sink.waitStatus(t, "kept", discovery.HealthCritical)
	if got.output != "TTL expired" || got.at.Sub(last) < ttl {
		t.Errorf("expired with %q after %v", got.output, got.at.Sub(last))
	}
	// And comes back with the next update.
	if err := r.UpdateTTL(ctx, "kept", discovery.HealthWarning, "slow"); err != nil {
		t.Fatal(err)
	}
	if got := sink.last("kept"); got.status != discovery.HealthWarning || got.output != "slow" {
		t.Errorf("after update: %+v", got)
	}
}

func TestCheckRunnerWritesOnlyOnChange(t *testing.T) {
	for _, tc := range []struct {
		catalog string
		writes  int
	}{
		{discovery.HealthCritical, 1},
		{discovery.HealthPassing, 0},
	} {
		t.Run("from "+tc.catalog, func(t *testing.T) {
			srv := newCountingServer(t, http.StatusOK)
			sink := newFakeCheckSink()
			r := newTestCheckRunner(t, sink)
			// The catalog holds the output the probe gives: only the
			// status can differ.
			c := httpCheck("web", srv.URL, 50*time.Millisecond, tc.catalog)
			c.Output = "HTTP GET " + srv.URL + ": 200 OK Output: body"
			r.Sync([]*discovery.Check{c})
			testkit.WaitFor(t, time.Second, "6 probes", func() bool { return srv.hits.Load() >= 6 })
			if got := sink.attemptsFor("web"); len(got) != tc.writes {
				t.Errorf("%d writes %+v, want %d", len(got), got, tc.writes)
			}
		})
	}
}

func TestCheckRunnerSinkErrorRetried(t *testing.T) {
	srv := newCountingServer(t, http.StatusOK)
	sink := newFakeCheckSink()
	sink.failNext = 2
	r := newTestCheckRunner(t, sink)
	r.Sync([]*discovery.Check{httpCheck("web", srv.URL, 20*time.Millisecond, discovery.HealthCritical)})
	sink.waitStatus(t, "web", discovery.HealthPassing)
	hits := srv.hits.Load()
	testkit.WaitFor(t, time.Second, "more probes", func() bool { return srv.hits.Load() >= hits+4 })
	got := sink.attemptsFor("web")
	if len(got) != 3 || got[0].status != "error:passing" || got[1].status != "error:passing" || got[2].status != discovery.HealthPassing {
		t.Errorf("attempts %+v, want two failed writes then one", got)
	}
}

func TestCheckRunnerTTLSinkErrorRetried(t *testing.T) {
	sink := newFakeCheckSink()
	sink.failNext = 1
	r := newTestCheckRunner(t, sink)
	// TTL 100ms: the runner retries at least every 100ms.
	r.Sync([]*discovery.Check{{CheckID: "ttl", Status: discovery.HealthCritical, Definition: discovery.CheckDefinition{TTL: 100 * time.Millisecond}}})
	if err := r.UpdateTTL(context.Background(), "ttl", discovery.HealthPassing, "ok"); err == nil {
		t.Fatal("UpdateTTL did not return the sink's error")
	}
	// Retried by the runner until it expires again or is written.
	testkit.WaitFor(t, time.Second, "a retry", func() bool { return len(sink.attemptsFor("ttl")) >= 2 })
	if got := sink.attemptsFor("ttl")[1]; got.status != discovery.HealthPassing && got.status != discovery.HealthCritical {
		t.Errorf("retry wrote %+v", got)
	}
}

func TestCheckRunnerDeregisterCriticalAfter(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := closed.Addr().String()
	closed.Close()

	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	limit := 150 * time.Millisecond
	start := time.Now()
	r.Sync([]*discovery.Check{
		{CheckID: "tcp", ServiceID: "web-1", Status: discovery.HealthPassing, Definition: discovery.CheckDefinition{
			TCP: addr, Interval: 20 * time.Millisecond, DeregisterCriticalServiceAfter: limit}},
		// Critical from the catalog; its TTL keeps it critical.
		{CheckID: "ttl", ServiceID: "worker-1", Status: discovery.HealthCritical, Definition: discovery.CheckDefinition{
			TTL: 100 * time.Millisecond, DeregisterCriticalServiceAfter: limit}},
		// No service: nothing to deregister.
		{CheckID: "node", Status: discovery.HealthPassing, Definition: discovery.CheckDefinition{
			TCP: addr, Interval: 20 * time.Millisecond, DeregisterCriticalServiceAfter: limit}},
		// Not critical.
		{CheckID: "alive", ServiceID: "alive-1", Status: discovery.HealthPassing, Definition: discovery.CheckDefinition{
			TTL: time.Hour, DeregisterCriticalServiceAfter: time.Millisecond}},
	})
	testkit.WaitFor(t, 1500*time.Millisecond, "two deregistrations", func() bool {
		return len(sink.deregistrations()) >= 2
	})
	time.Sleep(200 * time.Millisecond) // several more runs and ticks
	got := sink.deregistrations()
	if len(got) != 2 {
		t.Fatalf("deregistrations %+v, want web-1 and worker-1 once each", got)
	}
	seen := map[string]bool{}
	for _, d := range got {
		seen[d.checkID] = true
		if d.at.Sub(start) <= limit {
			t.Errorf("%s deregistered after %v, before %v", d.checkID, d.at.Sub(start), limit)
		}
	}
	if !seen["web-1"] || !seen["worker-1"] {
		t.Errorf("deregistrations %+v, want web-1 and worker-1", got)
	}
}

func TestCheckRunnerSyncRemoveStops(t *testing.T) {
	srv := newCountingServer(t, http.StatusOK)
	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	r.Sync([]*discovery.Check{
		httpCheck("web", srv.URL, 10*time.Millisecond, discovery.HealthPassing),
		{CheckID: "ttl", Definition: discovery.CheckDefinition{TTL: time.Hour}},
	})
	testkit.WaitFor(t, time.Second, "probes", func() bool { return srv.hits.Load() >= 3 })
	r.Sync(nil)
	time.Sleep(30 * time.Millisecond) // let a probe in flight finish
	hits := srv.hits.Load()
	time.Sleep(150 * time.Millisecond)
	if n := srv.hits.Load(); n != hits {
		t.Errorf("%d requests after the check was removed", n-hits)
	}
	if err := r.UpdateTTL(context.Background(), "ttl", discovery.HealthPassing, ""); !errors.Is(err, discovery.ErrCheckNotFound) {
		t.Errorf("UpdateTTL on a removed check: %v", err)
	}
}

func TestCheckRunnerSyncUnchangedKeepsRunning(t *testing.T) {
	srv := newCountingServer(t, http.StatusOK)
	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	interval := 150 * time.Millisecond
	ttl := 200 * time.Millisecond
	set := func(i int, header string) []*discovery.Check {
		web := httpCheck("web", srv.URL, interval, discovery.HealthPassing)
		web.Output = "HTTP GET " + srv.URL + ": 200 OK Output: body"
		web.Definition.Header = map[string][]string{"X-Test": {header}}
		web.ModifyIndex = uint64(i)
		return []*discovery.Check{web, {CheckID: "ttl", Status: discovery.HealthPassing, ModifyIndex: uint64(i),
			Definition: discovery.CheckDefinition{TTL: ttl}}}
	}
	start := time.Now()
	r.Sync(set(0, "a"))
	// The catalog changes all the time; these checks do not.
	for i := 1; time.Since(start) < 500*time.Millisecond; i++ {
		r.Sync(set(i, "a"))
		time.Sleep(2 * time.Millisecond)
	}
	// Probes at about 0, 150, 300 and 450ms.
	if n := srv.hits.Load(); n < 3 || n > 5 {
		t.Errorf("%d requests in 500ms at a 150ms interval", n)
	}
	// The TTL timer was not reset.
	got := sink.last("ttl")
	if got.status != discovery.HealthCritical || got.at.Sub(start) > ttl+150*time.Millisecond {
		t.Errorf("TTL check: %+v after %v, want critical about %v after the start", got, got.at.Sub(start), ttl)
	}
	if n := len(sink.attemptsFor("web")); n != 0 {
		t.Errorf("%d writes for an unchanged passing check", n)
	}

	// A changed definition restarts the check: it runs again at once.
	hits := srv.hits.Load()
	r.Sync(set(1000, "b"))
	testkit.WaitFor(t, 100*time.Millisecond, "a run of the restarted check", func() bool {
		return srv.hits.Load() > hits
	})
}

func TestCheckRunnerUpdateTTLErrors(t *testing.T) {
	srv := newCountingServer(t, http.StatusOK)
	sink := newFakeCheckSink()
	r := newTestCheckRunner(t, sink)
	r.Sync([]*discovery.Check{
		httpCheck("web", srv.URL, time.Hour, discovery.HealthPassing),
		{CheckID: "ttl", Definition: discovery.CheckDefinition{TTL: time.Hour}},
		{CheckID: "nothing"}, // no definition: not run
	})
	ctx := context.Background()
	if err := r.UpdateTTL(ctx, "missing", discovery.HealthPassing, ""); !errors.Is(err, discovery.ErrCheckNotFound) {
		t.Errorf("unknown check: %v", err)
	}
	if err := r.UpdateTTL(ctx, "nothing", discovery.HealthPassing, ""); !errors.Is(err, discovery.ErrCheckNotFound) {
		t.Errorf("check without a definition: %v", err)
	}
	if err := r.UpdateTTL(ctx, "web", discovery.HealthPassing, ""); !errors.Is(err, discovery.ErrNotTTLCheck) {
		t.Errorf("HTTP check: %v", err)
	}
	if err := r.UpdateTTL(ctx, "ttl", "bogus", ""); err == nil ||
		errors.Is(err, discovery.ErrCheckNotFound) || errors.Is(err, discovery.ErrNotTTLCheck) {
		t.Errorf("invalid status: %v", err)
	}
	if err := r.UpdateTTL(ctx, "ttl", discovery.HealthWarning, "hm"); err != nil {
		t.Errorf("TTL check: %v", err)
	}
	r.Close()
	if err := r.UpdateTTL(ctx, "ttl", discovery.HealthPassing, ""); !errors.Is(err, discovery.ErrCheckNotFound) {
		t.Errorf("after Close: %v", err)
	}
	r.Sync([]*discovery.Check{{CheckID: "late", Definition: discovery.CheckDefinition{TTL: time.Hour}}}) // no-op
	if err := r.UpdateTTL(ctx, "late", discovery.HealthPassing, ""); !errors.Is(err, discovery.ErrCheckNotFound) {
		t.Errorf("Sync after Close started a check: %v", err)
	}
}

// feedbackCatalog is a sink that applies writes to a catalog and feeds every
// change back to the runner's Sync, like the agent's catalog watch: in order,
// late, and with the view from before the write delivered after the write
// returned (a replica that is behind).
type feedbackCatalog struct {
	r         *Runner
	mu        sync.Mutex
	checks    map[string]*discovery.Check
	writes    map[string]int
	deliver   chan []*discovery.Check
	delivered atomic.Int64
	queued    atomic.Int64
	changed   chan struct{}
}

func newFeedbackCatalog(t *testing.T, checks ...*discovery.Check) *feedbackCatalog {
	c := &feedbackCatalog{
		checks:  make(map[string]*discovery.Check),
		writes:  make(map[string]int),
		deliver: make(chan []*discovery.Check, 1000),
		changed: make(chan struct{}, 1),
	}
	for _, ch := range checks {
		c.checks[ch.CheckID] = ch
	}
	c.r = newTestCheckRunner(t, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for snap := range c.deliver {
			time.Sleep(5 * time.Millisecond)
			c.r.Sync(snap)
			c.delivered.Add(1)
		}
	}()
	// Cleanups run last-first: the runner closes before deliveries stop.
	t.Cleanup(func() {
		close(c.deliver)
		<-done
	})
	t.Cleanup(c.r.Close)
	return c
}

func (c *feedbackCatalog) snapshotLocked() []*discovery.Check {
	var out []*discovery.Check
	for _, ch := range c.checks {
		cp := *ch
		out = append(out, &cp)
	}
	return out
}

func (c *feedbackCatalog) publishLocked(snaps ...[]*discovery.Check) {
	for _, s := range snaps {
		c.queued.Add(1)
		c.deliver <- s
	}
}

func (c *feedbackCatalog) UpdateCheck(ctx context.Context, checkID, status, output string) error {
	c.mu.Lock()
	defer func() {
		select {
		case c.changed <- struct{}{}:
		default:
		}
	}()
	defer c.mu.Unlock()
	before := c.snapshotLocked()
	ch := c.checks[checkID]
	ch.Status, ch.Output = status, output
	ch.ModifyIndex++
	c.writes[checkID]++
	c.publishLocked(before, c.snapshotLocked())
	return nil
}

func (c *feedbackCatalog) DeregisterService(ctx context.Context, serviceID string) error {
	return nil
}

// set changes a check in the catalog behind the runner's back.
func (c *feedbackCatalog) set(checkID, status, output string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.checks[checkID]
	ch.Status, ch.Output = status, output
	ch.ModifyIndex++
	c.publishLocked(c.snapshotLocked())
}

func (c *feedbackCatalog) get(checkID string) (status, output string, writes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checks[checkID].Status, c.checks[checkID].Output, c.writes[checkID]
}

func (c *feedbackCatalog) waitDelivered(t *testing.T) {
	t.Helper()
	testkit.WaitFor(t, time.Second, "catalog deliveries", func() bool {
		return c.delivered.Load() == c.queued.Load()
	})
}

func (c *feedbackCatalog) waitStatus(t *testing.T, checkID, want string) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, checkID+" "+want+" in the catalog", func() bool {
		s, _, _ := c.get(checkID)
		return s == want
	})
}

func TestCheckRunnerCatalogFeedback(t *testing.T) {
	srv := newCountingServer(t, http.StatusOK)
	c := newFeedbackCatalog(t,
		httpCheck("web", srv.URL, 10*time.Millisecond, discovery.HealthCritical),
		&discovery.Check{CheckID: "ttl", Status: discovery.HealthCritical, Definition: discovery.CheckDefinition{TTL: time.Hour}},
	)
	c.mu.Lock()
	snap := c.snapshotLocked()
	c.mu.Unlock()
	c.r.Sync(snap)
	ctx := context.Background()

	// Flip the probe's answer; every change is written once, whatever the
	// (late, partly stale) catalog views say.
	want := 0
	for _, code := range []int{200, 500, 200, 429, 200} {
		srv.code.Store(int64(code))
		status := map[int]string{200: discovery.HealthPassing, 500: discovery.HealthCritical, 429: discovery.HealthWarning}[code]
		c.waitStatus(t, "web", status)
		want++
		hits := srv.hits.Load()
		testkit.WaitFor(t, time.Second, "more probes", func() bool { return srv.hits.Load() >= hits+5 })
		if _, _, n := c.get("web"); n != want {
			t.Fatalf("after %d changes: %d writes", want, n)
		}
	}

	for i, u := range []struct{ status, output string }{
		{discovery.HealthPassing, ""}, {discovery.HealthPassing, ""}, {discovery.HealthWarning, "slow"}, {discovery.HealthWarning, "slow"}, {discovery.HealthPassing, ""},
	} {
		if err := c.r.UpdateTTL(ctx, "ttl", u.status, u.output); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 {
			c.waitDelivered(t)
		}
	}
	c.waitDelivered(t)
	if s, _, n := c.get("ttl"); s != discovery.HealthPassing || n != 3 {
		t.Errorf("ttl: %s after %d writes, want passing after 3", s, n)
	}

	// Someone else rewrites the statuses. The probe check writes its own
	// result back, once; the TTL check takes the catalog's.
	_, _, webWrites := c.get("web")
	c.set("web", discovery.HealthCritical, "re-registered")
	c.set("ttl", discovery.HealthCritical, "re-registered")
	c.waitStatus(t, "web", discovery.HealthPassing)
	c.waitDelivered(t)
	hits := srv.hits.Load()
	testkit.WaitFor(t, time.Second, "more probes", func() bool { return srv.hits.Load() >= hits+5 })
	if _, _, n := c.get("web"); n != webWrites+1 {
		t.Errorf("web: %d writes after the catalog changed, want 1", n-webWrites)
	}
	if s, _, n := c.get("ttl"); s != discovery.HealthCritical || n != 3 {
		t.Errorf("ttl: %s after %d writes, want critical after 3", s, n)
	}
	if err := c.r.UpdateTTL(ctx, "ttl", discovery.HealthPassing, ""); err != nil {
		t.Fatal(err)
	}
	if s, _, n := c.get("ttl"); s != discovery.HealthPassing || n != 4 {
		t.Errorf("ttl: %s after %d writes, want passing after 4", s, n)
	}
}

// reentrantSink calls Sync from inside UpdateCheck, as a sink that applies
// the write locally and notifies watchers synchronously would.
type reentrantSink struct {
	*fakeCheckSink
	r     *Runner
	check *discovery.Check
}

func (s *reentrantSink) UpdateCheck(ctx context.Context, checkID, status, output string) error {
	if err := s.fakeCheckSink.UpdateCheck(ctx, checkID, status, output); err != nil {
		return err
	}
	s.fakeCheckSink.mu.Lock()
	c := *s.check
	c.Status, c.Output = status, output
	s.fakeCheckSink.mu.Unlock()
	s.r.Sync([]*discovery.Check{&c})
	return nil
}

func TestCheckRunnerReentrantSync(t *testing.T) {
	srv := newCountingServer(t, http.StatusOK)
	sink := &reentrantSink{fakeCheckSink: newFakeCheckSink(),
		check: httpCheck("web", srv.URL, 10*time.Millisecond, discovery.HealthCritical)}
	sink.r = newTestCheckRunner(t, sink)
	sink.r.Sync([]*discovery.Check{sink.check})
	sink.waitStatus(t, "web", discovery.HealthPassing)
	srv.code.Store(500)
	sink.waitStatus(t, "web", discovery.HealthCritical)
	hits := srv.hits.Load()
	testkit.WaitFor(t, time.Second, "more probes", func() bool { return srv.hits.Load() >= hits+5 })
	if n := len(sink.updatesFor("web")); n != 2 {
		t.Errorf("%d writes, want 2", n)
	}
}

func TestCheckRunnerCloseStopsGoroutines(t *testing.T) {
	srv := newCountingServer(t, http.StatusOK)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	before := runtime.NumGoroutine()
	sink := newFakeCheckSink()
	r := New(testkit.Discard(), sink)
	r.maxJitter = 0
	r.Sync([]*discovery.Check{
		httpCheck("http", srv.URL, 10*time.Millisecond, ""),
		{CheckID: "tcp", Definition: discovery.CheckDefinition{TCP: ln.Addr().String(), Interval: 10 * time.Millisecond}},
		{CheckID: "grpc", Definition: discovery.CheckDefinition{GRPC: ln.Addr().String(), Interval: 10 * time.Millisecond}},
		{CheckID: "ttl", Definition: discovery.CheckDefinition{TTL: time.Hour}},
	})
	for _, id := range []string{"http", "tcp", "grpc"} {
		sink.waitStatus(t, id, discovery.HealthPassing)
	}
	done := make(chan struct{})
	go func() {
		r.Close()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Close did not return")
	}
	r.Close() // idempotent
	// The servers' goroutines for the runner's connections go away too.
	testkit.WaitFor(t, time.Second, "goroutines to exit", func() bool {
		return runtime.NumGoroutine() <= before
	})
}

// changingServer answers code with a body that changes on every request,
// so every probe's output differs from the last.
func changingServer(t *testing.T, code int) *countingServer {
	t.Helper()
	s := &countingServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := s.hits.Add(1)
		w.WriteHeader(code)
		fmt.Fprintf(w, "reply %d", n)
	}))
	t.Cleanup(s.Close)
	return s
}

// TestCheckRunnerOutputUpdateInterval: a check critical from its first
// run has its output written at once (the catalog's critical status
// alone says nothing of why); later output-only changes wait for
// UpdateInterval, Consul's check_update_interval, and with an interval of
// 0 every change is written.
func TestCheckRunnerOutputUpdateInterval(t *testing.T) {
	t.Run("first result written, later changes deferred", func(t *testing.T) {
		srv := changingServer(t, http.StatusInternalServerError)
		sink := newFakeCheckSink()
		r := newTestCheckRunner(t, sink) // the 5m default
		r.Sync([]*discovery.Check{httpCheck("web", srv.URL, 20*time.Millisecond, discovery.HealthCritical)})
		testkit.WaitFor(t, 2*time.Second, "10 probes", func() bool { return srv.hits.Load() >= 10 })
		u := sink.attemptsFor("web")
		if len(u) != 1 || u[0].status != discovery.HealthCritical || !strings.Contains(u[0].output, "500 Internal Server Error Output: reply 1") {
			t.Fatalf("writes %+v, want one: critical with the first reply", u)
		}
	})
	t.Run("interval", func(t *testing.T) {
		srv := changingServer(t, http.StatusInternalServerError)
		sink := newFakeCheckSink()
		r := newTestCheckRunner(t, sink)
		r.UpdateInterval = 200 * time.Millisecond
		r.Sync([]*discovery.Check{httpCheck("web", srv.URL, 10*time.Millisecond, discovery.HealthCritical)})
		testkit.WaitFor(t, 5*time.Second, "a deferred output write", func() bool { return len(sink.attemptsFor("web")) >= 2 })
		u := sink.attemptsFor("web")
		if hits := srv.hits.Load(); int64(len(u)) >= hits/2 {
			t.Errorf("%d writes for %d probes: output changes are not deferred", len(u), hits)
		}
		// The deferred write is no earlier than half the interval after
		// the first.
		if gap := u[1].at.Sub(u[0].at); gap < 100*time.Millisecond {
			t.Errorf("second write %v after the first, before half the interval", gap)
		}
		if u[1].status != discovery.HealthCritical || u[1].output == u[0].output {
			t.Errorf("second write %+v, want the newer output", u[1])
		}
	})
	t.Run("zero writes every change", func(t *testing.T) {
		srv := changingServer(t, http.StatusInternalServerError)
		sink := newFakeCheckSink()
		r := newTestCheckRunner(t, sink)
		r.UpdateInterval = 0
		r.Sync([]*discovery.Check{httpCheck("web", srv.URL, 20*time.Millisecond, discovery.HealthCritical)})
		testkit.WaitFor(t, 2*time.Second, "5 writes", func() bool { return len(sink.attemptsFor("web")) >= 5 })
	})
}
