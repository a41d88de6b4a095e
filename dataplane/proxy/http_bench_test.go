//go:build unix

package proxy_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpopts "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/lab/testkit"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/anypb"
)

// The L7 hot path, measured against its floor in the same run: the same
// keep-alive client (16 goroutines on 2 CPUs, as bench/proxy.sh's 16
// connections) straight to a backend answering 1 KB, through a minimal
// httputil.ReverseProxy, and through the proxy configured over xDS. Every
// response is checked (status and body length), nothing about speed.
// Besides ns/op and allocs/op (the whole process: client, proxy and
// backend), cpu-ns/op is the process's user+system CPU per request, so
// a path's cost over direct is its proxy's CPU per request.
//
//	go test -run '^$' -bench 'L7' -count 6 ./dataplane/proxy

const (
	benchBody        = 1024
	benchParallelism = 8 // goroutines per GOMAXPROCS
)

var benchPayload = bytes.Repeat([]byte("x"), benchBody)

// benchBackend serves benchPayload on every path, over HTTP/1.1 and h2c.
func benchBackend(tb testing.TB) string {
	tb.Helper()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(benchPayload)
	}), Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	return serveHTTP(tb, srv, nil)
}

// serveHTTP serves srv on a loopback port (over TLS when cfg is set)
// until the benchmark ends, and returns its address.
func serveHTTP(tb testing.TB, srv *http.Server, cfg *tls.Config) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// benchTransport is the client: keep-alive HTTP/1.1, or h2c with prior
// knowledge (one connection, multiplexed).
func benchTransport(h2c bool) *http.Transport {
	t := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true, Protocols: new(http.Protocols)}
	if h2c {
		t.Protocols.SetUnencryptedHTTP2(true)
	} else {
		t.Protocols.SetHTTP1(true)
	}
	return t
}

// reverseProxy is the floor: net/http/httputil.ReverseProxy with a pooled
// transport, nothing else. tlsTo, when set, dials the target over TLS.
func reverseProxy(tb testing.TB, target string, h2c bool, listenTLS, tlsTo *tls.Config) string {
	tb.Helper()
	scheme := "http"
	tr := benchTransport(h2c)
	if tlsTo != nil {
		scheme = "https"
		tr.TLSClientConfig = tlsTo
	}
	u := &url.URL{Scheme: scheme, Host: target}
	rp := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.Out.Host = pr.In.Host },
		Transport:  tr,
		BufferPool: rpBuffers{},
	}
	tb.Cleanup(tr.CloseIdleConnections)
	srv := &http.Server{Handler: rp, Protocols: new(http.Protocols)}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(h2c)
	return serveHTTP(tb, srv, listenTLS)
}

// rpBuffers gives the ReverseProxy pooled copy buffers (as the proxy
// has), so the floor does not allocate 32 KiB per request.
type rpBuffers struct{}

var rpPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (rpBuffers) Get() []byte  { return *rpPool.Get().(*[]byte) }
func (rpBuffers) Put(b []byte) { rpPool.Put(&b) }

// cpuTime is the process's user+system CPU time so far.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runClient runs GETs to url from parallel goroutines, b.N in all, and
// fails on any response that is not 200 with the whole body.
func runClient(b *testing.B, url string, h2c bool) {
	tr := benchTransport(h2c)
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	get := func() error {
		resp, err := c.Get(url)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || n != benchBody {
			return &badResponse{resp.StatusCode, n}
		}
		return nil
	}
	// Open the connections (and the proxy's upstream ones) first.
	for range 4 {
		if err := get(); err != nil {
			b.Fatalf("warming up %s: %v", url, err)
		}
	}
	var failed atomic.Int64
	var first atomic.Value
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := get(); err != nil {
				if failed.Add(1) == 1 {
					first.Store(err.Error())
				}
			}
		}
	})
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests to %s failed; first: %v", n, b.N, url, first.Load())
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

type badResponse struct {
	code int
	n    int64
}

func (e *badResponse) Error() string {
	return fmt.Sprintf("status %d, %d body bytes; want 200 and %d", e.code, e.n, benchBody)
}

// benchHop is one vmesh proxy fed by a go-control-plane snapshot:
// plaintext listener, HTTP connection manager with its routes over RDS,
// a static cluster (HTTP/2 to the backend when h2), the backend.
func benchHop(b *testing.B, backend string, h2 bool) string {
	return benchHopTraced(b, backend, h2, nil)
}

// benchHopTraced is benchHop with a tracer provider (nil: none).
func benchHopTraced(b *testing.B, backend string, h2 bool, tp trace.TracerProvider) string {
	cp := startControlPlane(b)
	c := staticCluster("backend", backend)
	if h2 {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(b, &httpopts.HttpProtocolOptions{UpstreamProtocolOptions: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpopts.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}}}}}),
		}
	}
	rc := &route.RouteConfiguration{Name: "r", VirtualHosts: []*route.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []*route.Route{prefixRoute("/", "backend")}}}}
	cp.setAll(b, "1", []types.Resource{httpListener(b, "web", "r", func(h *hcm.HttpConnectionManager) { h.StatPrefix = "outbound_web" })},
		[]types.Resource{c}, []types.Resource{rc})
	p := startProxy(b, proxy.Config{XDSAddr: cp.addr, Node: "node-x", DrainTimeout: time.Second, Logger: testkit.Discard(), Metrics: proxy.NewMetrics(nil),
		TracerProvider: tp})
	testkit.WaitFor(b, 10*time.Second, "the listener bound", func() bool { _, ok := p.ListenerAddrs()["web"]; return ok })
	return p.ListenerAddrs()["web"].String()
}

// BenchmarkL7Hop: one hop, plaintext, HTTP/1.1 and h2c end to end.
func BenchmarkL7Hop(b *testing.B) {
	backend := benchBackend(b)
	for _, proto := range []struct {
		name string
		h2c  bool
	}{{"http1", false}, {"h2c", true}} {
		paths := []struct{ name, addr string }{
			{"direct", backend},
			{"reverseproxy", reverseProxy(b, backend, proto.h2c, nil, nil)},
			{"vmesh", benchHop(b, backend, proto.h2c)},
		}
		for _, p := range paths {
			b.Run(proto.name+"/"+p.name, func(b *testing.B) { runClient(b, "http://"+p.addr+"/bench", proto.h2c) })
		}
	}
}

// BenchmarkL7Mesh: the mesh path, HTTP/1.1: client → node-a's explicit
// upstream → mTLS (SPIFFE certificates from the real xDS server's SDS)
// → node-b's mesh port (intentions) → the backend; against two
// ReverseProxies with mutual TLS between them, and direct.
func BenchmarkL7Mesh(b *testing.B) {
	backend := benchBackend(b)
	fx := newMeshFixture(b)
	port := backendPort(b, backend)
	fx.service("web", "web-1", "http", port, false)
	fx.client("web")
	fx.waitHTTP(fx.url("web", "/"), 200)

	server, client := mtlsPair(b)
	hop2 := reverseProxy(b, backend, false, server, nil)
	hop1 := reverseProxy(b, hop2, false, nil, client)

	for _, path := range []struct{ name, addr string }{
		{"direct", backend},
		{"reverseproxy-mtls", hop1},
		{"vmesh-mtls", fx.addr("web")},
	} {
		b.Run("http1/"+path.name, func(b *testing.B) { runClient(b, "http://"+path.addr+"/bench", false) })
	}
}

// mtlsPair is a CA and two ECDSA P-256 certificates (the mesh's key
// type): the server's requires and verifies the client's, the client's
// verifies the server's for "hop2.bench".
func mtlsPair(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	server = &tls.Config{Certificates: []tls.Certificate{leaf(2, "hop2.bench", x509.ExtKeyUsageServerAuth)},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, NextProtos: []string{"http/1.1"}}
	client = &tls.Config{Certificates: []tls.Certificate{leaf(3, "hop1.bench", x509.ExtKeyUsageClientAuth)},
		RootCAs: pool, ServerName: "hop2.bench"}
	return server, client
}

func backendPort(tb testing.TB, addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}
