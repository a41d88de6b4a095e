package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmesh/vmesh/lab/testkit"
)

// dialWithCert opens the cluster port at addr with a node certificate
// and alpn and reads once (TLS 1.3 tells a client that its certificate
// was refused on its first read). It returns nil when the server kept the
// connection, else why it did not.
func dialWithCert(cert tls.Certificate, addr, alpn string) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{
		Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, NextProtos: []string{alpn},
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(time.Second))
	_, err = conn.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return nil
	}
	return err
}

// nodeKeyPair is the node certificate (with its chain) and key in a data dir.
func (n *node) nodeKeyPair() tls.Certificate {
	n.t.Helper()
	certPEM, err := os.ReadFile(filepath.Join(n.dataDir, "tls", "node.pem"))
	if err != nil {
		n.t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(n.dataDir, "tls", "node-key.pem"))
	if err != nil {
		n.t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		n.t.Fatal(err)
	}
	return pair
}

// logs is everything the node's agent printed.
func (n *node) logs() string { return n.p.stdout.String() + n.p.stderr.String() }

// TestClusterLeaveRevokes: a client that leaves is revoked. Its node
// certificate and key, copied before it left, no longer open the cluster
// port (RPC or raft), and the server logs the refusal naming the node and
// the reason; the same name joined again with a new token is accepted.
func TestClusterLeaveRevokes(t *testing.T) {
	skipShort(t)
	t.Parallel()
	n1 := newNode(t, "n1", "127.21.0.1").start("-bootstrap")
	testkit.WaitFor(t, 15*time.Second, "n1 leads", func() bool { return n1.leader() != "" })
	c1 := newClientNode(t, "c1", "127.21.0.11").start("-join", n1.clusterAddr(), "-token-file", n1.tokenFile("1h"))
	testkit.WaitFor(t, 20*time.Second, "c1 knows the leader", func() bool { return c1.leader() != "" })

	stolen := c1.nodeKeyPair()
	if err := dialWithCert(stolen, n1.clusterAddr(), "h2"); err != nil {
		t.Fatalf("c1's certificate while it is a member: %v; want the connection kept", err)
	}
	if code, _, errs := c1.cli("leave"); code != 0 {
		t.Fatalf("vmesh leave on c1: %d %s", code, errs)
	}
	if code := c1.p.wait(20 * time.Second); code != 0 {
		t.Fatalf("c1's agent exited %d after leaving", code)
	}
	for _, alpn := range []string{"h2", "vmesh-raft/1"} {
		err := dialWithCert(stolen, n1.clusterAddr(), alpn)
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s with c1's copied certificate after it left: %v; want the handshake refused over the certificate", alpn, err)
		}
	}
	testkit.WaitFor(t, 10*time.Second, "n1 logging the refusal with the node and the reason", func() bool {
		for _, line := range strings.Split(n1.logs(), "\n") {
			if strings.Contains(line, "refused a revoked node certificate") && strings.Contains(line, "node=c1") && strings.Contains(line, "left the cluster") {
				return true
			}
		}
		return false
	})

	// c1 joins again, with a new token and so a new certificate: accepted.
	c1.start()
	if code, _, errs := c1.cli("join", n1.clusterAddr(), "-token-file", n1.tokenFile("1h")); code != 0 {
		t.Fatalf("c1 joining again: %d %s", code, errs)
	}
	testkit.WaitFor(t, 20*time.Second, "c1 back, knowing the leader", func() bool { return c1.leader() != "" })
	if err := c1.register("web-c1", "web"); err != nil {
		t.Fatalf("c1 writing after it joined again: %v", err)
	}
	if err := dialWithCert(c1.nodeKeyPair(), n1.clusterAddr(), "h2"); err != nil {
		t.Errorf("c1's new certificate: %v; want the connection kept", err)
	}
	if err := dialWithCert(stolen, n1.clusterAddr(), "h2"); err == nil {
		t.Error("c1's old certificate opens the cluster port again after c1 rejoined")
	}
}

// caRootList is GET /v1/connect/ca/roots, the fields the test reads.
type caRootList struct {
	ActiveRootID string
	Roots        []struct {
		ID       string
		RootCert string
		Active   bool
	}
}

func (n *node) caRoots() caRootList {
	var out caRootList
	if err := getJSON("http://"+n.httpAddr()+"/v1/connect/ca/roots", &out); err != nil {
		n.t.Fatalf("%s: /v1/connect/ca/roots: %v", n.name, err)
	}
	return out
}

// replicaStats is a client's Stats.raft in /v1/agent/self.
func (n *node) replicaStats() map[string]string {
	var self struct {
		Stats struct{ Raft map[string]string }
	}
	if err := getJSON("http://"+n.httpAddr()+"/v1/agent/self", &self); err != nil {
		n.t.Fatalf("%s: /v1/agent/self: %v", n.name, err)
	}
	return self.Stats.Raft
}

func parsePEMCert(t *testing.T, s string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		t.Fatalf("no PEM certificate in %q", s)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCARotation: three servers and a client as real processes; an
// operator rotates the CA on a server. The cluster keeps its leader and
// takes writes, the client keeps its replica stream (no new snapshot, no
// reconnect) and learns the new roots, every node lists both roots, a
// service registered before the rotation gets a leaf from the new CA that
// a peer knowing only the old root still verifies, a node joins
// afterwards, and a client whose node certificate renews every half
// minute moves to the new key (certificate, chain and roots in its data
// dir) and comes back from a restart on them.
func TestCARotation(t *testing.T) {
	skipShort(t)
	t.Parallel()
	servers := bootCluster(t, "127.22.0.", 3)
	n1, n2 := servers[0], servers[1]
	testkit.WaitFor(t, 30*time.Second, "three raft members", func() bool {
		r := roles(n1.members())
		return r["leader"] == 1 && r["leader"]+r["voter"] == 3
	})
	c1 := newClientNode(t, "c1", "127.22.0.11").start("-join", n1.clusterAddr(), "-token-file", n1.tokenFile("1h"))
	testkit.WaitFor(t, 20*time.Second, "c1 knows the leader", func() bool { return c1.leader() != "" })
	shortCfg := testkit.WriteFile(t, t.TempDir(), "certs.hcl", "cluster {\n  node_cert_ttl = \"1m\"\n}\n")
	c3 := newClientNode(t, "c3", "127.22.0.13", "-config", shortCfg).start("-join", n1.clusterAddr(), "-token-file", n1.tokenFile("1h"))
	testkit.WaitFor(t, 20*time.Second, "c3 knows the leader", func() bool { return c3.leader() != "" })
	if err := n1.register("api-1", "api"); err != nil {
		t.Fatal(err)
	}
	_, before := n1.serviceCert("api")
	old := n1.caRoots()
	if len(old.Roots) != 1 || !old.Roots[0].Active {
		t.Fatalf("roots before the rotation: %+v; want one, active", old)
	}
	oldRoot := parsePEMCert(t, old.Roots[0].RootCert)
	testkit.WaitFor(t, 10*time.Second, "c1's replica holding the CA", func() bool { return c1.caRoots().ActiveRootID == old.ActiveRootID })
	stats := c1.replicaStats()
	logMark := len(c1.logs())

	code, out, errs := n2.cli("ca", "rotate")
	if code != 0 || !strings.Contains(out, "the active root is now") {
		t.Fatalf("vmesh ca rotate on n2: %d\n%s%s", code, out, errs)
	}
	rotated := n2.caRoots()
	if rotated.ActiveRootID == old.ActiveRootID || len(rotated.Roots) != 2 || rotated.Roots[1].ID != old.ActiveRootID || rotated.Roots[1].Active {
		t.Fatalf("roots after the rotation on n2: %+v; want a new active root and the old one", rotated)
	}
	newRoot := parsePEMCert(t, rotated.Roots[0].RootCert)
	for _, n := range append(servers, c1) {
		testkit.WaitFor(t, 15*time.Second, n.name+" listing both roots, the new one active", func() bool {
			l := n.caRoots()
			return l.ActiveRootID == rotated.ActiveRootID && len(l.Roots) == 2
		})
	}

	// The cluster keeps its leader and takes writes, from the client too.
	for _, n := range append(servers, c1) {
		if n.leader() == "" {
			t.Errorf("%s knows no leader after the rotation", n.name)
		}
	}
	if err := c1.register("web-c1", "web"); err != nil {
		t.Fatalf("c1 writing after the rotation: %v", err)
	}
	testkit.WaitFor(t, 10*time.Second, "n3 sees c1's write", func() bool { return servers[2].instances("web")["web-c1"] })
	// The client kept its replica: no new snapshot. (Its stream may have
	// moved to the server its node ID hashes to, which a client does once
	// it knows every server; it resumes there from its last index.)
	after := c1.replicaStats()
	if after["snapshots"] != stats["snapshots"] {
		t.Errorf("c1's replica: %s snapshots from %s before, %s from %s after; want no new snapshot", stats["snapshots"], stats["replica_server"], after["snapshots"], after["replica_server"])
	}
	if strings.Contains(c1.logs()[logMark:], "replica stream ended") {
		t.Errorf("c1's replica stream broke during the rotation:\n%s", c1.logs()[logMark:])
	}

	// The service registered before gets a leaf from the new CA, with the
	// chain down to the old root; its proxy trusts both roots.
	var leaf tls.Certificate
	var roots *x509.CertPool
	testkit.WaitFor(t, 20*time.Second, "api's leaf reissued under the new CA", func() bool {
		leaf, roots = n1.serviceCert("api")
		c, err := x509.ParseCertificate(leaf.Certificate[0])
		return err == nil && c.CheckSignatureFrom(newRoot) == nil
	})
	if roots.Equal(before) {
		t.Error("the proxy's roots did not change with the rotation")
	}
	cert, _ := x509.ParseCertificate(leaf.Certificate[0])
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the new leaf against the proxy's roots: %v", err)
	}
	oldOnly, inter := x509.NewCertPool(), x509.NewCertPool()
	oldOnly.AddCert(oldRoot)
	for _, der := range leaf.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		inter.AddCert(c)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: oldOnly, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the new leaf with its chain, for a peer that knows only the old root: %v", err)
	}

	// A node joins after the rotation: its certificate is the new CA's,
	// and it works with servers whose certificates the old key signed.
	c2 := newClientNode(t, "c2", "127.22.0.12").start("-join", n1.clusterAddr(), "-token-file", n2.tokenFile("1h"))
	testkit.WaitFor(t, 20*time.Second, "c2 knows the leader", func() bool { return c2.leader() != "" })
	if err := c2.register("web-c2", "web"); err != nil {
		t.Fatalf("c2 writing: %v", err)
	}
	c2cert := c2.nodeCert()
	if err := c2cert.CheckSignatureFrom(newRoot); err != nil {
		t.Errorf("c2's node certificate is not the new CA's: %v", err)
	}

	// c3 renews its 1m node certificate every half minute: the renewal
	// after the rotation is the new key's, with the cross-signed root
	// after it in node.pem and both roots, the new one first, in ca.pem.
	testkit.WaitFor(t, 90*time.Second, "c3's node certificate renewed under the new CA", func() bool {
		return c3.nodeCert().CheckSignatureFrom(newRoot) == nil
	})
	pair := c3.nodeKeyPair()
	if len(pair.Certificate) != 2 {
		t.Fatalf("c3's node.pem holds %d certificates; want its own and the cross-signed root", len(pair.Certificate))
	}
	cross, err := x509.ParseCertificate(pair.Certificate[1])
	if err != nil || cross.CheckSignatureFrom(oldRoot) != nil || !cross.IsCA {
		t.Errorf("c3's chain: %v; want the new root cross-signed by the old one", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(c3.dataDir, "tls", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	var caRoots []*x509.Certificate
	for rest := caPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		caRoots = append(caRoots, parsePEMCert(t, string(pem.EncodeToMemory(b))))
	}
	if len(caRoots) != 2 || !caRoots[0].Equal(newRoot) || !caRoots[1].Equal(oldRoot) {
		t.Errorf("c3's ca.pem holds %d roots; want the new and the old one, in that order", len(caRoots))
	}
	// It keeps working, and after a restart it loads them and comes back.
	if err := c3.register("web-c3", "web"); err != nil {
		t.Errorf("c3 writing with its renewed certificate: %v", err)
	}
	c3.kill()
	c3.start()
	testkit.WaitFor(t, 30*time.Second, "c3 back on the new key after a restart", func() bool {
		return c3.leader() != "" && c3.register("web-c3b", "web") == nil
	})
	testkit.WaitFor(t, 10*time.Second, "n3 sees c3's write after its restart", func() bool { return servers[2].instances("web")["web-c3b"] })
}
