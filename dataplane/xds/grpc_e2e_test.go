package xds_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	grpcxds "google.golang.org/grpc/xds" // registers the xds:/// resolver and its balancers
)

// backend is a real gRPC server that answers with its own name.
type backend struct {
	testgrpc.UnimplementedTestServiceServer
	name string
	addr *net.TCPAddr
}

func (b *backend) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{ServerId: b.name}, nil
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, addr: ln.Addr().(*net.TCPAddr)}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, b)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return b
}

// openCatalog is a single-node raft (bbolt log in a temp dir) applying to a
// catalog, as an agent runs it, with this host's node registered.
func openCatalog(t *testing.T) (*raft.Server, *discovery.Store) {
	t.Helper()
	store := discovery.NewStore()
	srv, err := raft.Open(raft.Config{
		NodeID: "e2e-node-id", Addr: "127.0.0.1:7400", DataDir: t.TempDir(), Bootstrap: true,
		Logger: testkit.Discard(),
	}, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	if err := srv.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Apply(ctx, discovery.RegisterNodeRequest{Node: discovery.Node{ID: "e2e-node-id", Name: "host-1", Address: "127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	return srv, store
}

// register goes through the API's validation, then raft, as
// PUT /v1/agent/service/register does.
func register(t *testing.T, r *raft.Server, id string, b *backend) {
	t.Helper()
	registerAs(t, r, "orders", id, b)
}

func registerAs(t *testing.T, r *raft.Server, service, id string, b *backend) {
	t.Helper()
	reg := &discovery.ServiceRegistration{ID: id, Name: service, Address: "127.0.0.1", Port: b.addr.Port,
		Meta: map[string]string{"protocol": "grpc"}}
	req, err := reg.Build("host-1", "api")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(context.Background(), req); err != nil {
		t.Fatal(err)
	}
}

// TestProxylessGRPC: grpc-go's own xDS client, dialing xds:///orders with a
// bootstrap that points at our server, calls a real gRPC service registered
// as a grpc service; spreads calls over a second instance; and drops a
// deregistered one within 2 s.
func TestProxylessGRPC(t *testing.T) {
	r, store := openCatalog(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	register(t, r, "orders-a", a)

	srv, err := xds.NewServer(xds.Config{Store: store, TCPAddr: "127.0.0.1:0", Logger: testkit.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "orders-client"}
	}`, srv.Addrs()[0].String())
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///orders", grpc.WithResolvers(resolver), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := testgrpc.NewTestServiceClient(conn)
	call := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return resp.GetServerId(), err
	}

	// One instance: every call reaches it.
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := call()
		if err == nil && got == "a" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful call through xds:///orders: %q, %v\nclients: %+v", got, err, srv.Clients())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for range 10 {
		if got, err := call(); err != nil || got != "a" {
			t.Fatalf("call = %q, %v; want a", got, err)
		}
	}
	c := srv.Clients()
	if len(c) != 1 || c[0].Node != "orders-client" || c[0].Mesh || !c[0].Proxyless {
		t.Fatalf("clients = %+v, want orders-client, proxyless", c)
	}
	for _, typ := range []string{"listener", "route", "cluster", "endpoints"} {
		if ts := c[0].Types[typ]; ts.Acked == "" || ts.Nacks != 0 {
			t.Errorf("%s: %+v, want ACKed and never NACKed", typ, ts)
		}
	}

	// A second instance: calls spread over both.
	register(t, r, "orders-b", b)
	seen := map[string]int{}
	deadline = time.Now().Add(3 * time.Second)
	for seen["a"] == 0 || seen["b"] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("calls never spread over both instances: %v", seen)
		}
		got, err := call()
		if err != nil {
			t.Fatal(err)
		}
		seen[got]++
	}
	seen = map[string]int{}
	for range 40 {
		got, err := call()
		if err != nil {
			t.Fatal(err)
		}
		seen[got]++
	}
	if seen["a"] < 10 || seen["b"] < 10 {
		t.Errorf("40 calls with round robin: %v, want both well used", seen)
	}

	// Deregister a: within 2 s every call goes to b.
	start := time.Now()
	if _, err := r.Apply(context.Background(), discovery.DeregisterServiceRequest{Node: "host-1", ServiceID: "orders-a"}); err != nil {
		t.Fatal(err)
	}
	streak := 0
	for streak < 20 {
		if time.Since(start) > 2*time.Second {
			t.Fatalf("calls still reach the deregistered instance 2 s later")
		}
		got, err := call()
		if err != nil {
			t.Fatal(err)
		}
		if got == "b" {
			streak++
		} else {
			streak = 0
		}
	}
	t.Logf("all calls on b %s after the deregistration", time.Since(start))

	// Config entries reach gRPC too: a header routes to a canary service,
	// and a least_request resolver is accepted (no NACK).
	canary := startBackend(t, "canary")
	registerAs(t, r, "orders-canary", "orders-canary-1", canary)
	var lastIdx uint64
	for _, body := range []string{
		`{"Kind":"service-router","Name":"orders","Routes":[{"Match":{"HTTP":{"Header":[{"Name":"x-canary","Exact":"1"}]}},"Destination":{"Service":"orders-canary"}}]}`,
		`{"Kind":"service-resolver","Name":"orders","LoadBalancer":{"Policy":"least_request","LeastRequestConfig":{"ChoiceCount":2}}}`,
	} {
		e, err := discovery.DecodeConfigEntry([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		if lastIdx, err = r.Apply(context.Background(), discovery.ConfigEntryRequest{Op: discovery.ConfigEntryUpsert, Entry: *e}); err != nil {
			t.Fatal(err)
		}
	}
	canaryCall := func() (string, error) {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(context.Background(), "x-canary", "1"), time.Second)
		defer cancel()
		resp, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return resp.GetServerId(), err
	}
	deadline = time.Now().Add(3 * time.Second)
	for {
		got, err := canaryCall()
		if err == nil && got == "canary" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("x-canary: 1 never reached the canary: %q, %v\nclients: %+v", got, err, srv.Clients())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for range 10 {
		if got, err := call(); err != nil || got != "b" {
			t.Fatalf("a call without the header = %q, %v; want b", got, err)
		}
	}
	// The least_request cluster was sent and accepted.
	deadline = time.Now().Add(2 * time.Second)
	for {
		ts := srv.Clients()[0].Types["cluster"]
		if v, _ := strconv.ParseUint(ts.Acked, 10, 64); v >= lastIdx && !ts.Rejected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the resolver's cluster (index %d) was not ACKed: %+v", lastIdx, ts)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for typ, ts := range srv.Clients()[0].Types {
		if ts.Nacks != 0 {
			t.Errorf("grpc-go rejected %s: %+v", typ, ts.LastNack)
		}
	}
}
