package proxy_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/vmesh/vmesh/dataplane/proxy"
	"github.com/vmesh/vmesh/dataplane/xds"
	"github.com/vmesh/vmesh/discovery"
	"github.com/vmesh/vmesh/lab/testkit"
	"github.com/vmesh/vmesh/mesh"
	"github.com/vmesh/vmesh/raft"
)

// catalog is a single-node raft applying to a catalog, with a cluster CA
// and the two hosts of the test.
func catalog(t testing.TB) (*raft.Server, *discovery.Store, *raft.CA) {
	t.Helper()
	store := discovery.NewStore()
	srv, err := raft.Open(raft.Config{
		NodeID: "raft-1", Addr: "127.0.0.1:7400", DataDir: t.TempDir(), Bootstrap: true, Logger: testkit.Discard(),
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
	ca, err := raft.NewCA("vmesh.local")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _, err := ca.EncodeCA()
	if err != nil {
		t.Fatal(err)
	}
	// The catalog holds the certificate; the test's leaf issuers sign with
	// the CA they are handed (raft.CALeafSigner over raft.StaticCA), as a
	// server does with its unsealed key.
	apply(t, srv, discovery.SetCARequest{CA: discovery.CARoot{CertPEM: certPEM, TrustDomain: "vmesh.local", Fingerprint: raft.Fingerprint(ca.Cert)}})
	apply(t, srv, discovery.RegisterNodeRequest{Node: discovery.Node{ID: "id-a", Name: "node-a", Address: "127.0.0.2"}})
	apply(t, srv, discovery.RegisterNodeRequest{Node: discovery.Node{ID: "id-b", Name: "node-b", Address: "127.0.0.3"}})
	return srv, store, ca
}

func apply(t testing.TB, r *raft.Server, cmd discovery.Command) {
	t.Helper()
	if _, err := r.Apply(context.Background(), cmd); err != nil {
		t.Fatalf("applying %T: %v", cmd, err)
	}
}

// echoServer answers every line with itself.
func echoServer(t *testing.T) int {
	t.Helper()
	return serveTCP(t, func(c net.Conn) { io.Copy(c, c) }).Port
}

// startProxy runs a proxy until the test ends.
func startProxy(t testing.TB, cfg proxy.Config) *proxy.Proxy {
	t.Helper()
	p, err := proxy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := p.Run(ctx); err != nil {
			t.Errorf("proxy %s: %v", cfg.Node, err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return p
}

func startXDS(t testing.TB, store *discovery.Store, opts xds.Options, secrets xds.SecretSource) string {
	t.Helper()
	srv, err := xds.NewServer(xds.Config{Store: store, TCPAddr: "127.0.0.1:0", Options: opts, Secrets: secrets, Logger: testkit.Discard(), Debounce: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.Addrs()[0].String()
}

// echoOnce opens a connection to addr (through dial), writes a line and
// reads it back.
func echoOnce(dial func() (net.Conn, error), line string) error {
	c, err := dial()
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintln(c, line); err != nil {
		return err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return fmt.Errorf("echo = %q, want %q", got, line)
	}
	return nil
}

// TestMeshTCP: a client writes through node-a's explicit upstream
// listener; node-a's proxy opens mTLS (web's certificate, SNI echo.mesh)
// to node-b's mesh port; node-b's proxy checks the intentions and hands
// the connection to the echo app. A plaintext client and a client with a
// foreign CA are refused on node-b's mesh port; a deny intention closes
// new connections within 1 s, and deleting it restores them.
func TestMeshTCP(t *testing.T) {
	r, store, ca := catalog(t)
	echoPort := echoServer(t)
	meshPort := testkit.FreePort(t, "127.0.0.2", "127.0.0.3")
	outPort := testkit.FreePort(t, "127.0.0.2", "127.0.0.3")
	upPort := testkit.FreePort(t, "127.0.0.2")

	regs := []struct {
		node string
		reg  discovery.ServiceRegistration
	}{
		{"node-b", discovery.ServiceRegistration{ID: "echo-1", Name: "echo", Address: "127.0.0.1", Port: echoPort}},
		{"node-a", discovery.ServiceRegistration{ID: "web-1", Name: "web", Address: "127.0.0.1", Port: 1,
			Connect: &discovery.ServiceConnect{SidecarService: &discovery.ServiceRegistration{Proxy: &discovery.ConnectProxyConfig{
				Upstreams: []discovery.ConnectUpstream{{DestinationName: "echo", LocalBindAddress: "127.0.0.2", LocalBindPort: upPort}},
			}}}}},
	}
	for _, rg := range regs {
		req, err := rg.reg.Build(rg.node, "api")
		if err != nil {
			t.Fatal(err)
		}
		apply(t, r, *req)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var proxies []*proxy.Proxy
	for _, n := range []struct{ node, ip string }{{"node-a", "127.0.0.2"}, {"node-b", "127.0.0.3"}} {
		leaves := raft.NewLeafIssuer(store, n.node, raft.CALeafSigner(store, n.node, raft.StaticCA(ca)), 0, testkit.Discard())
		go leaves.Run(ctx)
		addr := startXDS(t, store, xds.Options{OutboundAddr: n.ip, OutboundPort: outPort, MeshPort: meshPort, IntentionsDefaultAllow: true},
			mesh.NewLeafSecrets(leaves, n.node))
		proxies = append(proxies, startProxy(t, proxy.Config{XDSAddr: addr, Node: n.node, DrainTimeout: time.Second, MinBackoff: 50 * time.Millisecond, Logger: testkit.Logger(t, slog.LevelDebug)}))
	}
	upstream := net.JoinHostPort("127.0.0.2", strconv.Itoa(upPort))
	mesh := net.JoinHostPort("127.0.0.3", strconv.Itoa(meshPort))
	viaA := func() (net.Conn, error) { return net.DialTimeout("tcp", upstream, time.Second) }

	start := time.Now()
	for {
		err := echoOnce(viaA, "hello through the mesh")
		if err == nil {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("no echo through node-a's upstream: %v\nA: %v %v\nB: %v %v", err,
				proxies[0].ListenerAddrs(), proxies[0].Status(), proxies[1].ListenerAddrs(), proxies[1].Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("first echo through the mesh %s after start", time.Since(start).Round(time.Millisecond))
	for i, p := range proxies {
		for typ, s := range p.Status() {
			if typ == resource.RouteType && s == (proxy.TypeStatus{}) {
				continue // no HTTP listener: never asked for
			}
			if s.Nacks != 0 || s.Acked == "" {
				t.Errorf("proxy %d, %s: %+v; want ACKed, never NACKed", i, typ, s)
			}
		}
	}
	// A larger payload, and half-close: the client closes its side, still
	// reads everything back.
	c, err := viaA()
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	go func() {
		c.Write(payload)
		c.(*net.TCPConn).CloseWrite()
	}()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || len(got) != len(payload) || string(got) != string(payload) {
		t.Fatalf("1 MiB with half-close: %d bytes back, %v", len(got), err)
	}

	// Refused on node-b's mesh port: plaintext, and a certificate from
	// another CA (even one naming a mesh identity).
	plain := func() (net.Conn, error) { return net.DialTimeout("tcp", mesh, time.Second) }
	if err := echoOnce(plain, "plaintext"); err == nil {
		t.Error("a plaintext client got through node-b's mesh port")
	}
	foreign := foreignCert(t)
	withForeign := func() (net.Conn, error) {
		return tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", mesh,
			&tls.Config{ServerName: "echo.mesh", InsecureSkipVerify: true, Certificates: []tls.Certificate{foreign}})
	}
	if err := echoOnce(withForeign, "foreign"); err == nil {
		t.Error("a client with a foreign CA got through node-b's mesh port")
	}

	// Deny web -> echo: new connections are closed within 1 s.
	apply(t, r, discovery.IntentionRequest{Op: discovery.IntentionUpsert, Intention: discovery.Intention{
		ID: "ixn-1", SourceName: "web", DestinationName: "echo", Action: discovery.IntentionActionDeny}})
	start = time.Now()
	for echoOnce(viaA, "still allowed?") == nil {
		if time.Since(start) > time.Second {
			t.Fatal("a deny intention did not stop connections within 1 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("deny enforced %s after the write", time.Since(start).Round(time.Millisecond))
	for range 5 {
		if echoOnce(viaA, "denied") == nil {
			t.Fatal("a connection got through while web -> echo is denied")
		}
	}
	apply(t, r, discovery.IntentionRequest{Op: discovery.IntentionDelete, Intention: discovery.Intention{SourceName: "web", DestinationName: "echo"}})
	start = time.Now()
	for {
		err := echoOnce(viaA, "allowed again")
		if err == nil {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("deleting the deny did not restore connections within 1 s: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("restored %s after the delete", time.Since(start).Round(time.Millisecond))
}

// foreignCert is a leaf naming spiffe://vmesh.local/svc/web from a CA the
// mesh does not trust.
func foreignCert(t *testing.T) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "evil CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("spiffe://vmesh.local/svc/web")
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), URIs: []*url.URL{u},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: key}
}
