package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/lab/testkit"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// testProxy is a Proxy that is not running (no xDS): enough to dial.
func testProxy(t *testing.T, cfg Config) *Proxy {
	t.Helper()
	cfg.XDSAddr, cfg.Node = "127.0.0.1:1", "node-x"
	cfg.Logger = testkit.Discard()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p.ctx = ctx
	return p
}

// dialCluster is a STATIC cluster c of the given loopback addresses.
func dialCluster(timeout time.Duration, addrs ...netip.AddrPort) *cluster.Cluster {
	var lbs []*endpoint.LbEndpoint
	for _, a := range addrs {
		lbs = append(lbs, &endpoint.LbEndpoint{HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
			Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
				Address: a.Addr().String(), PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(a.Port())}}}}}}})
	}
	return &cluster.Cluster{
		Name: "c", ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		ConnectTimeout: durationpb.New(timeout),
		LoadAssignment: &endpoint.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: lbs}}},
	}
}

// listen accepts on loopback until the test ends and hands each
// connection to handle (which owns it).
func listen(t *testing.T, handle func(net.Conn)) netip.AddrPort {
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
			go handle(c)
		}
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort()
}

// silent holds connections open without a word until the test ends.
func silent(t *testing.T) func(net.Conn) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	return func(c net.Conn) {
		defer c.Close()
		<-done
	}
}

func tlsFailures(t *testing.T, reg *prometheus.Registry, cluster string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "vmesh_tls_handshake_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["side"] == "upstream" && labels["name"] == cluster {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestDialTLS: a failed upstream handshake is counted against the cluster,
// connect_timeout bounds the handshake, and the proxy stopping abandons a
// dial without counting it as the endpoint's failure.
func TestDialTLS(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := testProxy(t, Config{Metrics: NewMetrics(reg)})
	hangUp := listen(t, func(c net.Conn) { c.Close() })
	mute := listen(t, silent(t))
	rt := buildRT(t, dialCluster(300*time.Millisecond, hangUp, mute), nil)
	for _, h := range rt.hosts {
		h.tls = &tls.Config{ServerName: "x", MinVersion: tls.VersionTLS12}
	}

	if _, err := p.dial(rt, rt.hosts[0]); err == nil {
		t.Fatal("a TLS dial to a server that hangs up succeeded")
	}
	if n := tlsFailures(t, reg, "c"); n != 1 {
		t.Errorf("%v upstream TLS failures counted for c, want 1", n)
	}

	start := time.Now()
	_, err := p.dial(rt, rt.hosts[1])
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("handshake with a silent server: %v, want the connect timeout", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the connect timeout of 300ms took %v", d)
	}
	if n := tlsFailures(t, reg, "c"); n != 2 {
		t.Errorf("%v upstream TLS failures counted for c, want 2", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	p.ctx = ctx
	rt.spec.connectTimeout = time.Minute
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	if _, err := p.dial(rt, rt.hosts[1]); !errors.Is(err, context.Canceled) {
		t.Errorf("dial while the proxy stops: %v, want canceled", err)
	}
	if _, err := p.dialAddr(rt, mute); !errors.Is(err, context.Canceled) {
		t.Errorf("dialAddr after the proxy stopped: %v, want canceled", err)
	}
	if n := tlsFailures(t, reg, "c"); n != 2 {
		t.Errorf("the proxy stopping was counted as a TLS failure (%v)", n)
	}
}

// TestTCPConnectFailureEjects: the TCP path reports a refused connect as a
// connect failure, which outlier detection counts (not split: as a 5xx),
// so the dead endpoint is ejected and connections go to the live one.
func TestTCPConnectFailureEjects(t *testing.T) {
	p := testProxy(t, Config{})
	live := listen(t, func(c net.Conn) {
		defer c.Close()
		io.Copy(c, c)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close() // nothing listens there now: connections are refused
	c := dialCluster(time.Second, dead, live)
	c.OutlierDetection = &cluster.OutlierDetection{Consecutive_5Xx: wrapperspb.UInt32(2), AlwaysEjectOneHost: wrapperspb.Bool(true)}
	rt := buildRT(t, c, nil)
	p.cur.Store(&snapshot{clusters: map[string]*clusterRT{"c": rt}})
	tp := &tcpProxySpec{clusters: []weightedCluster{{name: "c", weight: 1}}, total: 1}
	rl := &runningListener{name: "l"}

	served := map[netip.AddrPort]int{}
	for range 8 {
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			p.tcpProxy(tp, &proxyConn{down: server}, server, netip.AddrPort{}, rl, &tcpResult{})
		}()
		client.SetDeadline(time.Now().Add(5 * time.Second))
		ok := false
		if _, err := client.Write([]byte("x")); err == nil {
			b := make([]byte, 1)
			_, err := io.ReadFull(client, b)
			ok = err == nil && b[0] == 'x'
		}
		client.Close()
		<-done
		if ok {
			served[live]++
		} else {
			served[dead]++
		}
	}
	if !rt.hosts[0].st.ejected(monoNanos(time.Now())) {
		t.Error("the dead endpoint was not ejected")
	}
	if served[dead] != 2 || served[live] != 6 {
		t.Errorf("connections: %d failed, %d echoed; want the dead endpoint tried twice, then ejected", served[dead], served[live])
	}
}
