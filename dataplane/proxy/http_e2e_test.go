package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/mesh"
	"github.com/vmesh/vmesh/raft"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// meshFixture is the two hosts of TestMeshTCP with their proxies, driven
// by the real xDS server: node-a (127.0.0.2) runs "client", whose
// explicit upstreams are the proxy's outbound side; node-b (127.0.0.3)
// runs the apps behind its mesh port.
type meshFixture struct {
	t        testing.TB
	r        *raft.Server
	ca       *raft.CA
	meshPort int
	outPort  int
	proxies  []*proxy.Proxy
	// upstreams are client's explicit upstreams, by destination.
	upstreams map[string]int
}

func newMeshFixture(t testing.TB) *meshFixture {
	t.Helper()
	return newMeshFixtureWith(t, nil)
}

// newMeshFixtureWith is newMeshFixture with node-a's VIPs (its
// transparent outbound listener's filter chains).
func newMeshFixtureWith(t testing.TB, vips map[string]xds.VIP) *meshFixture {
	t.Helper()
	return newMeshFixtureTraced(t, vips, nil)
}

// newMeshFixtureTraced is newMeshFixtureWith with each node's tracer
// provider (tp nil, or returning nil: no tracing).
func newMeshFixtureTraced(t testing.TB, vips map[string]xds.VIP, tp func(node string) trace.TracerProvider) *meshFixture {
	t.Helper()
	r, store, ca := catalog(t)
	fx := &meshFixture{t: t, r: r, ca: ca, meshPort: testkit.FreePort(t, "127.0.0.2", "127.0.0.3"), upstreams: map[string]int{}}
	fx.outPort = testkit.FreePort(t, "127.0.0.2", "127.0.0.3")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, n := range []struct{ node, ip string }{{"node-a", "127.0.0.2"}, {"node-b", "127.0.0.3"}} {
		leaves := raft.NewLeafIssuer(store, n.node, raft.CALeafSigner(store, n.node, raft.StaticCA(ca)), 0, testkit.Discard())
		go leaves.Run(ctx)
		opts := xds.Options{OutboundAddr: n.ip, OutboundPort: fx.outPort, MeshPort: fx.meshPort, IntentionsDefaultAllow: true}
		if n.node == "node-a" {
			opts.VIPs = vips
		}
		addr := startXDS(t, store, opts, mesh.NewLeafSecrets(leaves, n.node))
		// With metrics, as the agent runs its proxy.
		cfg := proxy.Config{XDSAddr: addr, Node: n.node, DrainTimeout: time.Second, MinBackoff: 50 * time.Millisecond, Logger: testkit.Discard(),
			Metrics: proxy.NewMetrics(nil)}
		if tp != nil {
			cfg.TracerProvider = tp(n.node)
		}
		fx.proxies = append(fx.proxies, startProxy(t, cfg))
	}
	return fx
}

// service registers an instance of name on node-b (or, external, reached
// at its own address) with protocol proto, served at port.
func (fx *meshFixture) service(name, id, proto string, port int, external bool) {
	fx.t.Helper()
	meta := map[string]string{"protocol": proto}
	if external {
		meta[xds.MetaExternalSource] = "test"
	}
	fx.register("node-b", discovery.ServiceRegistration{ID: id, Name: name, Address: "127.0.0.1", Port: port, Meta: meta})
}

// client (re)registers node-a's client service with an upstream to each
// destination, and returns their addresses.
func (fx *meshFixture) client(dests ...string) {
	fx.t.Helper()
	var ups []discovery.ConnectUpstream
	for _, d := range dests {
		if fx.upstreams[d] == 0 {
			fx.upstreams[d] = testkit.FreePort(fx.t, "127.0.0.2")
		}
	}
	for d, port := range fx.upstreams {
		ups = append(ups, discovery.ConnectUpstream{DestinationName: d, LocalBindAddress: "127.0.0.2", LocalBindPort: port})
	}
	fx.register("node-a", discovery.ServiceRegistration{ID: "client-1", Name: "client", Address: "127.0.0.1", Port: 1,
		Connect: &discovery.ServiceConnect{SidecarService: &discovery.ServiceRegistration{Proxy: &discovery.ConnectProxyConfig{Upstreams: ups}}}})
}

func (fx *meshFixture) register(node string, reg discovery.ServiceRegistration) {
	fx.t.Helper()
	req, err := reg.Build(node, "api")
	if err != nil {
		fx.t.Fatal(err)
	}
	apply(fx.t, fx.r, *req)
}

// entry applies a config entry given as JSON.
func (fx *meshFixture) entry(body string) {
	fx.t.Helper()
	e, err := discovery.DecodeConfigEntry([]byte(body))
	if err != nil {
		fx.t.Fatalf("decoding %s: %v", body, err)
	}
	apply(fx.t, fx.r, discovery.ConfigEntryRequest{Op: discovery.ConfigEntryUpsert, Entry: *e})
}

// url is the address of client's upstream to dest, with path.
func (fx *meshFixture) url(dest, path string) string {
	return "http://" + fx.addr(dest) + path
}

func (fx *meshFixture) addr(dest string) string {
	return net.JoinHostPort("127.0.0.2", strconv.Itoa(fx.upstreams[dest]))
}

// waitHTTP polls url until a GET answers want.
func (fx *meshFixture) waitHTTP(url string, want int) {
	fx.t.Helper()
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
		}
		if time.Now().After(deadline) {
			fx.t.Fatalf("GET %s: no %d within 10 s (last: %v %v)\nA: %v\nB: %v", url, want, resp, err, fx.proxies[0].Status(), fx.proxies[1].Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// seen is what the HTTP test app saw of a request.
type seen struct {
	App, Proto, Method, Path, Host string
	Header                         http.Header
}

// httpApp is a test app: "/" answers with what it saw (status from
// ?status=), /echo echoes the body, /stream sends a line, waits for a
// release, sends another; /ws is a WebSocket echo. It sets "Server" and
// "X-Remove-Me" for the header tests.
type httpApp struct {
	name    string
	port    int
	release chan struct{}
	hits    atomic.Int64
	methods sync.Map // method -> *atomic.Int64
	delay   time.Duration
	status  atomic.Int64 // every request's status when set
}

func startHTTPApp(t testing.TB, name string, h2c bool) *httpApp {
	t.Helper()
	a := &httpApp{name: name, release: make(chan struct{}, 16)}
	mux := http.NewServeMux()
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) { io.Copy(c, c) }))
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-App", a.name)
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "one\n")
		w.(http.Flusher).Flush()
		select {
		case <-a.release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "two\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		n, _ := a.methods.LoadOrStore(r.Method, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		if a.delay > 0 {
			select {
			case <-time.After(a.delay):
			case <-r.Context().Done():
				return
			}
		}
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Server", "test-app")
		w.Header().Set("X-Remove-Me", "yes")
		w.Header().Set("X-App", a.name)
		code := int(a.status.Load())
		if s := r.URL.Query().Get("status"); s != "" {
			code, _ = strconv.Atoi(s)
		}
		if code != 0 {
			w.WriteHeader(code)
		}
		json.NewEncoder(w).Encode(seen{App: a.name, Proto: r.Proto, Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Header: r.Header})
	})
	srv := &http.Server{Handler: mux}
	if h2c {
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	a.port = ln.Addr().(*net.TCPAddr).Port
	return a
}

func (a *httpApp) count(method string) int64 {
	n, ok := a.methods.Load(method)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// get does one request and decodes what the app saw.
func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, seen, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the body: %v", req.Method, req.URL, err)
	}
	var s seen
	json.Unmarshal(body, &s)
	return resp, s, string(body)
}

func newReq(t *testing.T, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// h2cClient speaks HTTP/2 with prior knowledge over plaintext.
func h2cClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: h2cTransport()}
}

func h2cTransport() *http.Transport {
	t := &http.Transport{Protocols: new(http.Protocols)}
	t.Protocols.SetUnencryptedHTTP2(true)
	return t
}

// grpcApp is a gRPC test service: it answers with its name, a header and
// a trailer, the status the request asks for, and streams.
type grpcApp struct {
	testgrpc.UnimplementedTestServiceServer
	name string
}

func (g *grpcApp) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	grpc.SetHeader(ctx, metadata.Pairs("x-app-header", g.name))
	grpc.SetTrailer(ctx, metadata.Pairs("x-app-trailer", "t-"+g.name))
	if st := req.GetResponseStatus(); st.GetCode() != 0 {
		return nil, status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return &testgrpc.SimpleResponse{ServerId: g.name, Payload: req.GetPayload()}, nil
}

func (g *grpcApp) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, s testgrpc.TestService_StreamingOutputCallServer) error {
	for i := range req.GetResponseParameters() {
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: []byte(strconv.Itoa(i))}}); err != nil {
			return err
		}
		time.Sleep(time.Millisecond)
	}
	s.SetTrailer(metadata.Pairs("x-app-trailer", "streamed"))
	return nil
}

func (g *grpcApp) FullDuplexCall(s testgrpc.TestService_FullDuplexCallServer) error {
	for {
		req, err := s.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := s.Send(&testgrpc.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

func startGRPCApp(t *testing.T, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, &grpcApp{name: name})
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().(*net.TCPAddr).Port
}

func grpcClient(t *testing.T, addr string) testgrpc.TestServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testgrpc.NewTestServiceClient(conn)
}

// TestMeshHTTP: HTTP/1.1, HTTP/2, gRPC and WebSocket from a client through
// node-a's explicit upstream, mTLS to node-b's mesh port and node-b's
// proxy to the app: headers, bodies, status codes, streaming, trailers,
// and the peer's identity in x-forwarded-client-cert.
func TestMeshHTTP(t *testing.T) {
	fx := newMeshFixture(t)
	web := startHTTPApp(t, "web", false)
	h2app := startHTTPApp(t, "h2app", true)
	fx.service("web", "web-1", "http", web.port, false)
	fx.service("h2app", "h2app-1", "http2", h2app.port, false)
	fx.service("greeter", "greeter-1", "grpc", startGRPCApp(t, "greeter"), false)
	fx.client("web", "h2app", "greeter")
	fx.waitHTTP(fx.url("web", "/"), 200)
	fx.waitHTTP(fx.url("h2app", "/"), 200)

	h1 := &http.Client{Timeout: 5 * time.Second}
	t.Run("http1", func(t *testing.T) {
		req := newReq(t, "GET", fx.url("web", "/hello?x=1"), nil)
		req.Header.Set("X-Forwarded-Client-Cert", "By=spiffe://forged")
		// The same name with underscores, which CGI-style backends (WSGI,
		// PHP) read as the same variable: dropped too.
		req.Header["X_Forwarded_Client_Cert"] = []string{"By=spiffe://forged;URI=spiffe://vmesh.local/svc/admin"}
		req.Header.Set("X-Custom", "kept")
		resp, s, _ := do(t, h1, req)
		if resp.StatusCode != 200 || s.App != "web" || s.Path != "/hello?x=1" || s.Method != "GET" || s.Header.Get("X-Custom") != "kept" {
			t.Fatalf("GET through the mesh = %d %+v", resp.StatusCode, s)
		}
		// node-b's inbound replaced the forged header with the peer it
		// verified: client's certificate on its explicit upstream.
		xfcc := s.Header.Get("X-Forwarded-Client-Cert")
		if !strings.HasPrefix(xfcc, "By=spiffe://vmesh.local/svc/web;Hash=") || !strings.HasSuffix(xfcc, ";URI=spiffe://vmesh.local/svc/client") {
			t.Errorf("x-forwarded-client-cert at the app = %q", xfcc)
		}
		for k := range s.Header {
			if k != "X-Forwarded-Client-Cert" && strings.EqualFold(strings.ReplaceAll(k, "_", "-"), "X-Forwarded-Client-Cert") {
				t.Errorf("the app got %s: %q, an alias of the header the proxy sets", k, s.Header[k])
			}
		}
		if got := s.Header.Get("X-Forwarded-Proto"); got != "http" {
			t.Errorf("x-forwarded-proto at the app = %q, want http (the client's side)", got)
		}
		if resp.Header.Get("X-App") != "web" {
			t.Errorf("response headers not passed on: %v", resp.Header)
		}
		resp, _, _ = do(t, h1, newReq(t, "GET", fx.url("web", "/?status=418"), nil))
		if resp.StatusCode != 418 {
			t.Errorf("status 418 came back as %d", resp.StatusCode)
		}
		// A 1 MiB body both ways.
		payload := make([]byte, 1<<20)
		rand.Read(payload)
		resp, _, body := do(t, h1, newReq(t, "POST", fx.url("web", "/echo"), bytes.NewReader(payload)))
		if resp.StatusCode != 200 || body != string(payload) {
			t.Errorf("POST 1 MiB echo: %d, %d bytes back", resp.StatusCode, len(body))
		}
	})

	t.Run("streaming", func(t *testing.T) {
		// The first line arrives while the app still holds the second:
		// nothing on the way buffers the response.
		for _, c := range []*http.Client{h1, h2cClient()} {
			resp, err := c.Get(fx.url("web", "/stream"))
			if err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(resp.Body)
			line, err := br.ReadString('\n')
			if err != nil || line != "one\n" {
				t.Fatalf("first streamed line = %q, %v", line, err)
			}
			web.release <- struct{}{}
			line, err = br.ReadString('\n')
			resp.Body.Close()
			if err != nil || line != "two\n" {
				t.Fatalf("second streamed line = %q, %v", line, err)
			}
		}
	})

	t.Run("http2", func(t *testing.T) {
		c := h2cClient()
		// h2c to an HTTP/1.1 service: the app sees HTTP/1.1.
		resp, s, _ := do(t, c, newReq(t, "GET", fx.url("web", "/h2"), nil))
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 || s.Proto != "HTTP/1.1" || s.App != "web" {
			t.Fatalf("h2c to web: %d %s, app saw %+v", resp.StatusCode, resp.Proto, s)
		}
		// An http2 service: HTTP/2 all the way (h2 over the mTLS hop, h2c
		// to the app).
		for _, cl := range []*http.Client{c, h1} {
			resp, s, _ = do(t, cl, newReq(t, "GET", fx.url("h2app", "/x"), nil))
			if resp.StatusCode != 200 || s.Proto != "HTTP/2.0" || s.App != "h2app" {
				t.Fatalf("%s to h2app: %d, app saw %+v", resp.Proto, resp.StatusCode, s)
			}
		}
		payload := bytes.Repeat([]byte("0123456789"), 50000)
		resp, _, body := do(t, c, newReq(t, "POST", fx.url("h2app", "/echo"), bytes.NewReader(payload)))
		if resp.StatusCode != 200 || body != string(payload) {
			t.Errorf("h2 POST echo: %d, %d bytes back", resp.StatusCode, len(body))
		}
	})

	t.Run("grpc", func(t *testing.T) {
		gc := grpcClient(t, fx.addr("greeter"))
		var hdr, trl metadata.MD
		var resp *testgrpc.SimpleResponse
		deadline := time.Now().Add(10 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			var err error
			resp, err = gc.UnaryCall(ctx, &testgrpc.SimpleRequest{Payload: &testgrpc.Payload{Body: []byte("ping")}}, grpc.Header(&hdr), grpc.Trailer(&trl))
			cancel()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no gRPC call through the mesh: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if resp.GetServerId() != "greeter" || string(resp.GetPayload().GetBody()) != "ping" {
			t.Errorf("unary = %v", resp)
		}
		if got := hdr.Get("x-app-header"); len(got) != 1 || got[0] != "greeter" {
			t.Errorf("header metadata = %v", hdr)
		}
		if got := trl.Get("x-app-trailer"); len(got) != 1 || got[0] != "t-greeter" {
			t.Errorf("trailer metadata = %v", trl)
		}
		// A failing call: a trailers-only response, passed on with its
		// status, message and metadata.
		trl = nil
		_, err := gc.UnaryCall(context.Background(), &testgrpc.SimpleRequest{ResponseStatus: &testgrpc.EchoStatus{Code: int32(codes.NotFound), Message: "no such greeting"}}, grpc.Trailer(&trl))
		if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != "no such greeting" {
			t.Errorf("failing unary = %v; want NotFound: no such greeting", err)
		}
		if got := trl.Get("x-app-trailer"); len(got) != 1 || got[0] != "t-greeter" {
			t.Errorf("trailer metadata of a failed call = %v", trl)
		}
		// Server streaming.
		st, err := gc.StreamingOutputCall(context.Background(), &testgrpc.StreamingOutputCallRequest{ResponseParameters: make([]*testgrpc.ResponseParameters, 5)})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 5 {
			m, err := st.Recv()
			if err != nil || string(m.GetPayload().GetBody()) != strconv.Itoa(i) {
				t.Fatalf("stream message %d = %v, %v", i, m, err)
			}
		}
		if _, err := st.Recv(); err != io.EOF {
			t.Errorf("stream end = %v, want EOF", err)
		}
		if got := st.Trailer().Get("x-app-trailer"); len(got) != 1 || got[0] != "streamed" {
			t.Errorf("stream trailer = %v", st.Trailer())
		}
		// Bidirectional: each message answered before the next is sent.
		bidi, err := gc.FullDuplexCall(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			msg := []byte("m" + strconv.Itoa(i))
			if err := bidi.Send(&testgrpc.StreamingOutputCallRequest{Payload: &testgrpc.Payload{Body: msg}}); err != nil {
				t.Fatal(err)
			}
			m, err := bidi.Recv()
			if err != nil || !bytes.Equal(m.GetPayload().GetBody(), msg) {
				t.Fatalf("bidi round %d = %v, %v", i, m, err)
			}
		}
		bidi.CloseSend()
		if _, err := bidi.Recv(); err != io.EOF {
			t.Errorf("bidi end = %v, want EOF", err)
		}
	})

	t.Run("websocket", func(t *testing.T) {
		cfg, err := websocket.NewConfig("ws://"+fx.addr("web")+"/ws", "http://localhost/")
		if err != nil {
			t.Fatal(err)
		}
		ws, err := websocket.DialConfig(cfg)
		if err != nil {
			t.Fatalf("WebSocket through the mesh: %v", err)
		}
		defer ws.Close()
		for _, msg := range []string{"hello", "over", "websocket"} {
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatal(err)
			}
			var got string
			ws.SetDeadline(time.Now().Add(2 * time.Second))
			if err := websocket.Message.Receive(ws, &got); err != nil || got != msg {
				t.Fatalf("WebSocket echo = %q, %v; want %q", got, err, msg)
			}
		}
		// An http2 service's HCM allows no upgrade: 403.
		req := newReq(t, "GET", fx.url("h2app", "/ws"), nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		if resp, _, _ := do(t, h1, req); resp.StatusCode != http.StatusForbidden {
			t.Errorf("an upgrade the connection manager does not allow = %d, want 403", resp.StatusCode)
		}
	})

	for i, p := range fx.proxies {
		for typ, s := range p.Status() {
			if s.Nacks != 0 {
				t.Errorf("proxy %d NACKed %s: %s", i, typ, s.LastNack)
			}
		}
	}
}

// countingDialer counts the TCP connections a client opens.
type countingDialer struct{ n atomic.Int64 }

func (d *countingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	d.n.Add(1)
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

// TestMeshHTTPIntentions: HTTP RBAC on node-b's inbound decides every
// request on the current intentions: a deny written while a keep-alive
// connection (and a gRPC connection) is open answers its next requests
// with 403 "RBAC: access denied" (PERMISSION_DENIED for gRPC) within 1 s,
// and deleting it lets them through again, on the same connections.
func TestMeshHTTPIntentions(t *testing.T) {
	fx := newMeshFixture(t)
	web := startHTTPApp(t, "web", false)
	fx.service("web", "web-1", "http", web.port, false)
	fx.service("greeter", "greeter-1", "grpc", startGRPCApp(t, "greeter"), false)
	fx.client("web", "greeter")
	fx.waitHTTP(fx.url("web", "/"), 200)

	dialer := &countingDialer{}
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: dialer.DialContext}}
	get := func() (int, string) {
		resp, err := c.Get(fx.url("web", "/"))
		if err != nil {
			t.Fatalf("GET: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	gc := grpcClient(t, fx.addr("greeter"))
	unary := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := gc.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for unary() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("no gRPC call got through: %v", unary())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := get(); code != 200 {
		t.Fatalf("before any intention: %d", code)
	}

	for _, dest := range []string{"web", "greeter"} {
		apply(t, fx.r, discovery.IntentionRequest{Op: discovery.IntentionUpsert, Intention: discovery.Intention{
			ID: "deny-" + dest, SourceName: "client", DestinationName: dest, Action: discovery.IntentionActionDeny}})
	}
	start := time.Now()
	for {
		code, body := get()
		if code == http.StatusForbidden {
			if body != "RBAC: access denied" {
				t.Errorf("denied body = %q", body)
			}
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("the deny did not reach the open connection within 1 s (still %d)", code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("HTTP deny enforced %s after the write", time.Since(start).Round(time.Millisecond))
	for {
		err := unary()
		if status.Code(err) == codes.PermissionDenied {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("the deny did not reach the gRPC connection within 1 s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	hits := web.hits.Load()
	for range 3 {
		if code, _ := get(); code != http.StatusForbidden {
			t.Fatalf("a request got %d while client -> web is denied", code)
		}
	}
	if web.hits.Load() != hits {
		t.Error("a denied request reached the app")
	}

	for _, dest := range []string{"web", "greeter"} {
		apply(t, fx.r, discovery.IntentionRequest{Op: discovery.IntentionDelete, Intention: discovery.Intention{SourceName: "client", DestinationName: dest}})
	}
	start = time.Now()
	for {
		if code, _ := get(); code == 200 && unary() == nil {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatal("deleting the deny did not restore requests within 1 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := dialer.n.Load(); n != 1 {
		t.Errorf("the client opened %d connections; the test wants one keep-alive connection", n)
	}
}

// TestMeshRoutes: a service-router, a splitter and header changes, as the
// xDS server renders them, choose the destination and rewrite the request
// and the response.
func TestMeshRoutes(t *testing.T) {
	fx := newMeshFixture(t)
	apps := map[string]*httpApp{}
	for _, name := range []string{"web", "web-v2", "admin", "split-a", "split-b"} {
		apps[name] = startHTTPApp(t, name, false)
		fx.service(name, name+"-1", "http", apps[name].port, false)
	}
	fx.service("split", "split-1", "http", apps["split-a"].port, false)
	fx.entry(`{"Kind":"service-router","Name":"web","Routes":[
		{"Match":{"HTTP":{"Header":[{"Name":"x-version","Exact":"v2"}]}},"Destination":{"Service":"web-v2"}},
		{"Match":{"HTTP":{"Methods":["DELETE","PATCH"]}},"Destination":{"Service":"web-v2"}},
		{"Match":{"HTTP":{"PathPrefix":"/admin/"}},"Destination":{"Service":"admin","PrefixRewrite":"/",
			"RequestHeaders":{"Add":{"x-added":"a"},"Set":{"x-set":"s"},"Remove":["x-secret"]},
			"ResponseHeaders":{"Add":{"x-route":"admin"},"Remove":["x-remove-me"]}}},
		{"Match":{"HTTP":{"PathRegex":"/v[0-9]+/.*"}},"Destination":{"Service":"web-v2"}}
	]}`)
	fx.entry(`{"Kind":"service-splitter","Name":"split","Splits":[
		{"Weight":75,"Service":"split-a","ResponseHeaders":{"Set":{"x-split":"a"}}},
		{"Weight":25,"Service":"split-b","ResponseHeaders":{"Set":{"x-split":"b"}}}]}`)
	fx.client("web", "split")
	fx.waitHTTP(fx.url("web", "/"), 200)
	fx.waitHTTP(fx.url("split", "/"), 200)
	c := &http.Client{Timeout: 5 * time.Second}

	// The router may arrive after the listener: wait for its first route.
	deadline := time.Now().Add(5 * time.Second)
	for {
		req := newReq(t, "GET", fx.url("web", "/"), nil)
		req.Header.Set("x-version", "v2")
		if _, s, _ := do(t, c, req); s.App == "web-v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the service-router never applied")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cases := []struct {
		name, method, path string
		header             map[string]string
		app, appPath       string
	}{
		{"default", "GET", "/x", nil, "web", "/x"},
		{"header", "GET", "/x", map[string]string{"X-Version": "v2"}, "web-v2", "/x"},
		{"other header value", "GET", "/x", map[string]string{"X-Version": "v3"}, "web", "/x"},
		{"method", "DELETE", "/x", nil, "web-v2", "/x"},
		{"prefix rewrite", "GET", "/admin/users?id=7", nil, "admin", "/users?id=7"},
		{"regex", "GET", "/v12/items", nil, "web-v2", "/v12/items"},
		{"regex is a full match", "GET", "/xv12/items", nil, "web", "/xv12/items"},
	}
	for _, tc := range cases {
		req := newReq(t, tc.method, fx.url("web", tc.path), nil)
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		resp, s, _ := do(t, c, req)
		if resp.StatusCode != 200 || s.App != tc.app || s.Path != tc.appPath {
			t.Errorf("%s: %s %s reached %q at %q (%d); want %q at %q", tc.name, tc.method, tc.path, s.App, s.Path, resp.StatusCode, tc.app, tc.appPath)
		}
	}
	// Header changes on the admin route.
	req := newReq(t, "GET", fx.url("web", "/admin/"), nil)
	req.Header.Set("X-Secret", "hidden")
	req.Header.Set("X-Set", "client")
	req.Header.Set("X-Added", "client")
	resp, s, _ := do(t, c, req)
	if got := s.Header.Values("X-Added"); len(got) != 2 || got[0] != "client" || got[1] != "a" {
		t.Errorf("x-added (Add appends) = %q", got)
	}
	if got := s.Header.Values("X-Set"); len(got) != 1 || got[0] != "s" {
		t.Errorf("x-set (Set replaces) = %q", got)
	}
	if s.Header.Get("X-Secret") != "" {
		t.Error("x-secret was not removed")
	}
	if resp.Header.Get("X-Route") != "admin" || resp.Header.Get("X-Remove-Me") != "" || resp.Header.Get("X-App") != "admin" {
		t.Errorf("response headers = %v; want x-route added, x-remove-me removed", resp.Header)
	}

	// The splitter: 75/25, with the split's own response header.
	counts := map[string]int{}
	for range 200 {
		resp, s, _ := do(t, c, newReq(t, "GET", fx.url("split", "/"), nil))
		if want := strings.TrimPrefix(s.App, "split-"); resp.Header.Get("X-Split") != want {
			t.Fatalf("x-split = %q from %s", resp.Header.Get("X-Split"), s.App)
		}
		counts[s.App]++
	}
	if a := counts["split-a"]; a < 120 || a > 180 || counts["split-a"]+counts["split-b"] != 200 {
		t.Errorf("a 75/25 split over 200 requests: %v", counts)
	}
}

// TestMeshRetries: retry policies and timeouts of the service-router, on
// services whose instances are external (the outbound proxy reaches each
// at its own address, so the cluster has two endpoints): a POST to an
// endpoint that fails is not retried, GETs are (the failing endpoint is
// hidden), connect failures are retried for any method, a slow endpoint
// hits the route timeout (504), and a dead one gives 503.
func TestMeshRetries(t *testing.T) {
	fx := newMeshFixture(t)
	good, bad, slow := startHTTPApp(t, "good", false), startHTTPApp(t, "bad", false), startHTTPApp(t, "slow", false)
	slow.delay = 3 * time.Second
	deadPort := testkit.FreePort(t, "127.0.0.1")
	fx.service("flaky", "flaky-good", "http", good.port, true)
	fx.service("flaky", "flaky-bad", "http", bad.port, true)
	fx.service("half", "half-good", "http", good.port, true)
	fx.service("half", "half-dead", "http", deadPort, true)
	fx.service("slow", "slow-1", "http", slow.port, true)
	fx.service("dead", "dead-1", "http", deadPort, true)
	fx.entry(`{"Kind":"service-router","Name":"flaky","Routes":[{"Match":{"HTTP":{"PathPrefix":"/"}},"Destination":{"NumRetries":3,"ResponseHeaders":{"Set":{"x-route":"retries"}}}}]}`)
	fx.entry(`{"Kind":"service-router","Name":"half","Routes":[{"Match":{"HTTP":{"PathPrefix":"/"}},"Destination":{"NumRetries":2,"RetryOnConnectFailure":true}}]}`)
	fx.entry(`{"Kind":"service-router","Name":"slow","Routes":[{"Match":{"HTTP":{"PathPrefix":"/"}},"Destination":{"RequestTimeout":"200ms"}}]}`)
	fx.client("flaky", "half", "slow", "dead")
	c := &http.Client{Timeout: 5 * time.Second}
	// Wait for the route (its response header), with both endpoints
	// healthy; then one starts failing every request. (Outlier detection
	// ejects it after 5 consecutive 5xx: the test stays below that.)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get(fx.url("flaky", "/"))
		if err == nil {
			resp.Body.Close()
			if resp.Header.Get("X-Route") == "retries" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the retry route never arrived: %v %v", resp, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	fx.waitHTTP(fx.url("half", "/"), 200)
	bad.status.Store(http.StatusInternalServerError)

	// GETs: every one succeeds, though the bad endpoint gets some of them
	// first.
	getsBad := bad.count("GET")
	for range 4 {
		if resp, s, _ := do(t, c, newReq(t, "GET", fx.url("flaky", "/"), nil)); resp.StatusCode != 200 || s.App != "good" {
			t.Fatalf("a GET with retries = %d from %q", resp.StatusCode, s.App)
		}
	}
	if bad.count("GET") == getsBad {
		t.Error("the bad endpoint got no GET: the retries hid nothing")
	}
	// POSTs: round robin sends some of them to the bad endpoint, which
	// answers 500, and that is what the client gets: not retried.
	postsBad := bad.count("POST")
	fails := 0
	for range 2 {
		resp, _, _ := do(t, c, newReq(t, "POST", fx.url("flaky", "/"), strings.NewReader("body")))
		if resp.StatusCode == 500 {
			fails++
		}
	}
	if got := bad.count("POST") - postsBad; fails == 0 || int64(fails) != got {
		t.Errorf("2 POSTs: %d answered 500, the bad endpoint saw %d; want the same, and some", fails, got)
	}

	// Connect failures are retried, for POSTs too.
	for i := range 6 {
		if resp, _, _ := do(t, c, newReq(t, "POST", fx.url("half", "/"), strings.NewReader("body"))); resp.StatusCode != 200 {
			t.Fatalf("POST %d to half (one endpoint refuses connections) = %d", i, resp.StatusCode)
		}
	}

	// The route timeout: 504 well before the app answers.
	start := time.Now()
	resp, _, body := do(t, c, newReq(t, "GET", fx.url("slow", "/"), nil))
	if resp.StatusCode != http.StatusGatewayTimeout || body != "upstream request timeout" || time.Since(start) > 2*time.Second {
		t.Errorf("a slow endpoint = %d %q after %s; want 504 after 200 ms", resp.StatusCode, body, time.Since(start))
	}
	// No endpoint accepts connections: 503.
	resp, _, body = do(t, c, newReq(t, "GET", fx.url("dead", "/"), nil))
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(body, "upstream connect error") {
		t.Errorf("a dead endpoint = %d %q; want 503 upstream connect error", resp.StatusCode, body)
	}
}
