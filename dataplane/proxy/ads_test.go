package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// namedServer answers each line with "name:line".
func namedServer(t *testing.T, name string) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s:%s", name, line)
		}
	}).String()
}

// serveTCP accepts on a loopback port until the test ends and runs handle
// on each connection, closing it afterwards.
func serveTCP(t *testing.T, handle func(net.Conn)) *net.TCPAddr {
	t.Helper()
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
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sockAddr(hostport string) *core.Address {
	host, port, _ := net.SplitHostPort(hostport)
	var p uint32
	fmt.Sscan(port, &p)
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address: host, PortSpecifier: &core.SocketAddress_PortValue{PortValue: p}}}}
}

func tcpListener(t *testing.T, name, addr, clusterName string) *listener.Listener {
	return &listener.Listener{Name: name, Address: sockAddr(addr), FilterChains: []*listener.FilterChain{{
		Filters: []*listener.Filter{{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listener.Filter_TypedConfig{
			TypedConfig: mustAny(t, &tcp.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcp.TcpProxy_Cluster{Cluster: clusterName}})}}},
	}}}
}

func staticCluster(name, backend string) *cluster.Cluster {
	return &cluster.Cluster{
		Name: name, ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		ConnectTimeout: durationpb.New(time.Second),
		LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{
			LbEndpoints: []*endpoint.LbEndpoint{{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: sockAddr(backend)}}}},
		}}},
	}
}

// controlPlane is a go-control-plane ADS server that records the error
// details its client sends.
type controlPlane struct {
	cache cache.SnapshotCache
	addr  string
	mu    sync.Mutex
	nacks []string
}

func startControlPlane(t testing.TB) *controlPlane {
	t.Helper()
	cp := &controlPlane{cache: cache.NewSnapshotCache(false, cache.IDHash{}, nil)}
	cb := serverv3.CallbackFuncs{StreamRequestFunc: func(_ int64, req *discoverygrpc.DiscoveryRequest) error {
		if d := req.GetErrorDetail(); d != nil {
			cp.mu.Lock()
			cp.nacks = append(cp.nacks, req.GetVersionInfo()+" "+d.GetMessage())
			cp.mu.Unlock()
		}
		return nil
	}}
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(context.Background(), cp.cache, cb))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	cp.addr = ln.Addr().String()
	return cp
}

func (cp *controlPlane) set(t testing.TB, version string, listeners []types.Resource, clusters []types.Resource) {
	t.Helper()
	snap, err := cache.NewSnapshot(version, map[resource.Type][]types.Resource{
		resource.ListenerType: listeners, resource.ClusterType: clusters,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), "node-x", snap); err != nil {
		t.Fatal(err)
	}
}

// roundTrip writes a line on c and reads the answer.
func roundTrip(c net.Conn, r *bufio.Reader, line string) (string, error) {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintln(c, line); err != nil {
		return "", err
	}
	got, err := r.ReadString('\n')
	return strings.TrimSuffix(got, "\n"), err
}

// TestADSAckNackSwap: the proxy ACKs a config it serves; NACKs one it
// cannot honour (an HTTP connection manager with a field it does not
// implement) with an error detail naming the listener and the field, while the previous config keeps serving;
// swaps a new cluster in for new connections while an open one keeps its
// upstream; and drains a listener that disappears.
func TestADSAckNackSwap(t *testing.T) {
	a, b := namedServer(t, "a"), namedServer(t, "b")
	cp := startControlPlane(t)
	cp.set(t, "1", []types.Resource{tcpListener(t, "l1", "127.0.0.1:0", "c")}, []types.Resource{staticCluster("c", a)})
	p := startProxy(t, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: 300 * time.Millisecond, MinBackoff: 50 * time.Millisecond, Logger: testkit.Discard()})

	testkit.WaitFor(t, 5*time.Second, "version 1 ACKed", func() bool {
		st := p.Status()
		return st[resource.ListenerType].Acked == "1" && st[resource.ClusterType].Acked == "1"
	})
	l1 := p.ListenerAddrs()["l1"].String()
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.DialTimeout("tcp", l1, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	old, oldR := dial()
	if got, err := roundTrip(old, oldR, "x"); err != nil || got != "a:x" {
		t.Fatalf("through l1 = %q, %v; want a:x", got, err)
	}

	// Version 2 adds an HTTP listener asking for request IDs and a plain
	// TCP listener l3: the response is NACKed, with the reason, the bad
	// listener stays out, and — as Envoy does — the good new one is
	// applied while l1 keeps serving.
	badHTTP := func(name string) *listener.Listener {
		return &listener.Listener{Name: name, Address: sockAddr("127.0.0.1:0"), FilterChains: []*listener.FilterChain{{
			Filters: []*listener.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listener.Filter_TypedConfig{
				TypedConfig: mustAny(t, &hcm.HttpConnectionManager{StatPrefix: name, GenerateRequestId: wrapperspb.Bool(true)})}}},
		}}}
	}
	cp.set(t, "2", []types.Resource{tcpListener(t, "l1", "127.0.0.1:0", "c"), badHTTP("l2"), tcpListener(t, "l3", "127.0.0.1:0", "c")},
		[]types.Resource{staticCluster("c", a)})
	testkit.WaitFor(t, 5*time.Second, "version 2 NACKed", func() bool { return p.Status()[resource.ListenerType].Nacks > 0 })
	st := p.Status()[resource.ListenerType]
	want := "listener l2.filter_chains[0].filters[0] http_connection_manager.generate_request_id is not supported"
	if !strings.Contains(st.LastNack, want) || st.Acked != "1" {
		t.Errorf("listeners: %+v; want version 1 kept and a NACK naming %q", st, want)
	}
	testkit.WaitFor(t, 2*time.Second, "the server to see the error detail", func() bool {
		cp.mu.Lock()
		defer cp.mu.Unlock()
		return len(cp.nacks) > 0 && strings.Contains(cp.nacks[0], want) && strings.HasPrefix(cp.nacks[0], "1 ")
	})
	if _, ok := p.ListenerAddrs()["l2"]; ok {
		t.Error("the NACKed listener was bound")
	}
	c, r := dial()
	if got, err := roundTrip(c, r, "y"); err != nil || got != "a:y" {
		t.Fatalf("after the NACK, l1 = %q, %v; want a:y (version 1)", got, err)
	}
	l3, ok := p.ListenerAddrs()["l3"]
	if !ok {
		t.Fatal("l3, valid, was held back by l2's refusal")
	}
	c3, err := net.DialTimeout("tcp", l3.String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got, err := roundTrip(c3, bufio.NewReader(c3), "y3"); err != nil || got != "a:y3" {
		t.Fatalf("through l3 = %q, %v; want a:y3", got, err)
	}

	// Version 2b turns l1 itself into something unsupported: l1 keeps its
	// accepted version (and address) and serves on.
	nacks := p.Status()[resource.ListenerType].Nacks
	cp.set(t, "2b", []types.Resource{badHTTP("l1"), tcpListener(t, "l3", "127.0.0.1:0", "c")}, []types.Resource{staticCluster("c", a)})
	// Wait for 2b's own NACK: version 2 may be NACKed once more first (a
	// resend), which a count of NACKs would take for 2b's.
	testkit.WaitFor(t, 5*time.Second, "version 2b NACKed", func() bool {
		st := p.Status()[resource.ListenerType]
		return st.Nacks > nacks && strings.Contains(st.LastNack, "listener l1.filter_chains[0]")
	})
	if st := p.Status()[resource.ListenerType]; !strings.Contains(st.LastNack, "listener l1.filter_chains[0]") || st.Acked != "1" {
		t.Errorf("listeners after 2b: %+v; want a NACK naming l1 and version 1 still the ACKed one", st)
	}
	if got := p.ListenerAddrs()["l1"]; got == nil || got.String() != l1 {
		t.Fatalf("l1 after its refused update: %v, want still on %s", got, l1)
	}
	c, r = dial()
	if got, err := roundTrip(c, r, "y2"); err != nil || got != "a:y2" {
		t.Fatalf("l1 after its refused update = %q, %v; want a:y2 (its accepted version)", got, err)
	}

	// Version 3 points c at b: new connections reach b, the open one keeps
	// its upstream.
	cp.set(t, "3", []types.Resource{tcpListener(t, "l1", "127.0.0.1:0", "c")}, []types.Resource{staticCluster("c", b)})
	testkit.WaitFor(t, 5*time.Second, "version 3 ACKed", func() bool { return p.Status()[resource.ClusterType].Acked == "3" })
	if p.ListenerAddrs()["l1"].String() != l1 {
		t.Fatalf("l1 was rebound: %v, was %s", p.ListenerAddrs()["l1"], l1)
	}
	c, r = dial()
	if got, err := roundTrip(c, r, "z"); err != nil || got != "b:z" {
		t.Fatalf("after the swap = %q, %v; want b:z", got, err)
	}
	if got, err := roundTrip(old, oldR, "w"); err != nil || got != "a:w" {
		t.Fatalf("the open connection = %q, %v; want a:w (its upstream kept)", got, err)
	}

	// Version 4 drops l1: it stops accepting at once; the open connection
	// lives on until the drain timeout.
	cp.set(t, "4", nil, []types.Resource{staticCluster("c", b)})
	testkit.WaitFor(t, 5*time.Second, "version 4 ACKed", func() bool { return p.Status()[resource.ListenerType].Acked == "4" })
	if _, err := net.DialTimeout("tcp", l1, time.Second); err == nil {
		t.Error("a removed listener still accepts")
	}
	if got, err := roundTrip(old, oldR, "v"); err != nil || got != "a:v" {
		t.Fatalf("a draining connection = %q, %v; want a:v", got, err)
	}
	start := time.Now()
	old.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := oldR.ReadString('\n'); err == nil {
		t.Fatal("read on a drained connection succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the drain timeout (300 ms) closed the connection after %s", d)
	}
}
