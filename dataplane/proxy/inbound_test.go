package proxy_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/mesh"
	"github.com/vmesh/vmesh/raft"
)

// TestInboundCaptureListener runs node-b's proxy with an inbound capture
// listener, without iptables: its port is also the captured port, so a
// connection made straight to it matches the port's chains. Mesh mTLS
// (node-a's certificate, SNI echo.mesh) reaches the echo app in both
// modes. Plaintext is refused and counted: by the default chain's RBAC in
// strict mode, and in permissive mode because no capture redirected it
// (passing it to 127.0.0.1 on that port would dial the listener itself).
func TestInboundCaptureListener(t *testing.T) {
	r, store, ca := catalog(t)
	echoPort := echoServer(t)
	req, err := (&discovery.ServiceRegistration{ID: "echo-1", Name: "echo", Address: "127.0.0.1", Port: echoPort}).Build("node-b", "api")
	if err != nil {
		t.Fatal(err)
	}
	apply(t, r, *req)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leavesA := raft.NewLeafIssuer(store, "node-a", raft.CALeafSigner(store, "node-a", raft.StaticCA(ca)), 0, testkit.Discard())
	go leavesA.Run(ctx)
	leavesB := raft.NewLeafIssuer(store, "node-b", raft.CALeafSigner(store, "node-b", raft.StaticCA(ca)), 0, testkit.Discard())
	go leavesB.Run(ctx)
	testkit.WaitFor(t, 5*time.Second, "node-a's leaf", func() bool { return leavesA.Leaves().Node != nil })
	nodeCert, err := tls.X509KeyPair(leavesA.Leaves().Node.CertPEM, leavesA.Leaves().Node.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}

	for _, permissive := range []bool{false, true} {
		t.Run(fmt.Sprintf("permissive=%v", permissive), func(t *testing.T) {
			port := testkit.FreePort(t, "0.0.0.0")
			reg := prometheus.NewRegistry()
			addr := startXDS(t, store, xds.Options{
				OutboundAddr: "127.0.0.3", OutboundPort: testkit.FreePort(t, "127.0.0.3"), MeshPort: testkit.FreePort(t, "127.0.0.3"),
				IntentionsDefaultAllow: true,
				Host:                   xds.HostOptions{Node: "node-b", InboundPorts: []int{port}, InboundPort: port, InboundPermissive: permissive},
			}, mesh.NewLeafSecrets(leavesB, "node-b"))
			p := startProxy(t, proxy.Config{XDSAddr: addr, Node: "node-b", DrainTimeout: time.Second, MinBackoff: 50 * time.Millisecond,
				Logger: testkit.Logger(t), Metrics: proxy.NewMetrics(reg)})
			capture := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			viaMTLS := func() (net.Conn, error) {
				return tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", capture,
					&tls.Config{ServerName: "echo.mesh", InsecureSkipVerify: true, Certificates: []tls.Certificate{nodeCert}})
			}
			testkit.WaitFor(t, 10*time.Second, "mesh mTLS through the inbound capture listener", func() bool {
				return echoOnce(viaMTLS, "mesh") == nil
			})
			for typ, s := range p.Status() {
				if s.Nacks != 0 {
					t.Errorf("%s: %+v; the inbound capture listener's config was NACKed", typ, s)
				}
			}
			refused := map[string]string{"listener": xds.InboundCaptureListener, "action": "refused"}
			passed := map[string]string{"listener": xds.InboundCaptureListener, "action": "passed"}
			before := proxy.CounterValue(t, reg, "vmesh_inbound_plaintext_connections_total", refused)
			plain := func() (net.Conn, error) { return net.DialTimeout("tcp", capture, time.Second) }
			for range 3 {
				if err := echoOnce(plain, "plaintext"); err == nil {
					t.Fatal("plaintext got through the inbound capture listener")
				}
			}
			testkit.WaitFor(t, 5*time.Second, "three refusals counted", func() bool {
				return proxy.CounterValue(t, reg, "vmesh_inbound_plaintext_connections_total", refused) == before+3
			})
			if n := proxy.CounterValue(t, reg, "vmesh_inbound_plaintext_connections_total", passed); n != 0 {
				t.Errorf("%v plaintext connections passed; want none", n)
			}
			if err := echoOnce(viaMTLS, "mesh again"); err != nil {
				t.Errorf("mesh mTLS after the refusals: %v", err)
			}
		})
	}
}
