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
	// ErrCertExpired: a peer's node certificate has expired; it may only
	// renew itself, within the renewal grace (admitPeer).
	ErrCertExpired = errors.New("raft: node certificate expired")
)

// Lifetimes. A node certificate is short-lived and renewed at about half
// its life (renew.go); a node that was away longer than its life renews
// within DefaultRenewGrace after the expiry.
const (
	caLifetime = 10 * 365 * 24 * time.Hour
	// DefaultNodeCertTTL is a node certificate's lifetime unless
	// configured (cluster.node_cert_ttl).
	DefaultNodeCertTTL = 24 * time.Hour
	// MinNodeCertTTL and MaxNodeCertTTL bound the configured lifetime.
	MinNodeCertTTL = time.Minute
	MaxNodeCertTTL = 365 * 24 * time.Hour
	// DefaultRenewGrace is how long after its expiry a node certificate
	// is still accepted, for RenewNode only (cluster.node_cert_grace).
	DefaultRenewGrace = 30 * 24 * time.Hour
	// certBackdate is how far before its signing a certificate starts,
	// for clocks slightly behind the signer's.
	certBackdate = time.Minute
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

// SignNode signs a node's CSR for lifetime as issued at raft index 0,
// before any revocation: a bootstrap node's, and tests'. Servers sign
// with SignNodeAt.
func (ca *CA) SignNode(csrDER []byte, name string, lifetime time.Duration) (*x509.Certificate, error) {
	return ca.SignNodeAt(csrDER, name, 0, lifetime)
}

// SignNodeAt signs a node's CSR for lifetime (DefaultNodeCertTTL when 0):
// the certificate names the node by its SPIFFE ID, whatever the CSR asks
// for, is good for both ends of a TLS connection, and carries issued, a
// raft index the signer had applied before it checked the deny list (a
// join's: its token use; a renewal's: the signer's catalog index), which
// the deny list compares with a revocation's (trust.go). Only the CSR's
// public key is used.
func (ca *CA) SignNodeAt(csrDER []byte, name string, issued uint64, lifetime time.Duration) (*x509.Certificate, error) {
	csr, id, err := ca.checkNodeCSR(csrDER, name)
	if err != nil {
		return nil, err
	}
	if lifetime <= 0 {
		lifetime = DefaultNodeCertTTL
	}
	return ca.signSerial(csr.PublicKey, name, id.URL(), lifetime, issuedSerial(issued))
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

// Identity is what a node presents and trusts on the cluster port. Its
// certificate and key are renewed in place (renew.go): every TLS use on
// the cluster port reads the current pair (tls.Config's GetCertificate and
// GetClientCertificate), so a renewal reaches every new connection
// without a restart. A renewal after a CA rotation also brings the new
// CA, its cross-signed chain and the roots still trusted, which move with
// the pair. TD and Name never change.
type Identity struct {
	TD   spiffeid.TrustDomain
	Name string

	cur atomic.Pointer[nodePair]
	// prev is an earlier node key a server keeps while its sealed copy of
	// the CA key may still be sealed to it (custody.go); nil otherwise.
	prev atomic.Pointer[ecdsa.PrivateKey]
	// trust, once set, makes the catalog decide the roots and the deny
	// list (trust.go).
	trust atomic.Pointer[catalogTrust]
}

// nodePair is one node certificate and its key, with what the data dir
// trusts alongside; epoch counts renewals so that cached connections made
// with an older pair can be retired.
type nodePair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// chain is presented after cert, before roots: the cross-signed roots
	// of a rotation (trust.go); usually none.
	chain []*x509.Certificate
	// roots are the roots the data dir trusts: the CA that signed cert
	// first, then roots a rotation replaced, oldest last. Once the node
	// follows a catalog, the catalog's CA record decides instead.
	roots  []*x509.Certificate
	bundle *x509bundle.Bundle // roots, for verifying
	tls    *tls.Certificate
	epoch  uint64
}

func newIdentity(ca, cert *x509.Certificate, key *ecdsa.PrivateKey) (*Identity, error) {
	return newIdentityChain([]*x509.Certificate{ca}, nil, cert, key)
}

// newIdentityChain is an identity whose certificate chains, through
// chain, to one of roots (roots[0] is the CA that signed it).
func newIdentityChain(roots, chain []*x509.Certificate, cert *x509.Certificate, key *ecdsa.PrivateKey) (*Identity, error) {
	if len(roots) == 0 {
		return nil, errors.New("raft: no CA certificate")
	}
	td, err := trustDomainOf(roots[0])
	if err != nil {
		return nil, err
	}
	id := &Identity{TD: td}
	// An expired certificate still loads: the node renews it (within the
	// grace) instead of staying out until an operator steps in.
	bundle := x509bundle.FromX509Authorities(td, roots)
	if id.Name, err = id.verifyChain(append([]*x509.Certificate{cert}, chain...), bundle, time.Now()); err != nil {
		return nil, fmt.Errorf("node certificate does not verify against the cluster CA: %w", err)
	}
	pair, err := id.newPair(cert, key, chain, roots, 0)
	if err != nil {
		return nil, err
	}
	id.cur.Store(pair)
	return id, nil
}

// newPair is cert and key with chain and roots, checked to belong
// together (the key matches, the roots are of this trust domain).
func (id *Identity) newPair(cert *x509.Certificate, key *ecdsa.PrivateKey, chain, roots []*x509.Certificate, epoch uint64) (*nodePair, error) {
	if key == nil || !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("raft: the node key does not match the node certificate")
	}
	if len(roots) == 0 {
		return nil, errors.New("raft: no CA certificate")
	}
	for _, r := range roots {
		if td, err := trustDomainOf(r); err != nil || td != id.TD {
			return nil, fmt.Errorf("raft: CA certificate %s is not of trust domain %s", Fingerprint(r), id.TD)
		}
	}
	return &nodePair{cert: cert, key: key, chain: chain, roots: roots, epoch: epoch,
		bundle: x509bundle.FromX509Authorities(id.TD, roots),
		tls:    &tls.Certificate{Certificate: presentedChain(cert, chain, roots), PrivateKey: key, Leaf: cert}}, nil
}

// CA is the CA certificate that signed the node certificate in use (the
// active root when it was issued).
func (id *Identity) CA() *x509.Certificate { return id.cur.Load().roots[0] }

// Roots are the roots the data dir trusts, CA first, oldest last.
func (id *Identity) Roots() []*x509.Certificate { return id.cur.Load().roots }

// Chain is what the node presents between its certificate and the roots:
// the cross-signed roots of a rotation; usually none.
func (id *Identity) Chain() []*x509.Certificate { return id.cur.Load().chain }

// Cert is the node certificate in use now.
func (id *Identity) Cert() *x509.Certificate { return id.cur.Load().cert }

// Key is the node key in use now; it never leaves the node.
func (id *Identity) Key() *ecdsa.PrivateKey { return id.cur.Load().key }

// prevKey is the earlier node key kept for custody, or nil.
func (id *Identity) prevKey() *ecdsa.PrivateKey { return id.prev.Load() }

// tlsCertificate is the pair every TLS handshake on the cluster port
// presents.
func (id *Identity) tlsCertificate() *tls.Certificate { return id.cur.Load().tls }

// epoch changes with every renewal.
func (id *Identity) epoch() uint64 { return id.cur.Load().epoch }

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
// and asks admitPeer about it (valid now, not revoked), and returns the
// peer's node name. Every handshake this node makes as a client on the
// cluster port goes through it.
func (id *Identity) VerifyPeer(rawCerts [][]byte) (string, error) {
	return id.verifyPeer(rawCerts, useCluster, time.Now(), 0)
}

// verifyPeer checks a peer's chain against the trusted roots
// (trustBundle) as of a moment of the leaf's validity (now, or its expiry
// if that is past), so that an expired node certificate still says whose
// it is, and then asks admitPeer whether it may be used for use at now.
func (id *Identity) verifyPeer(rawCerts [][]byte, use peerUse, now time.Time, grace time.Duration) (string, error) {
	if len(rawCerts) == 0 {
		return "", fmt.Errorf("%w: no certificate presented", ErrNotNodeCert)
	}
	certs, err := parseDERs(rawCerts)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotNodeCert, err)
	}
	name, err := id.verifyChain(certs, id.trustBundle(), now)
	if err != nil {
		return "", err
	}
	if err := id.admitPeer(name, certs[0], use, now, grace); err != nil {
		return "", err
	}
	return name, nil
}

// verifyChain verifies certs (leaf first, then intermediates such as a
// rotation's cross-signed roots) against bundle at now, or at the leaf's
// expiry if now is past it, and returns the node name.
func (id *Identity) verifyChain(certs []*x509.Certificate, bundle *x509bundle.Bundle, now time.Time) (string, error) {
	at := now
	if at.After(certs[0].NotAfter) {
		at = certs[0].NotAfter
	}
	spiffe, _, err := x509svid.Verify(certs, bundle, x509svid.WithTime(at))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotNodeCert, err)
	}
	return nodeName(spiffe, id.TD)
}

// trustBundle is every root a peer's chain may end at: the data dir's,
// or, once this node follows a catalog, the roots its CA record lists.
func (id *Identity) trustBundle() *x509bundle.Bundle {
	if t := id.trust.Load(); t != nil {
		if b := t.bundle(id.TD); b != nil {
			return b
		}
	}
	return id.cur.Load().bundle
}

// peerUse is what a peer presents its node certificate for on the cluster
// port.
type peerUse int

const (
	// useHandshake: the TLS handshake, before the peer has said what it
	// wants, and the check of every call on a connection (revoke.go).
	// Every connection is then checked again for its use.
	useHandshake peerUse = iota
	// useCluster: raft, and every cluster RPC but RenewNode.
	useCluster
	// useRenewal: RenewNode, which an expired certificate may still make.
	useRenewal
)

// admitPeer is the one decision on whether node name's certificate, whose
// chain verifies against the trusted roots, may be used for use at now.
// Every peer certificate on the cluster port passes here: through
// verifyPeer at the handshake (both directions), peerNodeFor in the RPCs,
// the per-call check (revoke.go) and the listener for raft.
//
// Expiry: a certificate that has not expired may be used for anything.
// An expired one passes the handshake (which cannot know the call yet:
// the RPCs then check) and renews itself while it expired at most grace
// ago, so that a node that was away longer than its certificate's life
// comes back by itself; it is refused for raft and every other RPC.
//
// The deny list (trust.go), once this node follows a catalog: a
// certificate of a revoked node issued at or before its revocation is
// refused for every use, RenewNode too, so a node that left or was
// removed does not come back by renewing within the grace.
func (id *Identity) admitPeer(name string, cert *x509.Certificate, use peerUse, now time.Time, grace time.Duration) error {
	if err := admitExpiry(cert, use, now, grace); err != nil {
		return err
	}
	if t := id.trust.Load(); t != nil {
		return t.check(name, cert)
	}
	return nil
}

// admitExpiry is admitPeer's rule on expired certificates.
func admitExpiry(cert *x509.Certificate, use peerUse, now time.Time, grace time.Duration) error {
	if !now.After(cert.NotAfter) {
		return nil
	}
	expired := cert.NotAfter.UTC().Format(time.RFC3339)
	switch use {
	case useHandshake:
		return nil
	case useRenewal:
		if now.Sub(cert.NotAfter) > grace {
			return fmt.Errorf("%w at %s, longer ago than the renewal grace (%s): join the node again with a new token", ErrCertExpired, expired, grace)
		}
		return nil
	}
	return fmt.Errorf("%w at %s: an expired node certificate may only renew itself", ErrCertExpired, expired)
}

// Files of an identity in the data dir.
const (
	caFile      = "ca.pem"
	caKeyFile   = "ca-key.pem"
	nodeFile    = "node.pem"
	nodeKeyFile = "node-key.pem"
	// prevKeyFile is a server's earlier node key while its sealed CA key
	// may still be sealed to it (custody.go).
	prevKeyFile = "node-key.prev.pem"
	// newSuffix marks the halves of a pair being replaced (savePair).
	newSuffix = ".new"
)

func tlsDir(dataDir string) string { return filepath.Join(dataDir, "tls") }

// LoadIdentity reads the node's identity from dataDir; ErrNoIdentity when
// there is none. It finishes a renewal a crash interrupted (savePair).
func LoadIdentity(dataDir string) (*Identity, error) {
	dir := tlsDir(dataDir)
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoIdentity
	}
	if err != nil {
		return nil, err
	}
	// ca.pem: the CA, then the roots a rotation replaced; node.pem: the
	// node certificate, then its chain (trust.go).
	roots, err := parseCertsPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, caFile), err)
	}
	certs, key, err := loadPair(dir)
	if err != nil {
		return nil, err
	}
	id, err := newIdentityChain(roots, certs[1:], certs[0], key)
	if err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dir, prevKeyFile)); err == nil {
		prev, err := parseKeyPEM(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, prevKeyFile), err)
		}
		id.prev.Store(prev)
	}
	return id, nil
}

// save writes the identity to dataDir: the roots and the node's pair
// with its chain.
func (id *Identity) save(dataDir string) error {
	dir := tlsDir(dataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	p := id.cur.Load()
	if err := writeFileAtomic(filepath.Join(dir, caFile), encodeCertsPEM(p.roots), 0o600); err != nil {
		return err
	}
	return savePair(dir, append([]*x509.Certificate{p.cert}, p.chain...), p.key)
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
	cert, err := ca.SignNode(csr, name, DefaultNodeCertTTL)
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
	return &CA{Cert: id.CA(), Key: key}, nil
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

// sign issues a leaf for both ends of TLS naming uri, valid from a moment
// ago for lifetime.
func (ca *CA) sign(pub any, cn string, uri *url.URL, lifetime time.Duration) (*x509.Certificate, error) {
	return ca.signSerial(pub, cn, uri, lifetime, serial())
}

// signSerial is sign with serial number sn (a node certificate's carries
// its issue index, trust.go).
func (ca *CA) signSerial(pub any, cn string, uri *url.URL, lifetime time.Duration, sn *big.Int) (*x509.Certificate, error) {
	now := time.Now()
	return ca.signWindowSerial(pub, cn, uri, now.Add(-certBackdate), now.Add(lifetime), sn)
}

// signWindow issues a leaf naming uri valid from notBefore to notAfter.
func (ca *CA) signWindow(pub any, cn string, uri *url.URL, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	return ca.signWindowSerial(pub, cn, uri, notBefore, notAfter, serial())
}

func (ca *CA) signWindowSerial(pub any, cn string, uri *url.URL, notBefore, notAfter time.Time, sn *big.Int) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
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
func LoadNodeID(dir string) (string, error) { return LoadNodeIDAs(dir, "") }

// LoadNodeIDAs is LoadNodeID with the ID a new node takes given (Consul's
// node_id; "" makes a random one). A node that already has another ID
// keeps it and this is an error: raft knows it by that ID.
func LoadNodeIDAs(dir, want string) (string, error) {
	want = strings.ToLower(strings.TrimSpace(want))
	p := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(p)
	if err == nil {
		have := strings.TrimSpace(string(b))
		if want != "" && want != have {
			return "", fmt.Errorf("%q differs from the ID this node already has (%s, in %s); a node's ID cannot change", want, have, p)
		}
		return have, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading node ID: %w", err)
	}
	id := want
	if id == "" {
		var u [16]byte
		rand.Read(u[:])
		u[6] = (u[6] & 0x0f) | 0x40
		u[8] = (u[8] & 0x3f) | 0x80
		id = fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
	}
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing node ID: %w", err)
	}
	return id, nil
}
