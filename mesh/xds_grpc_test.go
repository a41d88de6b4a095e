package mesh

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	grpcxds "google.golang.org/grpc/xds" // the xds:/// resolver and its balancers
)

type namedBackend struct {
	testgrpc.UnimplementedTestServiceServer
	name string
	port int
}

func (b *namedBackend) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{ServerId: b.name}, nil
}

func startNamedBackend(t *testing.T, name string) *namedBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &namedBackend{name: name, port: ln.Addr().(*net.TCPAddr).Port}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, b)
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return b
}

// TestAgentProxylessGRPC: a running agent, real gRPC servers registered as
// a grpc service through the Consul API, and grpc-go's own xDS client
// dialing xds:///payments with a bootstrap that points at the agent: calls
// succeed, spread over a second instance, and leave a deregistered one
// within 2 s.
func TestAgentProxylessGRPC(t *testing.T) {
	cfg := testConfig(t)
	cfg.Addresses.XDS, cfg.Addresses.Admin = "127.0.0.1:0", "127.0.0.1:0"
	a := startAgent(t, cfg)
	client, err := api.NewClient(&api.Config{Address: a.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	b1, b2 := startNamedBackend(t, "p1"), startNamedBackend(t, "p2")
	reg := func(id string, b *namedBackend) {
		t.Helper()
		if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{
			ID: id, Name: "payments", Address: "127.0.0.1", Port: b.port, Meta: map[string]string{"protocol": "grpc"},
		}); err != nil {
			t.Fatal(err)
		}
	}
	reg("payments-1", b1)

	// The unix socket: an app on this host needs no token there (its file
	// mode guards it), and grpc-go's bootstrap cannot send one.
	xdsSock := "unix://" + a.XDSAddrs()[0].String()
	resolver, err := grpcxds.NewXDSResolverWithConfigForTesting([]byte(fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "payments-client"}
	}`, xdsSock)))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///payments", grpc.WithResolvers(resolver), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tc := testgrpc.NewTestServiceClient(conn)
	call := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return resp.GetServerId(), err
	}
	testkit.WaitFor(t, 10*time.Second, "a call through xds:///payments", func() bool {
		got, err := call()
		return err == nil && got == "p1"
	})

	reg("payments-2", b2)
	seen := map[string]int{}
	testkit.WaitFor(t, 5*time.Second, "calls on both instances", func() bool {
		got, err := call()
		if err == nil {
			seen[got]++
		}
		return seen["p1"] > 0 && seen["p2"] > 0
	})

	if err := client.Agent().ServiceDeregister("payments-1"); err != nil {
		t.Fatal(err)
	}
	gone := time.Now()
	streak := 0
	for streak < 20 {
		if time.Since(gone) > 2*time.Second {
			t.Fatalf("calls still reach the deregistered instance 2 s later")
		}
		got, err := call()
		if err != nil {
			t.Fatalf("call after deregistration: %v", err)
		}
		if got == "p2" {
			streak++
		} else {
			streak = 0
		}
	}
	t.Logf("all calls on the remaining instance %s after deregistration", time.Since(gone).Round(time.Millisecond))
}
