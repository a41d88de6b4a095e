package e2e

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/raft"
	"golang.org/x/net/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The apps and helpers of the end-to-end proxy tests (proxy_*_test.go):
// real apps on the agents' loopback addresses, reached through the agents'
// in-process proxies the way a service on one VM calls one on another.

// mustAPI sends a request to the node's HTTP API and fails the test
// unless it answers 200.
func (n *node) mustAPI(method, path, body string) string {
	n.t.Helper()
	code, out := testkit.HTTPDo(n.t, method, "http://"+n.httpAddr()+path, body)
	if code != http.StatusOK {
		n.t.Fatalf("%s %s on %s: %d %s", method, path, n.name, code, out)
	}
	return out
}

// registerJSON registers a service on the node from its Consul API body.
func (n *node) registerJSON(body string) {
	n.t.Helper()
	n.mustAPI(http.MethodPut, "/v1/agent/service/register", body)
}

// intention writes source -> destination with action (allow or deny).
func (n *node) intention(source, destination, action string) {
	n.t.Helper()
	n.mustAPI(http.MethodPut, "/v1/connect/intentions/exact?source="+url.QueryEscape(source)+"&destination="+url.QueryEscape(destination),
		fmt.Sprintf(`{"Action":%q}`, action))
}

func (n *node) deleteIntention(source, destination string) {
	n.t.Helper()
	n.mustAPI(http.MethodDelete, "/v1/connect/intentions/exact?source="+url.QueryEscape(source)+"&destination="+url.QueryEscape(destination), "")
}

// xdsSocket is where the node's agent serves xDS, as its banner says.
func (n *node) xdsSocket() string {
	n.t.Helper()
	var m []string
	testkit.WaitFor(n.t, 10*time.Second, n.name+"'s xDS socket in its banner", func() bool {
		m = bannerXDS.FindStringSubmatch(n.p.stdout.String())
		return m != nil
	})
	return m[1]
}

var bannerXDS = regexp.MustCompile(`xDS: unix://(\S+)`)

// serviceCert fetches, over the node's xDS socket as its own proxy does,
// the current certificate of a service registered on the node, with the
// CA roots. It is what that service's traffic presents on the mesh.
func (n *node) serviceCert(service string) (tls.Certificate, *x509.CertPool) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+n.xdsSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		n.t.Fatal(err)
	}
	defer conn.Close()
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		n.t.Fatal(err)
	}
	svc, roots := "vmesh/svc/"+service, "vmesh/roots"
	req := &discoverygrpc.DiscoveryRequest{Node: &core.Node{Id: n.name}, TypeUrl: resource.SecretType, ResourceNames: []string{roots, svc}}
	if err := st.Send(req); err != nil {
		n.t.Fatal(err)
	}
	secrets := map[string]*tlsv3.Secret{}
	for secrets[svc] == nil || secrets[roots] == nil {
		resp, err := st.Recv()
		if err != nil {
			n.t.Fatalf("reading %s's secrets from %s: %v", service, n.name, err)
		}
		for _, r := range resp.GetResources() {
			var sec tlsv3.Secret
			if err := r.UnmarshalTo(&sec); err != nil {
				n.t.Fatal(err)
			}
			secrets[sec.GetName()] = &sec
		}
		// ACK, as a proxy does: the server sends the next version (the
		// service's leaf, when it was not issued yet) only after that.
		req.VersionInfo, req.ResponseNonce = resp.GetVersionInfo(), resp.GetNonce()
		if err := st.Send(req); err != nil {
			n.t.Fatal(err)
		}
	}
	tc := secrets[svc].GetTlsCertificate()
	pair, err := tls.X509KeyPair(tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes())
	if err != nil {
		n.t.Fatalf("%s: %v", svc, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(secrets[roots].GetValidationContext().GetTrustedCa().GetInlineBytes()) {
		n.t.Fatal("vmesh/roots holds no CA certificate")
	}
	return pair, pool
}

// foreignMeshCert is a certificate exactly like a mesh service's (the
// cluster's trust domain, the service's SPIFFE ID, client and server
// auth, issued by the same code) but from a CA of its own: another
// cluster's.
func foreignMeshCert(t *testing.T, trustDomain, service string) tls.Certificate {
	t.Helper()
	ca, err := raft.NewCA(trustDomain)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.SignService(&key.PublicKey, service, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Cert.Raw}, PrivateKey: key}
}

// httpApp is an HTTP service instance: HTTP/1.1 and h2c (prior knowledge)
// on one port, a WebSocket echo on /ws. Every answer names the instance
// (X-App) and the protocol the request arrived in (X-Proto), so a test
// sees which instance a proxy chose and how it spoke to it.
type httpApp struct {
	name string
	ln   net.Listener
	srv  *http.Server
	// hits counts the requests this instance answered; fail makes it
	// answer every plain request with 500.
	hits atomic.Int64
	fail atomic.Bool
}

func startHTTPApp(t *testing.T, ip, name string) *httpApp {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	a := &httpApp{name: name, ln: ln}
	mux := http.NewServeMux()
	mux.Handle("/ws", websocket.Handler(func(ws *websocket.Conn) {
		// Echo each message with the instance's name in front.
		for {
			var msg string
			if err := websocket.Message.Receive(ws, &msg); err != nil {
				return
			}
			if err := websocket.Message.Send(ws, a.name+": "+msg); err != nil {
				return
			}
		}
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		a.hits.Add(1)
		w.Header().Set("X-App", a.name)
		w.Header().Set("X-Proto", r.Proto)
		if a.fail.Load() {
			http.Error(w, a.name+" fails", http.StatusInternalServerError)
			return
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %s", a.name, r.Method, r.URL.Path, body)
	})
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	a.srv = &http.Server{Handler: mux, Protocols: &protos, ReadHeaderTimeout: 10 * time.Second}
	go a.srv.Serve(ln)
	t.Cleanup(func() { a.srv.Close() })
	return a
}

func (a *httpApp) port() int { return a.ln.Addr().(*net.TCPAddr).Port }

// kill stops the instance as a crash would: the listener and every open
// connection close at once, in-flight requests included.
func (a *httpApp) kill() { a.srv.Close() }

// grpcApp serves the standard health service: Check is a unary call,
// Watch a server stream that sends the status again each time it changes.
type grpcApp struct {
	ln     net.Listener
	health *health.Server
}

func startGRPCApp(t *testing.T, ip string) *grpcApp {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	a := &grpcApp{ln: ln, health: health.NewServer()}
	healthpb.RegisterHealthServer(srv, a.health)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return a
}

func (a *grpcApp) port() int { return a.ln.Addr().(*net.TCPAddr).Port }

// tcpEcho echoes every line back, prefixed with its name.
func startTCPEcho(t *testing.T, ip, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(time.Minute))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, name+": "+line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// tcpEchoCall writes one line to addr and reads the answer, within d.
func tcpEchoCall(addr, line string, d time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, d)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

// httpCall GETs (or POSTs, with a body) url and returns status, the
// answering instance (X-App) and the body.
func httpCall(c *http.Client, method, url, body string) (code int, app, out string, err error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, "", "", err
	}
	if body == "" {
		req.Body = nil
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-App"), string(b), err
}

// h2cClient speaks HTTP/2 without TLS from the first byte (prior
// knowledge), as grpc-go does.
func h2cClient() *http.Client {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Protocols: &protos}}
}

// hostPort joins an IP and a port.
func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// isRefused reports whether err says the peer closed or reset the
// connection (rather than a timeout, which would mean it hung).
func isRefused(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}
