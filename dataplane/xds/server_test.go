package xds

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// TestMain fails the package if a Server's goroutines (or go-control-plane's
// stream handlers) outlive the tests: Close must stop them all.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(3 * time.Second)
		for {
			leaked := leakedGoroutines()
			if leaked == "" {
				break
			}
			if time.Now().After(deadline) {
				fmt.Fprintf(os.Stderr, "leaked goroutines:\n%s\n", leaked)
				code = 1
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	os.Exit(code)
}

func leakedGoroutines() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var leaked []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "vmesh/dataplane/xds.(*Server)") || strings.Contains(g, "go-control-plane/pkg/server") {
			leaked = append(leaked, g)
		}
	}
	return strings.Join(leaked, "\n\n")
}

// testStore is a catalog written the way the FSM writes it, one raft
// index per write.
type testStore struct {
	*discovery.Store
	mu  sync.Mutex
	idx uint64
}

func newTestStore(t *testing.T) *testStore {
	s := &testStore{Store: discovery.NewStore()}
	s.write(t, func(idx uint64) error { return s.EnsureNode(idx, node("node-a", "127.0.0.1")) })
	return s
}

func (s *testStore) write(t testing.TB, fn func(idx uint64) error) uint64 {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idx++
	if err := fn(s.idx); err != nil {
		t.Fatal(err)
	}
	return s.idx
}

func (s *testStore) register(t testing.TB, in discovery.Instance) uint64 {
	t.Helper()
	if in.Node == "" {
		in.Node = "node-a"
	}
	in.Weights = discovery.Weights{Passing: 1, Warning: 1}
	return s.write(t, func(idx uint64) error { return s.EnsureService(idx, &in, nil) })
}

func startServer(t *testing.T, st *discovery.Store) (*Server, string) {
	t.Helper()
	// Unix socket paths are short (108 bytes): not under t.TempDir().
	dir, err := os.MkdirTemp("", "vx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	srv, err := NewServer(Config{Store: st, UnixSocket: filepath.Join(dir, "xds.sock"), TCPAddr: "127.0.0.1:0", Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, srv.Addrs()[1].String()
}

func dial(t *testing.T, target string) discoverygrpc.AggregatedDiscoveryServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return discoverygrpc.NewAggregatedDiscoveryServiceClient(conn)
}

func clusterNames(t *testing.T, resp *discoverygrpc.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range resp.GetResources() {
		var c cluster.Cluster
		if err := a.UnmarshalTo(&c); err != nil {
			t.Fatal(err)
		}
		out = append(out, c.GetName())
	}
	slices.Sort(out)
	return out
}

// recv reads the next response within d.
func recv[T any](t *testing.T, d time.Duration, fn func() (T, error)) T {
	t.Helper()
	type res struct {
		v   T
		err error
	}
	ch := make(chan res, 1)
	go func() {
		v, err := fn()
		ch <- res{v, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("receiving: %v", r.err)
		}
		return r.v
	case <-time.After(d):
		t.Fatalf("no response within %s", d)
	}
	panic("unreachable")
}

func clientStatus(s *Server, node string) (ClientStatus, bool) {
	for _, c := range s.Clients() {
		if c.Node == node {
			return c, true
		}
	}
	return ClientStatus{}, false
}

// TestServerSotW: a state-of-the-world ADS client gets the catalog, sees a
// change within a second, and its NACK is reported.
func TestServerSotW(t *testing.T) {
	st := newTestStore(t)
	st.register(t, discovery.Instance{ID: "web-1", Service: "web", Port: 8080})
	srv, addr := startServer(t, st.Store)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := dial(t, addr).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := &core.Node{Id: "envoy-1", UserAgentName: "envoy"}
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: n, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	first := recv(t, 2*time.Second, stream.Recv)
	if got := clusterNames(t, first); !slices.Equal(got, []string{"web"}) {
		t.Fatalf("clusters = %v, want [web]", got)
	}
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.ClusterType, VersionInfo: first.VersionInfo, ResponseNonce: first.Nonce}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, time.Second, "the ACK to be recorded", func() bool {
		c, _ := clientStatus(srv, "envoy-1")
		return c.Types["cluster"].Acked == first.VersionInfo
	})

	start := time.Now()
	idx := st.register(t, discovery.Instance{ID: "api-1", Service: "api", Port: 9090})
	second := recv(t, time.Second, stream.Recv)
	if got := clusterNames(t, second); !slices.Equal(got, []string{"api", "web"}) {
		t.Fatalf("clusters after the change = %v, want [api web]", got)
	}
	if second.VersionInfo != fmt.Sprint(idx) {
		t.Errorf("version = %q, want the raft index %d", second.VersionInfo, idx)
	}
	t.Logf("change reached the SotW client in %s", time.Since(start))

	// The client rejects it.
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{
		TypeUrl: resource.ClusterType, VersionInfo: first.VersionInfo, ResponseNonce: second.Nonce,
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: "cluster api: bad config"},
	}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, time.Second, "the NACK to be reported", func() bool {
		c, _ := clientStatus(srv, "envoy-1")
		ts := c.Types["cluster"]
		return ts.Nacks == 1 && ts.Rejected && ts.LastNack != nil && ts.LastNack.Error == "cluster api: bad config" &&
			ts.LastNack.Version == second.VersionInfo && ts.Acked == first.VersionInfo
	})

	// The rejected config is not sent again (no NACK loop): nothing comes
	// until the catalog changes.
	resent := make(chan string, 1)
	go func() {
		if r, err := stream.Recv(); err == nil {
			resent <- r.GetVersionInfo()
		}
	}()
	select {
	case v := <-resent:
		t.Fatalf("the server sent version %s again right after the NACK", v)
	case <-time.After(300 * time.Millisecond):
	}

	// /v1/vmesh/xds/clients shows it too.
	rec := httptest.NewRecorder()
	srv.ClientsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/v1/vmesh/xds/clients", nil))
	var list []ClientStatus
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Node != "envoy-1" || list[0].Mesh || list[0].Types["cluster"].Nacks != 1 || list[0].Version != idx {
		t.Errorf("clients = %s", rec.Body.String())
	}

	// The client leaves: it is forgotten.
	cancel()
	testkit.WaitFor(t, 2*time.Second, "the client to be forgotten", func() bool {
		_, ok := clientStatus(srv, "envoy-1")
		return !ok
	})
}

// TestServerDelta: the same with incremental xDS.
func TestServerDelta(t *testing.T) {
	st := newTestStore(t)
	st.register(t, discovery.Instance{ID: "web-1", Service: "web", Port: 8080})
	srv, addr := startServer(t, st.Store)
	stream, err := dial(t, addr).DeltaAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	n := &core.Node{Id: "envoy-delta", UserAgentName: "envoy"}
	if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{Node: n, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	first := recv(t, 2*time.Second, stream.Recv)
	if len(first.Resources) != 1 || first.Resources[0].Name != "web" {
		t.Fatalf("first delta = %v", first.Resources)
	}
	if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResponseNonce: first.Nonce}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, time.Second, "the delta ACK to be recorded", func() bool {
		c, _ := clientStatus(srv, "envoy-delta")
		return c.Types["cluster"].Acked == first.SystemVersionInfo && c.Types["cluster"].Acked != ""
	})

	start := time.Now()
	st.register(t, discovery.Instance{ID: "api-1", Service: "api", Port: 9090})
	second := recv(t, time.Second, stream.Recv)
	// Delta sends what changed: the new cluster only.
	if len(second.Resources) != 1 || second.Resources[0].Name != "api" {
		t.Fatalf("second delta = %v, want only api", second.Resources)
	}
	t.Logf("change reached the delta client in %s", time.Since(start))
	if err := stream.Send(&discoverygrpc.DeltaDiscoveryRequest{
		TypeUrl: resource.ClusterType, ResponseNonce: second.Nonce,
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: "api: unknown field"},
	}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, time.Second, "the delta NACK to be reported", func() bool {
		c, _ := clientStatus(srv, "envoy-delta")
		ts := c.Types["cluster"]
		return ts.Nacks == 1 && ts.Rejected && ts.LastNack.Error == "api: unknown field" && ts.LastNack.Version == second.SystemVersionInfo
	})
}

// TestServerAnswersResourceSubsets guards the ads=false choice: a client
// that names only some resources (as proxyless gRPC does) is answered.
func TestServerAnswersResourceSubsets(t *testing.T) {
	st := newTestStore(t)
	st.register(t, discovery.Instance{ID: "orders-1", Service: "orders", Port: 9000, Protocol: "grpc"})
	st.register(t, discovery.Instance{ID: "users-1", Service: "users", Port: 9001, Protocol: "grpc"})
	_, addr := startServer(t, st.Store)
	stream, err := dial(t, addr).StreamAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	n := &core.Node{Id: "app", UserAgentName: "gRPC Go"}
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType} {
		if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: n, TypeUrl: typ, ResourceNames: []string{"orders"}}); err != nil {
			t.Fatal(err)
		}
		resp := recv(t, 2*time.Second, stream.Recv)
		if resp.TypeUrl != typ || len(resp.Resources) != 1 {
			t.Fatalf("%s for [orders]: %d resources of %s", typ, len(resp.Resources), resp.TypeUrl)
		}
	}
}

// TestServerUnixSocketAndDebounce: the unix socket serves; a burst of
// writes costs few pushes; a client without a node ID is refused.
func TestServerUnixSocketAndDebounce(t *testing.T) {
	st := newTestStore(t)
	srv, _ := startServer(t, st.Store)
	stream, err := dial(t, "unix://"+srv.Addrs()[0].String()).StreamAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	n := &core.Node{Id: "node-a"} // the host's own proxy
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: n, TypeUrl: resource.ListenerType}); err != nil {
		t.Fatal(err)
	}
	resp := recv(t, 2*time.Second, stream.Recv)
	if len(resp.Resources) != 1 { // the outbound listener
		t.Fatalf("listeners = %d, want the outbound one", len(resp.Resources))
	}
	ack := func(r *discoverygrpc.DiscoveryResponse) {
		if err := stream.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.ListenerType, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce}); err != nil {
			t.Fatal(err)
		}
	}
	ack(resp)
	if c, _ := clientStatus(srv, "node-a"); !c.Mesh {
		t.Errorf("node-a is not served as a mesh proxy: %+v", c)
	}
	const burst = 50
	var last uint64
	for i := range burst {
		last = st.register(t, discovery.Instance{ID: fmt.Sprintf("svc-%d", i), Service: fmt.Sprintf("svc-%d", i), Port: 1000 + i,
			Upstreams: []discovery.Upstream{{DestinationName: "x", LocalBindAddress: "127.0.0.1", LocalBindPort: 20000 + i}}})
	}
	pushes := 0
	for {
		r := recv(t, 2*time.Second, stream.Recv)
		pushes++
		ack(r)
		if r.VersionInfo == fmt.Sprint(last) {
			break
		}
	}
	if pushes > burst/5 {
		t.Errorf("%d writes caused %d pushes; the debounce should merge them", burst, pushes)
	}
	t.Logf("%d writes, %d pushes", burst, pushes)

	bad, err := dial(t, srv.Addrs()[1].String()).StreamAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := bad.Send(&discoverygrpc.DiscoveryRequest{TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Recv(); err == nil || !strings.Contains(err.Error(), "node.id") {
		t.Errorf("a request without a node ID: %v, want it refused", err)
	}
}

func TestConfigDumpHandler(t *testing.T) {
	st := newTestStore(t)
	st.register(t, discovery.Instance{ID: "web-1", Service: "web", Port: 8080})
	srv, addr := startServer(t, st.Store)
	stream, err := dial(t, addr).StreamAggregatedResources(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer stream.CloseSend()
	if err := stream.Send(&discoverygrpc.DiscoveryRequest{Node: &core.Node{Id: "node-a"}, TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	recv(t, 2*time.Second, stream.Recv)
	for _, tc := range []struct {
		query string
		code  int
		want  []string
	}{
		{"", 200, []string{`"node-a"`, `"clusters"`, `"vmesh/passthrough"`, `"listeners"`, `"vmesh/outbound"`}},
		{"?node=node-a", 200, []string{`"node-a"`}},
		{"?node=nobody", 404, []string{"nobody"}},
	} {
		rec := httptest.NewRecorder()
		srv.ConfigDumpHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/config_dump"+tc.query, nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != tc.code {
			t.Errorf("%s: %d %s", tc.query, rec.Code, body)
		}
		for _, w := range tc.want {
			if !strings.Contains(string(body), w) {
				t.Errorf("%s: %s does not mention %s", tc.query, body, w)
			}
		}
		if tc.code == http.StatusOK && !json.Valid(body) {
			t.Errorf("%s: not JSON", tc.query)
		}
	}
}

func TestServerStartErrors(t *testing.T) {
	if _, err := NewServer(Config{}); err == nil {
		t.Error("NewServer without a store: want an error")
	}
	dir, err := os.MkdirTemp("", "vx")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	notSocket := filepath.Join(dir, "file")
	if err := os.WriteFile(notSocket, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, _ := NewServer(Config{Store: discovery.NewStore(), UnixSocket: notSocket, Logger: testkit.Logger(t)})
	if err := srv.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Start over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(notSocket); string(b) != "x" {
		t.Error("Start removed a file that is not a socket")
	}
	srv.Close()

	// A stale socket (a crashed agent's) is replaced; Close removes it.
	sock := filepath.Join(dir, "xds.sock")
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("no stale socket to test with: %v", err)
	}
	srv, _ = NewServer(Config{Store: discovery.NewStore(), UnixSocket: sock, Logger: testkit.Logger(t)})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("Start over a stale socket: %v", err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket: %v %v, want mode 0660", fi, err)
	}
	srv.Close()
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket after Close: %v, want it removed", err)
	}
}
