package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// l7Mesh is two agents running their in-process proxies: B hosts one app
// per protocol, A a calling service ("client") with an explicit upstream
// to each, and client may call anything (client -> * allow), so an exact
// deny intention overrides that and deleting it restores the calls.
type l7Mesh struct {
	a, b    *node
	web     *httpApp // http
	h2      *httpApp // http2 (h2c to the app)
	chat    *httpApp // http, WebSocket on /ws
	greeter *grpcApp // grpc
	up      map[string]string
}

func startL7Mesh(t *testing.T, prefix string) *l7Mesh {
	t.Helper()
	nodes := bootCluster(t, prefix, 2, "-proxy")
	m := &l7Mesh{a: nodes[0], b: nodes[1], up: map[string]string{}}
	a, b := m.a, m.b
	m.web = startHTTPApp(t, b.ip, "web-1")
	m.h2 = startHTTPApp(t, b.ip, "h2-1")
	m.chat = startHTTPApp(t, b.ip, "chat-1")
	m.greeter = startGRPCApp(t, b.ip)
	echo := startTCPEcho(t, b.ip, "echo-1")
	services := []struct {
		name, protocol string
		port, upstream int
	}{
		{"web", "http", m.web.port(), 21001},
		{"h2", "http2", m.h2.port(), 21002},
		{"greeter", "grpc", m.greeter.port(), 21003},
		{"chat", "http", m.chat.port(), 21004},
		{"echo", "tcp", echo, 21005},
	}
	var ups []string
	for _, s := range services {
		b.registerJSON(fmt.Sprintf(`{"ID":"%s-1","Name":%q,"Address":%q,"Port":%d,"Meta":{"protocol":%q}}`, s.name, s.name, b.ip, s.port, s.protocol))
		ups = append(ups, fmt.Sprintf(`{"DestinationName":%q,"LocalBindPort":%d}`, s.name, s.upstream))
		// No LocalBindAddress: A's proxy listens on A's client address.
		m.up[s.name] = hostPort(a.ip, s.upstream)
	}
	a.registerJSON(`{"ID":"client-1","Name":"client","Port":1,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[` + strings.Join(ups, ",") + `]}}}}`)
	a.intention("client", "*", "allow")
	return m
}

// TestProxyL7EndToEnd: through A's explicit upstream listeners and B's
// mesh port, HTTP/1.1, HTTP/2 (h2c), gRPC (unary and server streaming),
// WebSocket and raw TCP reach B's apps; B's mesh port refuses plaintext and
// a certificate from another CA. A deny intention turns calls into 403,
// PERMISSION_DENIED and a reset within 1 s; deleting it restores them.
func TestProxyL7EndToEnd(t *testing.T) {
	skipShort(t)
	t.Parallel()
	m := startL7Mesh(t, "127.41.0.")
	a, b := m.a, m.b
	keepAlive := &http.Client{Timeout: 5 * time.Second}
	h2c := h2cClient()

	// HTTP/1.1, keep-alive.
	webURL := "http://" + m.up["web"]
	testkit.WaitFor(t, 30*time.Second, "HTTP/1.1 through A's web upstream", func() bool {
		code, _, _, err := httpCall(keepAlive, http.MethodGet, webURL+"/ready", "")
		return err == nil && code == 200
	})
	code, app, body, err := httpCall(keepAlive, http.MethodPost, webURL+"/orders", "one order")
	if err != nil || code != 200 || app != "web-1" || body != "web-1 POST /orders one order" {
		t.Fatalf("HTTP/1.1 POST through the mesh: %d from %q: %q, %v", code, app, body, err)
	}

	// HTTP/2 without TLS (prior knowledge) to the same http upstream: the
	// hop between the proxies and to the app is HTTP/1.1 for an http
	// service, but the client's side is HTTP/2.
	resp, err := h2c.Get(webURL + "/h2c")
	if err != nil {
		t.Fatalf("h2c to the http upstream: %v", err)
	}
	b1, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || string(b1) != "web-1 GET /h2c " {
		t.Fatalf("h2c to the http upstream: %s %s %q", resp.Proto, resp.Status, b1)
	}

	// An http2 service is HTTP/2 all the way: h2c to A, h2 over mTLS to B,
	// h2c to the app.
	h2URL := "http://" + m.up["h2"]
	testkit.WaitFor(t, 20*time.Second, "h2c through A's h2 upstream", func() bool {
		resp, err := h2c.Get(h2URL + "/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	resp, err = h2c.Get(h2URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.Header.Get("X-Proto") != "HTTP/2.0" || string(b2) != "h2-1 GET /stream " {
		t.Fatalf("HTTP/2 through the mesh: %s %s, the app saw %q: %q", resp.Proto, resp.Status, resp.Header.Get("X-Proto"), b2)
	}

	// gRPC: a unary call and a server stream that sees status changes.
	cc, err := grpc.NewClient("passthrough:///"+m.up["greeter"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	check := func() (healthpb.HealthCheckResponse_ServingStatus, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return r.GetStatus(), err
	}
	testkit.WaitFor(t, 20*time.Second, "a gRPC call through A's greeter upstream", func() bool {
		st, err := check()
		return err == nil && st == healthpb.HealthCheckResponse_SERVING
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING, healthpb.HealthCheckResponse_SERVING} {
		if i == 1 {
			m.greeter.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
		} else if i == 2 {
			m.greeter.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
		}
		got, err := watch.Recv()
		if err != nil || got.GetStatus() != want {
			t.Fatalf("gRPC server stream, message %d: %v, %v; want %v", i, got.GetStatus(), err, want)
		}
	}
	cancel()

	// WebSocket: an upgrade, then messages both ways on one connection.
	chatAddr := m.up["chat"]
	var ws *websocket.Conn
	testkit.WaitFor(t, 20*time.Second, "a WebSocket through A's chat upstream", func() bool {
		ws, err = websocket.Dial("ws://"+chatAddr+"/ws", "", "http://"+chatAddr+"/")
		return err == nil
	})
	ws.SetDeadline(time.Now().Add(5 * time.Second))
	for _, msg := range []string{"hello", "again"} {
		if err := websocket.Message.Send(ws, msg); err != nil {
			t.Fatal(err)
		}
		var got string
		if err := websocket.Message.Receive(ws, &got); err != nil || got != "chat-1: "+msg {
			t.Fatalf("WebSocket echo of %q: %q, %v", msg, got, err)
		}
	}
	ws.Close()

	// Raw TCP.
	echoAddr := m.up["echo"]
	echo := func(d time.Duration) (string, error) { return tcpEchoCall(echoAddr, "ping", d) }
	testkit.WaitFor(t, 20*time.Second, "a TCP echo through A's echo upstream", func() bool {
		got, err := echo(2 * time.Second)
		return err == nil && got == "echo-1: ping\n"
	})

	t.Run("mesh port refuses strangers", func(t *testing.T) {
		meshPortRefusesStrangers(t, m)
	})

	// A deny intention for client -> X overrides client -> *; it must bite
	// within 1 s of the write returning, on the
	// keep-alive connections and the gRPC channel already open.
	denied := []struct {
		dest   string
		denied func() (bool, string)
		ok     func() bool
	}{
		{"web", func() (bool, string) {
			code, _, body, err := httpCall(keepAlive, http.MethodGet, webURL+"/x", "")
			return err == nil && code == http.StatusForbidden, fmt.Sprintf("%d %q %v", code, body, err)
		}, func() bool {
			code, _, _, err := httpCall(keepAlive, http.MethodGet, webURL+"/x", "")
			return err == nil && code == 200
		}},
		{"greeter", func() (bool, string) {
			_, err := check()
			return status.Code(err) == codes.PermissionDenied, fmt.Sprint(err)
		}, func() bool {
			st, err := check()
			return err == nil && st == healthpb.HealthCheckResponse_SERVING
		}},
		{"echo", func() (bool, string) {
			got, err := echo(500 * time.Millisecond)
			return isRefused(err) && got == "", fmt.Sprintf("%q %v", got, err)
		}, func() bool {
			got, err := echo(2 * time.Second)
			return err == nil && got == "echo-1: ping\n"
		}},
	}
	for _, d := range denied {
		a.intention("client", d.dest, "deny")
		start := time.Now()
		var last string
		if !testkit.Eventually(time.Second, func() bool {
			var ok bool
			ok, last = d.denied()
			return ok
		}) {
			t.Fatalf("client -> %s still not denied 1 s after the deny intention was written; last call: %s", d.dest, last)
		}
		t.Logf("client -> %s denied %s after the write", d.dest, time.Since(start).Round(time.Millisecond))
		b.deleteIntention("client", d.dest)
		testkit.WaitFor(t, 10*time.Second, "client -> "+d.dest+" allowed again once the deny is deleted", d.ok)
	}
}

// meshPortRefusesStrangers: B's mesh port answers a client holding a mesh
// certificate (client's, from A's SDS), and refuses a plaintext client and
// one whose certificate has the right shape but another CA; on a TCP
// service's filter chain and on an HTTP one.
func meshPortRefusesStrangers(t *testing.T, m *l7Mesh) {
	meshAddr := hostPort(m.b.ip, 15443)
	cert, roots := m.a.serviceCert("client")
	verify := func(cs tls.ConnectionState) error {
		// A mesh certificate names a SPIFFE ID, not a host: check the
		// chain only.
		if len(cs.PeerCertificates) == 0 {
			return fmt.Errorf("no server certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		return err
	}
	foreign := foreignMeshCert(t, "vmesh.local", "client")
	for _, target := range []struct {
		sni, alpn, request, answer string
	}{
		{"echo.mesh", "", "ping\n", "echo-1: ping"},
		{"web.mesh", "http/1.1", "GET /direct HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n", "HTTP/1.1 200"},
	} {
		call := func(c net.Conn) (string, error) {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.WriteString(c, target.request); err != nil {
				return "", err
			}
			return bufio.NewReader(c).ReadString('\n')
		}
		var protos []string
		if target.alpn != "" {
			protos = []string{target.alpn}
		}
		c, err := tls.Dial("tcp", meshAddr, &tls.Config{ServerName: target.sni, Certificates: []tls.Certificate{cert},
			NextProtos: protos, InsecureSkipVerify: true, VerifyConnection: verify})
		if err != nil {
			t.Fatalf("%s with a mesh client certificate: %v", target.sni, err)
		}
		line, err := call(c)
		c.Close()
		if err != nil || !strings.HasPrefix(line, target.answer) {
			t.Fatalf("%s with a mesh client certificate: %q, %v; want %q (the control case)", target.sni, line, err, target.answer)
		}

		plain, err := net.DialTimeout("tcp", meshAddr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		line, err = call(plain)
		plain.Close()
		if !isRefused(err) || line != "" {
			t.Errorf("plaintext to B's mesh port (%s): %q, %v; want the connection closed without an answer", target.request[:4], line, err)
		}

		c, err = tls.Dial("tcp", meshAddr, &tls.Config{ServerName: target.sni, Certificates: []tls.Certificate{foreign},
			NextProtos: protos, InsecureSkipVerify: true})
		if err == nil {
			// TLS 1.3: the client learns of a refused certificate when
			// it reads.
			line, err = call(c)
			c.Close()
		}
		if !isRefused(err) || line != "" {
			t.Errorf("%s with a certificate from another CA: %q, %v; want the handshake refused", target.sni, line, err)
		}
	}
}

// proxyTypeStatus is what A's xDS server reports about one resource type
// of a client (/v1/vmesh/xds/clients).
type proxyTypeStatus struct {
	Acked    string
	Rejected bool
	Nacks    int
	LastNack *struct{ Version, Error string }
}

// proxyStatus returns, per short type name, what node n's own proxy did
// with the xDS its agent served it.
func (n *node) proxyStatus() map[string]proxyTypeStatus {
	n.t.Helper()
	var clients []struct {
		Node  string
		Mesh  bool
		Types map[string]proxyTypeStatus
	}
	testkit.GetJSON(n.t, n.httpAddr(), "/v1/vmesh/xds/clients", &clients)
	for _, c := range clients {
		if c.Node == n.name && c.Mesh {
			return c.Types
		}
	}
	return nil
}

// TestProxyNackKeepsServing: a UDP upstream, which the proxy cannot serve,
// is NACKed by A's proxy with an error naming udp_listener_config, visible
// on /v1/vmesh/xds/clients, and the listeners A had keep serving. Like
// Envoy, the proxy applies the valid resources of a partly refused
// response, so upstreams added while the UDP one is there (to a service
// registered after the UDP service, too) serve at once; once the UDP
// upstream is gone the NACK clears.
func TestProxyNackKeepsServing(t *testing.T) {
	skipShort(t)
	t.Parallel()
	nodes := bootCluster(t, "127.42.0.", 2, "-proxy")
	a, b := nodes[0], nodes[1]
	web := startHTTPApp(t, b.ip, "web-1")
	echo := startTCPEcho(t, b.ip, "echo-1")
	b.registerJSON(fmt.Sprintf(`{"ID":"web-1","Name":"web","Address":%q,"Port":%d,"Meta":{"protocol":"http"}}`, b.ip, web.port()))
	b.registerJSON(fmt.Sprintf(`{"ID":"echo-1","Name":"echo","Address":%q,"Port":%d,"Meta":{"protocol":"tcp"}}`, b.ip, echo))
	client := func(upstreams ...string) {
		a.registerJSON(`{"ID":"client-1","Name":"client","Port":1,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[` +
			strings.Join(upstreams, ",") + `]}}}}`)
	}
	webUp := `{"DestinationName":"web","LocalBindPort":21101}`
	udpUp := `{"DestinationName":"dns","LocalBindPort":21153}`
	echoUp := `{"DestinationName":"echo","LocalBindPort":21105}`
	client(webUp)
	a.intention("client", "*", "allow")
	webURL := "http://" + hostPort(a.ip, 21101)
	echoAddr := hostPort(a.ip, 21105)
	hc := &http.Client{Timeout: 5 * time.Second}
	webOK := func() bool {
		code, app, _, err := httpCall(hc, http.MethodGet, webURL+"/x", "")
		return err == nil && code == 200 && app == "web-1"
	}
	testkit.WaitFor(t, 30*time.Second, "HTTP through A's web upstream", webOK)

	// A UDP service on B and an upstream to it on A.
	b.registerJSON(fmt.Sprintf(`{"ID":"dns-1","Name":"dns","Address":%q,"Port":5353,"Meta":{"protocol":"udp"}}`, b.ip))
	client(webUp, udpUp)
	var nack string
	testkit.WaitFor(t, 20*time.Second, "A's proxy NACKing the UDP listener", func() bool {
		l := a.proxyStatus()["listener"]
		if l.Rejected && l.LastNack != nil {
			nack = l.LastNack.Error
		}
		return strings.Contains(nack, "udp_listener_config")
	})
	if !strings.Contains(nack, "vmesh/upstream/"+hostPort(a.ip, 21153)) {
		t.Errorf("the NACK does not name the listener: %q", nack)
	}
	t.Logf("A's proxy: %s", nack)
	for i := range 20 {
		if !webOK() {
			t.Fatalf("request %d through the upstream A had before the NACK failed", i)
		}
	}

	// A TCP service registered after the UDP one, and an upstream to it
	// added while the UDP upstream stands: as Envoy does, the proxy
	// applies the valid resources of a partly refused response (and the
	// UDP service's endpoints do not hold back anyone else's), so it
	// serves at once while the UDP listener stays NACKed.
	late := startTCPEcho(t, b.ip, "late-1")
	b.registerJSON(fmt.Sprintf(`{"ID":"late-1","Name":"late","Address":%q,"Port":%d,"Meta":{"protocol":"tcp"}}`, b.ip, late))
	lateUp := `{"DestinationName":"late","LocalBindPort":21106}`
	lateAddr := hostPort(a.ip, 21106)
	client(webUp, udpUp, echoUp, lateUp)
	testkit.WaitFor(t, 20*time.Second, "the upstreams added while the UDP one is refused", func() bool {
		e, err1 := tcpEchoCall(echoAddr, "ping", time.Second)
		l, err2 := tcpEchoCall(lateAddr, "ping", time.Second)
		return err1 == nil && e == "echo-1: ping\n" && err2 == nil && l == "late-1: ping\n"
	})
	if l := a.proxyStatus()["listener"]; !l.Rejected || l.LastNack == nil || !strings.Contains(l.LastNack.Error, "udp_listener_config") {
		t.Errorf("A's proxy should still NACK the UDP listener: %+v", l)
	}
	if !webOK() {
		t.Fatal("the web upstream stopped serving")
	}

	// The UDP upstream goes: the next response is whole again.
	client(webUp, echoUp)
	testkit.WaitFor(t, 20*time.Second, "A's proxy accepting every listener once the UDP upstream is gone", func() bool {
		return !a.proxyStatus()["listener"].Rejected
	})
	if got, err := tcpEchoCall(echoAddr, "ping", time.Second); err != nil || got != "echo-1: ping\n" {
		t.Fatalf("the echo upstream = %q, %v", got, err)
	}
	if !webOK() {
		t.Fatal("the web upstream stopped serving")
	}
}
