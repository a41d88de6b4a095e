package raft

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Errors about identities.
var (
	ErrNoIdentity     = errors.New("raft: this node has no cluster identity yet (bootstrap or join first)")
	ErrNotNodeCert    = errors.New("raft: peer certificate is not a node certificate of this cluster")
	ErrCAFingerprint  = errors.New("raft: cluster CA fingerprint does not match the token")
	ErrInvalidNodeCSR = errors.New("raft: invalid node certificate request")
)

// Lifetimes. A long node lifetime keeps an operator from a silent expiry
// while automatic rotation of node certificates is not built yet.
const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	nodeLifetime = 5 * 365 * 24 * time.Hour
)

// CA is the cluster's certificate authority, its key in the clear: it
// exists only in a server's memory, for one signature (custody.go seals it
// to each server's node key for raft), and in the bootstrap node's
// ca-key.pem until the first leader has stored it sealed.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

// NewCA creates a CA for trustDomain.
func NewCA(trustDomain string) (*CA, error) {
	return newCA(trustDomain, "")
}

// newCA creates a CA for trustDomain; suffix, when set, tells its
// subject from earlier CAs of the same domain (a rotation's, rotate.go).
func newCA(trustDomain, suffix string) (*CA, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("trust domain %q: %w", trustDomain, err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cn := "vmesh cluster CA " + td.String()
	if suffix != "" {
		cn += " " + suffix
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(caLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// TrustDomain is the CA's SPIFFE trust domain.
func (ca *CA) TrustDomain() (spiffeid.TrustDomain, error) {
	return trustDomainOf(ca.Cert)
}

func trustDomainOf(cert *x509.Certificate) (spiffeid.TrustDomain, error) {
	if len(cert.URIs) != 1 {
		return spiffeid.TrustDomain{}, errors.New("raft: CA certificate has no SPIFFE trust domain URI")
	}
	id, err := spiffeid.FromURI(cert.URIs[0])
	if err != nil {
		return spiffeid.TrustDomain{}, err
	}
	return id.TrustDomain(), nil
}

// Fingerprint is the SHA-256 of a certificate, in hex: what a join token
// pins.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// NodeID is a node's SPIFFE ID: spiffe://<trust-domain>/node/<name>.
func NodeID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "node", name)
}

// newNodeKey makes a node key and a CSR for it; the key never leaves the
// node.
func newNodeKey(name string) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name},
	}, key)
	if err != nil {
		return nil, nil, err
	}
	return key, csr, nil
}

// SignNode signs a node's CSR as issued at raft index 0, before any
// revocation: a bootstrap node's, and tests'. The leader signs with
// SignNodeAt.
func (ca *CA) SignNode(csrDER []byte, name string) (*x509.Certificate, error) {
	return ca.SignNodeAt(csrDER, name, 0)
}

// SignNodeAt signs a node's CSR: the certificate names the node by its
// SPIFFE ID, is good for both ends of a TLS connection, and carries
// issued, a raft index the leader had applied when it signed (a join's:
// its token use), which the deny list compares with a revocation's
// (trust.go).
func (ca *CA) SignNodeAt(csrDER []byte, name string, issued uint64) (*x509.Certificate, error) {
	csr, id, err := ca.checkNodeCSR(csrDER, name)
	if err != nil {
		return nil, err
	}
	return ca.signSerial(csr.PublicKey, name, id.URL(), nodeLifetime, issuedSerial(issued))
}

// checkNodeCSR is everything SignNode can refuse, so that a join spends a
// token's use only on a request that will be signed.
func (ca *CA) checkNodeCSR(csrDER []byte, name string) (*x509.CertificateRequest, spiffeid.ID, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("%w: %v", ErrInvalidNodeCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("%w: bad signature: %v", ErrInvalidNodeCSR, err)
	}
	td, err := ca.TrustDomain()
	if err != nil {
		return nil, spiffeid.ID{}, err
	}
	id, err := NodeID(td, name)
	if err != nil {
		return nil, spiffeid.ID{}, fmt.Errorf("%w: node name %q: %v", ErrInvalidNodeCSR, name, err)
	}
	return csr, id, nil
}

// Identity is what a node presents and trusts on the cluster port.
type Identity struct {
	CA   *x509.Certificate
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	TD   spiffeid.TrustDomain
	Name string
	// Roots are the roots the data dir trusts: CA first, then roots a CA
	// rotation replaced, oldest last. Once the node follows a catalog, the
	// catalog's CA record decides instead (trust.go).
	Roots []*x509.Certificate
	// Chain is presented after Cert, before Roots: the cross-signed roots
	// of a rotation (trust.go); usually none.
	Chain   []*x509.Certificate
	bundle  *x509bundle.Bundle
	tlsCert tls.Certificate
	trust   atomic.Pointer[catalogTrust] // trust.go
}

func newIdentity(ca, cert *x509.Certificate, key *ecdsa.PrivateKey) (*Identity, error) {
	return newIdentityChain([]*x509.Certificate{ca}, nil, cert, key)
}

// newIdentityChain is an identity whose certificate chains, through
// chain, to one of roots (roots[0] is the CA that signs now).
func newIdentityChain(roots, chain []*x509.Certificate, cert *x509.Certificate, key *ecdsa.PrivateKey) (*Identity, error) {
	if len(roots) == 0 {
		return nil, errors.New("raft: no CA certificate")
	}
	td, err := trustDomainOf(roots[0])
	if err != nil {
		return nil, err
	}
	id := &Identity{CA: roots[0], Cert: cert, Key: key, TD: td, Roots: roots, Chain: chain, bundle: x509bundle.FromX509Authorities(td, roots)}
	spiffe, _, err := x509svid.Verify(append([]*x509.Certificate{cert}, chain...), id.bundle)
	if err != nil {
		return nil, fmt.Errorf("node certificate does not verify against the cluster CA: %w", err)
	}
	if id.Name, err = nodeName(spiffe, td); err != nil {
		return nil, err
	}
	id.tlsCert = tls.Certificate{Certificate: presentedChain(cert, chain, roots), PrivateKey: key, Leaf: cert}
	return id, nil
}

// nodeName extracts <name> from spiffe://<td>/node/<name>: exactly one
// segment after /node/, so no other kind of certificate from the same CA
// (a proxy's, a service's) passes for a cluster member.
func nodeName(id spiffeid.ID, td spiffeid.TrustDomain) (string, error) {
	if !id.MemberOf(td) {
		return "", fmt.Errorf("%w: %s is not in trust domain %s", ErrNotNodeCert, id, td)
	}
	seg := strings.Split(strings.TrimPrefix(id.Path(), "/"), "/")
	if len(seg) != 2 || seg[0] != "node" || seg[1] == "" {
		return "", fmt.Errorf("%w: %s is not a node ID", ErrNotNodeCert, id)
	}
	return seg[1], nil
}

// VerifyPeer checks a peer's certificate chain against the trusted roots
// and the deny list, and returns the peer's node name. Every handshake on
// the cluster port, in both directions, goes through it.
func (id *Identity) VerifyPeer(rawCerts [][]byte) (string, error) {
	if len(rawCerts) == 0 {
		return "", fmt.Errorf("%w: no certificate presented", ErrNotNodeCert)
	}
	spiffe, chains, err := x509svid.ParseAndVerify(rawCerts, id.trustBundle())
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotNodeCert, err)
	}
	name, err := nodeName(spiffe, id.TD)
	if err != nil {
		return "", err
	}
	if err := id.acceptPeer(name, chains[0][0]); err != nil {
		return "", err
	}
	return name, nil
}

// trustBundle is every root a peer's chain may end at: the data dir's,
// or, once this node follows a catalog, the roots its CA record lists.
func (id *Identity) trustBundle() *x509bundle.Bundle {
	if t := id.trust.Load(); t != nil {
		if b := t.bundle(id.TD); b != nil {
			return b
		}
	}
	return id.bundle
}

// acceptPeer is the one check of a verified peer certificate beyond its
// chain: the catalog's deny list (trust.go).
func (id *Identity) acceptPeer(name string, cert *x509.Certificate) error {
	if t := id.trust.Load(); t != nil {
		return t.check(name, cert)
	}
	return nil
}

// Files of an identity in the data dir.
const (
	caFile      = "ca.pem"
	caKeyFile   = "ca-key.pem"
	nodeFile    = "node.pem"
	nodeKeyFile = "node-key.pem"
)

func tlsDir(dataDir string) string { return filepath.Join(dataDir, "tls") }

// LoadIdentity reads the node's identity from dataDir; ErrNoIdentity when
// there is none.
func LoadIdentity(dataDir string) (*Identity, error) {
	dir := tlsDir(dataDir)
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoIdentity
	}
	if err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(filepath.Join(dir, nodeFile))
	if err != nil {
		return nil, fmt.Errorf("reading node certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, nodeKeyFile))
	if err != nil {
		return nil, fmt.Errorf("reading node key: %w", err)
	}
	// ca.pem: the CA, then the roots a rotation replaced; node.pem: the
	// node certificate, then its chain (trust.go).
	roots, err := parseCertsPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, caFile), err)
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, nodeFile), err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, nodeKeyFile), err)
	}
	return newIdentityChain(roots, certs[1:], certs[0], key)
}

// save writes the identity to dataDir atomically, file by file.
func (id *Identity) save(dataDir string) error {
	dir := tlsDir(dataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(id.Key)
	if err != nil {
		return err
	}
	roots := id.Roots
	if len(roots) == 0 {
		roots = []*x509.Certificate{id.CA}
	}
	for name, data := range map[string][]byte{
		nodeKeyFile: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		nodeFile:    encodeCertsPEM(append([]*x509.Certificate{id.Cert}, id.Chain...)),
		caFile:      encodeCertsPEM(roots),
	} {
		if err := writeFileAtomic(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseKeyPEM(b []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, errors.New("no PEM key")
	}
	return x509.ParseECPrivateKey(block.Bytes)
}

// EncodeCA renders a CA (certificate and key) as PEM: the bootstrap node's
// ca-key.pem, and tests. Raft never stores the key PEM (custody.go).
func (ca *CA) EncodeCA() (certPEM, keyPEM []byte, err error) {
	keyDER, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// DecodeCA parses what EncodeCA wrote.
func DecodeCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// BootstrapIdentity creates a new CA and this node's certificate, for the
// first node of a new cluster. The CA key is kept on disk until it is
// committed to raft, so a crash in between loses nothing.
func BootstrapIdentity(dataDir, trustDomain, name string) (*Identity, *CA, error) {
	ca, err := NewCA(trustDomain)
	if err != nil {
		return nil, nil, err
	}
	key, csr, err := newNodeKey(name)
	if err != nil {
		return nil, nil, err
	}
	cert, err := ca.SignNode(csr, name)
	if err != nil {
		return nil, nil, err
	}
	id, err := newIdentity(ca.Cert, cert, key)
	if err != nil {
		return nil, nil, err
	}
	_, keyPEM, err := ca.EncodeCA()
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(tlsDir(dataDir), 0o700); err != nil {
		return nil, nil, err
	}
	if err := writeFileAtomic(filepath.Join(tlsDir(dataDir), caKeyFile), keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	return id, ca, id.save(dataDir)
}

// LoadLocalCA reads the CA key a bootstrap node kept on disk, if any.
func LoadLocalCA(dataDir string, id *Identity) (*CA, error) {
	keyPEM, err := os.ReadFile(filepath.Join(tlsDir(dataDir), caKeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: id.CA, Key: key}, nil
}

// ProxyID is the SPIFFE ID of a node's proxy: spiffe://<trust-domain>/proxy/<node>.
// It is deliberately not under /node/: a proxy certificate must never pass
// for a cluster member on the cluster port.
func ProxyID(td spiffeid.TrustDomain, node string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "proxy", node)
}

// ServiceID is a service's SPIFFE ID: spiffe://<trust-domain>/svc/<name>.
func ServiceID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	return spiffeid.FromSegments(td, "svc", name)
}

// SignService issues a leaf certificate for service name to pub, valid for
// lifetime. Proxies present it on both ends of a mesh connection; the
// inbound side authorizes the caller by its SPIFFE ID.
func (ca *CA) SignService(pub any, name string, lifetime time.Duration) (*x509.Certificate, error) {
	td, err := ca.TrustDomain()
	if err != nil {
		return nil, err
	}
	id, err := ServiceID(td, name)
	if err != nil {
		return nil, fmt.Errorf("service name %q: %w", name, err)
	}
	return ca.sign(pub, name, id.URL(), lifetime)
}

// sign issues a leaf for both ends of TLS naming uri.
func (ca *CA) sign(pub any, cn string, uri *url.URL, lifetime time.Duration) (*x509.Certificate, error) {
	return ca.signSerial(pub, cn, uri, lifetime, serial())
}

func (ca *CA) signSerial(pub any, cn string, uri *url.URL, lifetime time.Duration, sn *big.Int) (*x509.Certificate, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(lifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{uri},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// LoadNodeID reads the node's UUID (raft's server ID) from the data
// dir, creating it once.
func LoadNodeID(dir string) (string, error) {
	p := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(p)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading node ID: %w", err)
	}
	var u [16]byte
	rand.Read(u[:])
	u[6] = (u[6] & 0x0f) | 0x40
	u[8] = (u[8] & 0x3f) | 0x80
	id := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing node ID: %w", err)
	}
	return id, nil
}
