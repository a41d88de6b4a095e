package raft

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

const idTestTD = "vmesh.test"

func idTestCA(t *testing.T, td string) *CA {
	t.Helper()
	ca, err := NewCA(td)
	if err != nil {
		t.Fatalf("NewCA(%q): %v", td, err)
	}
	return ca
}

// idTestNode makes a node key and has ca sign it for name, as a join does.
func idTestNode(t *testing.T, ca *CA, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, csr, err := newNodeKey(name)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignNode(csr, name, 0)
	if err != nil {
		t.Fatalf("SignNode(%q): %v", name, err)
	}
	return cert, key
}

// idTestLeaf signs, with ca, a leaf with the same shape as a node
// certificate but any URI, which SignNode would never produce.
func idTestLeaf(t *testing.T, ca *CA, uri string) *x509.Certificate {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "leaf"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestNewCA(t *testing.T) {
	ca := idTestCA(t, idTestTD)
	if !ca.Cert.IsCA || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate: IsCA=%v KeyUsage=%b; want a CA that can sign certificates", ca.Cert.IsCA, ca.Cert.KeyUsage)
	}
	if len(ca.Cert.URIs) != 1 || ca.Cert.URIs[0].String() != "spiffe://"+idTestTD {
		t.Errorf("CA URIs = %v; want [spiffe://%s]", ca.Cert.URIs, idTestTD)
	}
	if td, err := ca.TrustDomain(); err != nil || td.String() != idTestTD {
		t.Errorf("TrustDomain() = %v, %v; want %s", td, err, idTestTD)
	}
	if !ca.Key.PublicKey.Equal(ca.Cert.PublicKey) {
		t.Error("the CA key does not match its certificate")
	}
	for _, td := range []string{"", "Upper.Case", "a/b", "has space"} {
		if _, err := NewCA(td); err == nil {
			t.Errorf("NewCA(%q) succeeded; want an error for a bad trust domain", td)
		}
	}
}

func TestSignNode(t *testing.T) {
	ca := idTestCA(t, idTestTD)
	key, csr, err := newNodeKey("web-1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignNode(csr, "web-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != "spiffe://vmesh.test/node/web-1" {
		t.Errorf("URIs = %v; want [spiffe://vmesh.test/node/web-1]", cert.URIs)
	}
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if !slices.Contains(cert.ExtKeyUsage, eku) {
			t.Errorf("ExtKeyUsage = %v; missing %v", cert.ExtKeyUsage, eku)
		}
	}
	if cert.IsCA {
		t.Error("a node certificate is a CA")
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		t.Error("the certificate does not carry the CSR's public key")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, eku := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
			t.Errorf("verifying for %v against the CA: %v", eku, err)
		}
	}
}

func TestSignNodeRefuses(t *testing.T) {
	ca := idTestCA(t, idTestTD)
	_, good, err := newNodeKey("node-aaaa")
	if err != nil {
		t.Fatal(err)
	}
	// The subject is covered by the signature: a CSR whose name was
	// changed after signing parses but does not verify.
	tampered := bytes.Replace(good, []byte("node-aaaa"), []byte("node-bbbb"), 1)
	if bytes.Equal(tampered, good) {
		t.Fatal("test setup: the CSR does not contain its subject name")
	}
	// So is everything else: a flipped bit at the end of the signature.
	badSig := slices.Clone(good)
	badSig[len(badSig)-1] ^= 0x01
	for _, tc := range []struct {
		name, node string
		csr        []byte
	}{
		{"garbage", "n1", []byte("not a CSR")},
		{"empty", "n1", nil},
		{"truncated", "n1", good[:len(good)/2]},
		{"tampered subject", "n1", tampered},
		{"flipped signature bit", "n1", badSig},
		{"empty node name", "", good},
		{"slash in node name", "a/b", good},
		{"dot segment", ".", good},
		{"dot-dot segment", "..", good},
		{"space in node name", "web 1", good},
		{"percent in node name", "web%201", good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := ca.SignNode(tc.csr, tc.node, 0)
			if !errors.Is(err, ErrInvalidNodeCSR) {
				t.Fatalf("SignNode(%s, %q) = %v, %v; want ErrInvalidNodeCSR", tc.name, tc.node, cert, err)
			}
			if cert != nil {
				t.Errorf("SignNode returned a certificate with its error")
			}
		})
	}
}

func TestIdentityVerifyPeer(t *testing.T) {
	ca := idTestCA(t, idTestTD)
	cert, key := idTestNode(t, ca, "n1")
	id, err := newIdentity(ca.Cert, cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if id.Name != "n1" || id.TD.String() != idTestTD {
		t.Errorf("identity = %q in %q; want n1 in %s", id.Name, id.TD, idTestTD)
	}
	// What the node presents on the cluster port: its certificate and the
	// CA, which a joiner pins by fingerprint.
	if c := id.tlsCertificate().Certificate; len(c) != 2 || !bytes.Equal(c[0], cert.Raw) || !bytes.Equal(c[1], ca.Cert.Raw) {
		t.Errorf("TLS chain has %d certificates; want the node certificate, then the CA", len(c))
	}

	peer, _ := idTestNode(t, ca, "n2")
	sameTD := idTestCA(t, idTestTD) // another cluster that picked the same trust domain
	foreign, _ := idTestNode(t, sameTD, "n2")
	otherTD := idTestCA(t, "other.test")
	foreignTD, _ := idTestNode(t, otherTD, "n2")
	for _, tc := range []struct {
		name  string
		chain [][]byte
		want  string // "" means refused
	}{
		{"peer with the CA", [][]byte{peer.Raw, ca.Cert.Raw}, "n2"},
		{"peer alone", [][]byte{peer.Raw}, "n2"},
		{"itself", [][]byte{cert.Raw, ca.Cert.Raw}, "n1"},
		{"node path built by hand", [][]byte{idTestLeaf(t, ca, "spiffe://vmesh.test/node/n7").Raw}, "n7"},
		{"empty chain", [][]byte{}, ""},
		{"nil chain", nil, ""},
		{"garbage", [][]byte{[]byte("not a certificate")}, ""},
		{"another CA, same trust domain", [][]byte{foreign.Raw, sameTD.Cert.Raw}, ""},
		{"another CA, same trust domain, with our CA appended", [][]byte{foreign.Raw, ca.Cert.Raw}, ""},
		{"another CA and trust domain", [][]byte{foreignTD.Raw, otherTD.Cert.Raw}, ""},
		{"the CA itself", [][]byte{ca.Cert.Raw}, ""},
		{"not a node path", [][]byte{idTestLeaf(t, ca, "spiffe://vmesh.test/workload/n7").Raw}, ""},
		{"node path without a name", [][]byte{idTestLeaf(t, ca, "spiffe://vmesh.test/node").Raw}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := id.VerifyPeer(tc.chain)
			if tc.want == "" {
				if !errors.Is(err, ErrNotNodeCert) {
					t.Fatalf("VerifyPeer = %q, %v; want ErrNotNodeCert", got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("VerifyPeer = %q, %v; want %q", got, err, tc.want)
			}
		})
	}

	// newIdentity checks its own certificate the same way.
	if _, err := newIdentity(ca.Cert, foreign, key); err == nil {
		t.Error("newIdentity accepted a node certificate of another CA")
	}
	if _, err := newIdentity(ca.Cert, idTestLeaf(t, ca, "spiffe://vmesh.test/workload/n1"), key); !errors.Is(err, ErrNotNodeCert) {
		t.Errorf("newIdentity with a non-node SPIFFE ID: err = %v; want ErrNotNodeCert", err)
	}
}

func TestBootstrapAndLoadIdentity(t *testing.T) {
	dir := t.TempDir()
	id, ca, err := BootstrapIdentity(dir, idTestTD, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if id.Name != "n1" || !id.CA().Equal(ca.Cert) {
		t.Fatalf("BootstrapIdentity: name %q, CA matches: %v; want n1 signed by the returned CA", id.Name, id.CA().Equal(ca.Cert))
	}
	tls := filepath.Join(dir, "tls")
	if fi, err := os.Stat(tls); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("tls dir: %v, %v; want mode 0700", fi.Mode(), err)
	}
	for _, f := range []string{"ca.pem", "node.pem", "node-key.pem", "ca-key.pem"} {
		fi, err := os.Stat(filepath.Join(tls, f))
		if err != nil {
			t.Errorf("tls/%s: %v", f, err)
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("tls/%s mode = %v; want 0600", f, fi.Mode().Perm())
		}
	}
	if left, _ := filepath.Glob(filepath.Join(tls, "*.tmp")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
	// The files hold what they say.
	if c, err := readPEMCert(filepath.Join(tls, "ca.pem")); err != nil || !c.Equal(ca.Cert) {
		t.Errorf("tls/ca.pem is not the CA certificate (%v)", err)
	}
	if c, err := readPEMCert(filepath.Join(tls, "node.pem")); err != nil || !c.Equal(id.Cert()) {
		t.Errorf("tls/node.pem is not the node certificate (%v)", err)
	}

	loaded, err := LoadIdentity(dir)
	if err != nil {
		t.Fatalf("LoadIdentity: %v", err)
	}
	if !loaded.CA().Equal(id.CA()) || !loaded.Cert().Equal(id.Cert()) || !loaded.Key().Equal(id.Key()) ||
		loaded.Name != id.Name || loaded.TD != id.TD {
		t.Errorf("LoadIdentity = %q/%s; want what BootstrapIdentity made, %q/%s", loaded.Name, loaded.TD, id.Name, id.TD)
	}
	// The loaded identity trusts the same peers.
	peer, _ := idTestNode(t, ca, "n2")
	if name, err := loaded.VerifyPeer([][]byte{peer.Raw}); err != nil || name != "n2" {
		t.Errorf("loaded identity: VerifyPeer = %q, %v; want n2", name, err)
	}

	local, err := LoadLocalCA(dir, loaded)
	if err != nil || local == nil {
		t.Fatalf("LoadLocalCA = %v, %v; want the CA kept on disk", local, err)
	}
	if !local.Cert.Equal(ca.Cert) || !local.Key.Equal(ca.Key) {
		t.Error("LoadLocalCA returned another CA")
	}
	if err := os.Remove(filepath.Join(tls, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	if local, err := LoadLocalCA(dir, loaded); err != nil || local != nil {
		t.Errorf("LoadLocalCA without ca-key.pem = %v, %v; want nil, nil", local, err)
	}
	// Losing the CA key does not lose the node's identity.
	if _, err := LoadIdentity(dir); err != nil {
		t.Errorf("LoadIdentity without ca-key.pem: %v", err)
	}
}

func readPEMCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseCertPEM(b)
}

func TestLoadIdentityFailures(t *testing.T) {
	src := t.TempDir()
	if _, _, err := BootstrapIdentity(src, idTestTD, "n1"); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, f := range []string{"ca.pem", "node.pem", "node-key.pem"} {
		b, err := os.ReadFile(filepath.Join(src, "tls", f))
		if err != nil {
			t.Fatal(err)
		}
		files[f] = b
	}
	otherCA := idTestCA(t, idTestTD)
	otherPEM, _, err := otherCA.EncodeCA()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		change     map[string][]byte // nil value: the file is missing
		noIdentity bool              // want ErrNoIdentity
	}{
		{"empty data dir", map[string][]byte{"ca.pem": nil, "node.pem": nil, "node-key.pem": nil}, true},
		{"no node certificate", map[string][]byte{"node.pem": nil}, false},
		{"no node key", map[string][]byte{"node-key.pem": nil}, false},
		{"garbage CA", map[string][]byte{"ca.pem": []byte("garbage")}, false},
		{"garbage node certificate", map[string][]byte{"node.pem": []byte("garbage")}, false},
		{"garbage node key", map[string][]byte{"node-key.pem": []byte("garbage")}, false},
		{"CA of another cluster", map[string][]byte{"ca.pem": otherPEM}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if !tc.noIdentity {
				if err := os.MkdirAll(filepath.Join(dir, "tls"), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			for f, b := range files {
				if c, ok := tc.change[f]; ok {
					if c == nil {
						continue
					}
					b = c
				}
				if err := os.WriteFile(filepath.Join(dir, "tls", f), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			id, err := LoadIdentity(dir)
			switch {
			case tc.noIdentity && !errors.Is(err, ErrNoIdentity):
				t.Fatalf("LoadIdentity = %v, %v; want ErrNoIdentity", id, err)
			case !tc.noIdentity && (err == nil || errors.Is(err, ErrNoIdentity)):
				t.Fatalf("LoadIdentity = %v, %v; want an error other than ErrNoIdentity", id, err)
			}
		})
	}
	if _, err := LoadIdentity(filepath.Join(t.TempDir(), "does-not-exist")); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("LoadIdentity on a missing data dir: %v; want ErrNoIdentity", err)
	}
}

func TestEncodeDecodeCA(t *testing.T) {
	ca := idTestCA(t, idTestTD)
	certPEM, keyPEM, err := ca.EncodeCA()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Cert.Equal(ca.Cert) || !got.Key.Equal(ca.Key) {
		t.Fatal("DecodeCA(EncodeCA()) is another CA")
	}
	// The decoded CA still signs nodes of its trust domain.
	node, _ := idTestNode(t, got, "n1")
	if node.URIs[0].String() != "spiffe://vmesh.test/node/n1" {
		t.Errorf("node signed by the decoded CA: %v", node.URIs)
	}
	for _, tc := range []struct {
		name      string
		cert, key []byte
	}{
		{"garbage certificate", []byte("garbage"), keyPEM},
		{"key as certificate", keyPEM, keyPEM},
		{"garbage key", certPEM, []byte("garbage")},
		{"empty key", certPEM, nil},
		{"certificate as key", certPEM, certPEM},
	} {
		if _, err := DecodeCA(tc.cert, tc.key); err == nil {
			t.Errorf("DecodeCA(%s) succeeded; want an error", tc.name)
		}
	}
}

func TestFingerprint(t *testing.T) {
	a, b := idTestCA(t, idTestTD), idTestCA(t, idTestTD)
	for _, ca := range []*CA{a, b} {
		certPEM, _, err := ca.EncodeCA()
		if err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode(certPEM)
		sum := sha256.Sum256(block.Bytes)
		want := hex.EncodeToString(sum[:])
		if got := Fingerprint(ca.Cert); got != want {
			t.Errorf("Fingerprint = %s; want the SHA-256 of the DER, %s", got, want)
		}
	}
	if Fingerprint(a.Cert) == Fingerprint(b.Cert) {
		t.Error("two CAs have the same fingerprint")
	}
	// A token carries it: ParseToken must accept what Fingerprint makes.
	tok := Token{ID: "id", Secret: "s", Fingerprint: Fingerprint(a.Cert)}
	if _, err := ParseToken(tok.String()); err != nil {
		t.Errorf("ParseToken of a token pinning a real fingerprint: %v", err)
	}
}
