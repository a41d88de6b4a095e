package proxy_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
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

// rawGet sends target as written (no client library cleans it) over
// HTTP/1.1 to addr and returns the status and what the app saw.
func rawGet(t *testing.T, addr, target string) (int, seen) {
	t.Helper()
	code, s, err := tryRawGet(addr, target)
	if err != nil {
		t.Fatalf("GET %s via %s: %v", target, addr, err)
	}
	return code, s
}

func tryRawGet(addr, target string) (int, seen, error) {
	var s seen
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, s, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"); err != nil {
		return 0, s, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, s, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	json.Unmarshal(body, &s)
	return resp.StatusCode, s, err
}

// TestMeshPathNormalization: a service-router sends /admin to another
// service. Every spelling of /admin an application would read as /admin
// (an encoded unreserved character, a double slash, dot segments) routes
// exactly like /admin, and the app reads /admin; a path climbing above
// the root or holding an encoded slash gets 400 — through an explicit
// upstream listener and through the transparent outbound listener (the
// service's VIP is node-a's outbound address, so a connection to it is
// what capture would redirect), over HTTP/1.1 and HTTP/2.
func TestMeshPathNormalization(t *testing.T) {
	fx := newMeshFixtureWith(t, map[string]xds.VIP{"web": {IP: "127.0.0.2"}})
	web, admin := startHTTPApp(t, "web", false), startHTTPApp(t, "admin", false)
	fx.service("web", "web-1", "http", web.port, false)
	fx.service("admin", "admin-1", "http", admin.port, false)
	fx.entry(`{"Kind":"service-router","Name":"web","Routes":[{"Match":{"HTTP":{"PathPrefix":"/admin"}},"Destination":{"Service":"admin"}}]}`)
	fx.client("web")
	outbound := net.JoinHostPort("127.0.0.2", strconv.Itoa(fx.outPort))
	for _, addr := range []string{fx.addr("web"), outbound} {
		testkit.WaitFor(t, 10*time.Second, "the /admin route through "+addr, func() bool {
			code, s, err := tryRawGet(addr, "/admin")
			return err == nil && code == 200 && s.App == "admin"
		})
	}

	cases := []struct {
		target    string
		code      int
		app, path string
	}{
		{"/admin", 200, "admin", "/admin"},
		{"/%61dmin", 200, "admin", "/admin"},
		{"//admin", 200, "admin", "/admin"},
		{"/x/../admin", 200, "admin", "/admin"},
		{"/./admin", 200, "admin", "/admin"},
		{"/x/%2E%2e/admin/users?q=%2F..", 200, "admin", "/admin/users?q=%2F.."},
		{"/%2e%2e/admin", 400, "", ""},
		{"/x/../../admin", 400, "", ""},
		{"/admin%2Fusers", 400, "", ""},
		{"/web/%2e/page", 200, "web", "/web/page"},
		{"/admin-not/../web", 200, "web", "/web"},
	}
	for _, via := range []struct{ name, addr string }{{"upstream listener", fx.addr("web")}, {"transparent outbound listener", outbound}} {
		for _, tc := range cases {
			code, s := rawGet(t, via.addr, tc.target)
			if code != tc.code || s.App != tc.app || s.Path != tc.path {
				t.Errorf("%s: GET %s: %d from %q at %q; want %d from %q at %q", via.name, tc.target, code, s.App, s.Path, tc.code, tc.app, tc.path)
			}
		}
		// HTTP/2: the same rules on :path.
		c := h2cClient()
		for _, tc := range cases {
			if strings.HasPrefix(tc.target, "//") {
				continue // (url.URL cannot carry it as a :path)
			}
			req := newReq(t, "GET", "http://"+via.addr+"/", nil)
			req.URL = &url.URL{Scheme: "http", Host: via.addr, Opaque: tc.target}
			if i := strings.IndexByte(tc.target, '?'); i >= 0 {
				req.URL.Opaque, req.URL.RawQuery = tc.target[:i], tc.target[i+1:]
			}
			resp, s, _ := do(t, c, req)
			if resp.StatusCode != tc.code || s.App != tc.app || s.Path != tc.path || resp.ProtoMajor != 2 {
				t.Errorf("%s, HTTP/%d: GET %s: %d from %q at %q; want %d from %q at %q", via.name, resp.ProtoMajor, tc.target,
					resp.StatusCode, s.App, s.Path, tc.code, tc.app, tc.path)
			}
		}
	}
}

// TestMeshPeerIdentity: node-c claims an instance of payments, but what
// answers at its mesh port holds a valid certificate of billing (same
// CA): node-a's proxy refuses the connection — the client's connection
// is closed without data, the mismatch is counted against cluster
// payments (web's copy of it) and the log names both identities. Once the endpoint presents
// payments' own certificate, the same client gets through.
func TestMeshPeerIdentity(t *testing.T) {
	r, store, ca := catalog(t)
	apply(t, r, discovery.RegisterNodeRequest{Node: discovery.Node{ID: "id-c", Name: "node-c", Address: "127.0.0.4"}})
	meshPort := testkit.FreePort(t, "127.0.0.2", "127.0.0.4")
	upPort := testkit.FreePort(t, "127.0.0.2")
	for _, rg := range []struct {
		node string
		reg  discovery.ServiceRegistration
	}{
		{"node-c", discovery.ServiceRegistration{ID: "payments-1", Name: "payments", Address: "127.0.0.1", Port: 9}},
		{"node-a", discovery.ServiceRegistration{ID: "web-1", Name: "web", Address: "127.0.0.1", Port: 1,
			Connect: &discovery.ServiceConnect{SidecarService: &discovery.ServiceRegistration{Proxy: &discovery.ConnectProxyConfig{
				Upstreams: []discovery.ConnectUpstream{{DestinationName: "payments", LocalBindAddress: "127.0.0.2", LocalBindPort: upPort}},
			}}}}},
	} {
		req, err := rg.reg.Build(rg.node, "api")
		if err != nil {
			t.Fatal(err)
		}
		apply(t, r, *req)
	}

	// What listens at node-c's mesh port: a TLS echo server with the
	// certificate of its choice, signed by the cluster CA.
	serving := make(chan tls.Certificate, 1)
	serving <- serviceCert(t, ca, "billing")
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.4", strconv.Itoa(meshPort)))
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
			cert := <-serving
			serving <- cert
			go func() {
				tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAnyClientCert})
				defer tc.Close()
				io.Copy(tc, tc)
			}()
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leaves := raft.NewLeafIssuer(store, "node-a", raft.CALeafSigner(store, "node-a", raft.StaticCA(ca)), 0, testkit.Discard())
	go leaves.Run(ctx)
	addr := startXDS(t, store, xds.Options{OutboundAddr: "127.0.0.2", OutboundPort: testkit.FreePort(t, "127.0.0.2"), MeshPort: meshPort, IntentionsDefaultAllow: true},
		mesh.NewLeafSecrets(leaves, "node-a"))
	reg := prometheus.NewRegistry()
	var logs testkit.SyncBuffer
	startProxy(t, proxy.Config{XDSAddr: addr, Node: "node-a", DrainTimeout: time.Second, MinBackoff: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Metrics: proxy.NewMetrics(reg)})
	viaA := func() (net.Conn, error) {
		return net.DialTimeout("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(upPort)), time.Second)
	}

	// The upstream listener and its TLS come up; every connection is
	// refused for billing's certificate.
	// (The cluster is web's copy of payments, which presents web's
	// certificate: vmesh/from/web/payments.)
	mismatches := func() float64 {
		return gatherCounter(t, reg, "vmesh_upstream_peer_mismatch_total", "cluster", "vmesh/from/web/payments")
	}
	if !testkit.Eventually(10*time.Second, func() bool {
		echoOnce(viaA, "to payments")
		return mismatches() >= 1
	}) {
		t.Fatalf("no refused connection counted as a peer mismatch; the proxy's log:\n%s", logs.String())
	}
	before := mismatches()
	if err := echoOnce(viaA, "to payments, again"); err == nil {
		t.Fatal("node-a's proxy carried a connection to a peer holding billing's certificate")
	}
	if got := mismatches(); got != before+1 {
		t.Errorf("vmesh_upstream_peer_mismatch_total{cluster=vmesh/from/web/payments} went from %v to %v for one connection", before, got)
	}
	log := logs.String()
	for _, want := range []string{"upstream peer identity mismatch", "cluster=vmesh/from/web/payments",
		"spiffe://vmesh.local/svc/payments", "presented=spiffe://vmesh.local/svc/billing", "127.0.0.4:" + strconv.Itoa(meshPort)} {
		if !strings.Contains(log, want) {
			t.Errorf("the log does not name %q", want)
		}
	}

	// The endpoint presents payments' own certificate: served.
	<-serving
	serving <- serviceCert(t, ca, "payments")
	testkit.WaitFor(t, 10*time.Second, "an echo from the endpoint holding payments' certificate", func() bool {
		return echoOnce(viaA, "to payments") == nil
	})
}

// serviceCert is a leaf for service name from the cluster CA.
func serviceCert(t *testing.T, ca *raft.CA, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignService(&key.PublicKey, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// gatherCounter is the value of counter name{label=value} in reg.
func gatherCounter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}
