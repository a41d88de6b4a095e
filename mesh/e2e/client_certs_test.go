package e2e

import (
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// TestClientCertificates: one server and one client as real processes,
// the client with cluster.node_cert_ttl = 1m. The client holds no CA key,
// yet a service registered on it gets a leaf from the server and its
// in-process proxy serves mTLS: the server's proxy reaches it through the
// mesh. The client's node certificate file is renewed (1m, 0600, no other
// key kept), and once its certificate has expired it still writes with
// the renewed one. Stopped until its certificate expired, it comes back
// by itself: it renews within the grace and serves again.
func TestClientCertificates(t *testing.T) {
	skipShort(t)
	t.Parallel()
	cfg := testkit.WriteFile(t, t.TempDir(), "certs.hcl", "cluster {\n  node_cert_ttl = \"1m\"\n}\n")
	srv := newNode(t, "n1", "127.19.0.1", "-proxy").start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return srv.leader() != "" })
	c := newClientNode(t, "c1", "127.19.0.2", "-proxy", "-config", cfg).
		start("-join", srv.clusterAddr(), "-token-file", srv.tokenFile("1h"))
	testkit.WaitFor(t, 20*time.Second, "c1 knows the leader", func() bool { return c.leader() != "" })

	// web on the client, called from the server through both proxies.
	web := startHTTPApp(t, c.ip, "web-1")
	c.registerJSON(fmt.Sprintf(`{"ID":"web-1","Name":"web","Address":%q,"Port":%d,"Meta":{"protocol":"http"}}`, c.ip, web.port()))
	srv.registerJSON(`{"ID":"caller-1","Name":"caller","Port":1,"Connect":{"SidecarService":{"Proxy":{"Upstreams":[{"DestinationName":"web","LocalBindPort":21001}]}}}}`)
	srv.intention("caller", "web", "allow")
	call := func() bool {
		code, app, _, err := httpCall(&http.Client{Timeout: 3 * time.Second}, http.MethodGet, "http://"+hostPort(srv.ip, 21001)+"/hello", "")
		return err == nil && code == 200 && app == "web-1"
	}
	testkit.WaitFor(t, 30*time.Second, "n1's proxy reaching web on c1 over mTLS", call)

	// The leaf c1's proxy presents for web: the cluster CA's, for svc/web.
	pair, roots := c.serviceCert("web")
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("c1's web leaf does not verify against the cluster CA: %v", err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://vmesh.local/svc/web" {
		t.Errorf("c1's web leaf names %v; want spiffe://vmesh.local/svc/web", leaf.URIs)
	}

	// The node certificate: the join gave one of the server's 24h, which
	// is renewed at once to 1m, then every half minute or so. Wait until
	// a 1m certificate has expired and another replaced it.
	var expired *x509.Certificate
	testkit.WaitFor(t, 30*time.Second, "c1's node certificate renewed to 1m", func() bool {
		cert := c.nodeCert()
		if cert.NotAfter.Sub(cert.NotBefore) <= 2*time.Minute {
			expired = cert
			return true
		}
		return false
	})
	testkit.WaitFor(t, 2*time.Minute, "c1's 1m node certificate expired and replaced", func() bool {
		return time.Now().After(expired.NotAfter) && c.nodeCert().NotAfter.After(time.Now())
	})
	cur := c.nodeCert()
	if cur.SerialNumber.Cmp(expired.SerialNumber) == 0 || cur.NotAfter.Sub(cur.NotBefore) > 2*time.Minute {
		t.Errorf("c1's node certificate: serial %v (expired one %v), life %s; want a new 1m one", cur.SerialNumber, expired.SerialNumber, cur.NotAfter.Sub(cur.NotBefore))
	}
	wantOnlyNodeKey(t, c)
	if err := c.register("api-1", "api"); err != nil {
		t.Errorf("registering on c1 after its first 1m node certificate expired: %v", err)
	}
	testkit.WaitFor(t, 20*time.Second, "the mesh call after the node certificate's renewals", call)

	// Away longer than its certificate's life: it comes back by itself.
	c.kill()
	last := c.nodeCert()
	testkit.WaitFor(t, 2*time.Minute, "c1's node certificate expired while it is down", func() bool { return time.Now().After(last.NotAfter) })
	c.start()
	testkit.WaitFor(t, 30*time.Second, "c1 renewed its expired certificate", func() bool {
		return c.nodeCert().NotAfter.After(time.Now())
	})
	testkit.WaitFor(t, 30*time.Second, "c1 back: it knows the leader and writes", func() bool {
		return c.leader() != "" && c.register("api-2", "api") == nil
	})
	testkit.WaitFor(t, 30*time.Second, "the mesh call after c1 came back", call)
}

// wantOnlyNodeKey fails unless the node's tls dir comes to hold its node
// key and certificate and the CA certificate, all 0600, and nothing else
// (no earlier key, nothing left of a renewal). It waits: a renewal in
// flight writes ".new" files for a moment.
func wantOnlyNodeKey(t *testing.T, n *node) {
	t.Helper()
	var problem string
	ok := testkit.Eventually(30*time.Second, func() bool {
		problem = tlsDirProblem(n)
		return problem == ""
	})
	if !ok {
		t.Errorf("%s's tls dir: %s", n.name, problem)
	}
}

// tlsDirProblem says what is wrong with the node's tls dir ("" nothing).
func tlsDirProblem(n *node) string {
	files, err := os.ReadDir(filepath.Join(n.dataDir, "tls"))
	if err != nil {
		return err.Error()
	}
	for _, f := range files {
		info, err := f.Info()
		switch {
		case err != nil:
			return err.Error()
		case f.Name() != "ca.pem" && f.Name() != "node.pem" && f.Name() != "node-key.pem":
			return "holds " + f.Name() + "; want only ca.pem, node.pem and node-key.pem"
		case info.Mode().Perm() != 0o600:
			return fmt.Sprintf("%s has mode %v; want 0600", f.Name(), info.Mode().Perm())
		}
	}
	return ""
}
