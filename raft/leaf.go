package raft

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultLeafLifetime is how long a service's leaf certificate is valid; a
// leaf is renewed at half its lifetime.
const DefaultLeafLifetime = 72 * time.Hour

// Leaf is a certificate and its key, PEM-encoded, for the proxy.
type Leaf struct {
	Name     string // service name, or "" for the node's own leaf
	URI      string // SPIFFE ID
	CertPEM  []byte
	KeyPEM   []byte
	NotAfter time.Time
	// Index grows with every leaf this issuer makes: at least the catalog
	// index it was issued at, above every earlier leaf's. It is the
	// blocking index of the agent's leaf endpoint.
	Index   uint64
	renewAt time.Time
}

// Leaves is what the local proxy needs for mTLS: the CA roots, a leaf per
// local service and one for the node.
type Leaves struct {
	RootsPEM []byte
	Node     *Leaf
	Services []*Leaf // by name
}

// LeafSigner has a leaf certificate signed for this node, for the public
// key in req.CSR: its proxy's (req.Service "") or one of its services'.
// On a server it is the server's own CA key (Server.SignLeaf); on a
// client, a server over the cluster RPC (Client.SignLeaf). Either way the
// signer decides the names in the certificate.
type LeafSigner func(ctx context.Context, req *SignLeafRequest) (*x509.Certificate, error)

// LeafIssuer keeps a leaf certificate for every service registered on this
// node (spiffe://<td>/svc/<name>) and one for the node's proxy
// (spiffe://<td>/proxy/<node>), signed by the cluster CA through its
// LeafSigner, and renews each at half its lifetime. It makes each key
// itself and sends only a CSR: keys never leave the process. Changed is
// closed whenever the set changes.
type LeafIssuer struct {
	store    *discovery.Store
	node     string
	sign     LeafSigner
	lifetime time.Duration
	logger   *slog.Logger

	mu      sync.Mutex
	caFP    string
	signErr string // the last signing error logged
	index   uint64 // the last leaf's Index
	leaves  Leaves
	byName  map[string]*Leaf
	changed chan struct{}
}

// NewLeafIssuer prepares an issuer for node that has its leaves signed by
// sign; Run does the work.
func NewLeafIssuer(store *discovery.Store, node string, sign LeafSigner, lifetime time.Duration, logger *slog.Logger) *LeafIssuer {
	if lifetime <= 0 {
		lifetime = DefaultLeafLifetime
	}
	return &LeafIssuer{store: store, node: node, sign: sign, lifetime: lifetime, logger: logger,
		byName: map[string]*Leaf{}, changed: make(chan struct{})}
}

// Leaves returns the current set (empty until the CA is in the catalog).
func (l *LeafIssuer) Leaves() Leaves {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leaves
}

// Changed is closed at the next change of Leaves.
func (l *LeafIssuer) Changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// Run reissues on every catalog change of the CA or this node's services
// and on the earliest renewal time, until ctx ends.
func (l *LeafIssuer) Run(ctx context.Context) {
	for {
		ws := memdb.NewWatchSet()
		next := l.sync(ctx, ws, time.Now())
		wait, cancel := context.WithTimeout(ctx, time.Until(next))
		ws.WatchCtx(wait)
		cancel()
		if ctx.Err() != nil {
			return
		}
	}
}

// leafSignTimeout bounds one sync's signing (on a client, RPCs that try
// each server in turn).
const leafSignTimeout = time.Minute

// sync brings the leaves in line with the catalog at now and returns when
// it must run again. Only Run's goroutine calls it; the lock guards what
// Leaves reads, and is not held while a leaf is signed (an RPC on a
// client).
func (l *LeafIssuer) sync(ctx context.Context, ws memdb.WatchSet, now time.Time) time.Time {
	next := now.Add(time.Hour)
	_, root, err := l.store.CA(ws)
	if err != nil || root == nil {
		return next
	}
	caCert, err := parseCertPEM(root.CertPEM)
	if err != nil {
		l.logger.Error("the CA certificate in the catalog does not parse", "err", err)
		return next
	}
	// The index at which this node's registrations were seen: a server
	// that signs waits until its catalog has it.
	idx, insts, err := l.store.NodeInstances(ws, l.node)
	if err != nil {
		return now.Add(5 * time.Second)
	}
	want := map[string]bool{"": true} // "" is the node's leaf
	for _, in := range insts {
		if in.InMesh() { // not a mesh service (a server's own, a proxy or gateway record): no identity
			want[in.Service] = true
		}
	}
	l.mu.Lock()
	dirty := false
	if l.caFP != root.Fingerprint {
		// A new CA: every leaf must be reissued under it.
		l.caFP, l.byName, dirty = root.Fingerprint, map[string]*Leaf{}, true
	}
	rootsPEM := root.RootsPEM() // every root still trusted (rotate.go)
	if !bytes.Equal(rootsPEM, l.leaves.RootsPEM) {
		dirty = true
	}
	for name := range l.byName {
		if !want[name] {
			delete(l.byName, name)
			dirty = true
		}
	}
	var due []string
	for name := range want {
		if cur := l.byName[name]; cur == nil || !now.Before(cur.renewAt) {
			due = append(due, name)
		}
	}
	l.mu.Unlock()

	sort.Strings(due)
	sctx, cancel := context.WithTimeout(ctx, leafSignTimeout)
	defer cancel()
	issued := map[string]*Leaf{}
	for _, name := range due {
		leaf, err := l.issue(sctx, caCert, name, idx, now)
		if err != nil {
			next = now.Add(10 * time.Second)
			if msg := err.Error(); msg != l.signErr {
				// A new server gets its sealed key from the leader right
				// after it joins, and a client needs a server that
				// answers: the catalog's next change, or the retry, tries
				// again.
				l.logger.Warn("cannot sign leaf certificates yet", "service", name, "err", err)
				l.signErr = msg
			}
			if errors.Is(err, ErrPermissionDenied) {
				continue // this one only: its registration may just have gone
			}
			break
		}
		l.signErr = ""
		// After a rotation, the chain down to the oldest root: a peer
		// that knows only that root still verifies the leaf.
		leaf.CertPEM = append(leaf.CertPEM, root.ChainPEM()...)
		issued[name] = leaf
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	for _, name := range due {
		if leaf := issued[name]; leaf != nil {
			l.index = max(l.index+1, idx, root.ModifyIndex)
			leaf.Index = l.index
			l.byName[name], dirty = leaf, true
		}
	}
	for _, leaf := range l.byName {
		if leaf.renewAt.Before(next) {
			next = leaf.renewAt
		}
	}
	if dirty {
		out := Leaves{RootsPEM: rootsPEM}
		for name, leaf := range l.byName {
			if name == "" {
				out.Node = leaf
			} else {
				out.Services = append(out.Services, leaf)
			}
		}
		sort.Slice(out.Services, func(i, j int) bool { return out.Services[i].Name < out.Services[j].Name })
		l.leaves = out
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return next
}

// issue makes a key and has a leaf signed for it: the proxy's (name "")
// or service name's. It checks that the answer is for that key, names
// what was asked and chains to the CA.
func (l *LeafIssuer) issue(ctx context.Context, ca *x509.Certificate, name string, minIndex uint64, now time.Time) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	// No names: the signer decides them.
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	req := &SignLeafRequest{Service: name, CSR: csr, MinIndex: minIndex, TTL: l.lifetime}
	if name == "" {
		req.Node = l.node
	}
	cert, err := l.sign(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := checkLeaf(cert, ca, &key.PublicKey, l.node, name); err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Leaf{
		Name: name, URI: cert.URIs[0].String(),
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		NotAfter: cert.NotAfter,
		renewAt:  now.Add(cert.NotAfter.Sub(now) / 2),
	}, nil
}

// checkLeaf checks a signed leaf: ca signed it, for pub, naming node's
// proxy (service "") or the service.
func checkLeaf(cert, ca *x509.Certificate, pub *ecdsa.PublicKey, node, service string) error {
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return fmt.Errorf("the signed leaf is not the cluster CA's: %w", err)
	}
	if !pub.Equal(cert.PublicKey) {
		return errors.New("the signed leaf is not for the key that was sent")
	}
	td, err := trustDomainOf(ca)
	if err != nil {
		return err
	}
	want, err := ProxyID(td, node)
	if service != "" {
		want, err = ServiceID(td, service)
	}
	if err != nil {
		return err
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != want.String() {
		return fmt.Errorf("the signed leaf names %v, not %s", cert.URIs, want)
	}
	return nil
}

// ---- signing ----

// SignLeafRequest asks for a leaf certificate for the calling node.
type SignLeafRequest struct {
	// Service is the service the leaf is for (spiffe://<td>/svc/<Service>);
	// "" asks for the node's proxy leaf (spiffe://<td>/proxy/<node>).
	Service string
	// Node is the node the leaf is for; it must be the caller's own (the
	// name in its node certificate). "" means the caller.
	Node string
	// CSR carries the leaf's public key; nothing else in it is used.
	CSR []byte
	// MinIndex is the catalog index at which the caller saw its service
	// registered: the server waits until its own catalog has it, so a
	// follower that lags is not taken for a refusal.
	MinIndex uint64
	// TTL is the lifetime asked for (DefaultLeafLifetime when 0); the
	// server grants between MinLeafLifetime and MaxLeafLifetime.
	TTL time.Duration
}

// SignLeafResponse is the signed leaf.
type SignLeafResponse struct{ Cert []byte }

// Bounds of a leaf's lifetime.
const (
	MinLeafLifetime = 30 * time.Second
	MaxLeafLifetime = 30 * 24 * time.Hour
)

// leafIndexWait bounds how long a server waits for its catalog to reach a
// SignLeaf's MinIndex before it answers Unavailable (another server may
// be further along). A variable for tests.
var leafIndexWait = 5 * time.Second

func (s *Server) rpcSignLeaf(ctx context.Context, req *SignLeafRequest) (*SignLeafResponse, error) {
	caller, err := s.peerNode(ctx)
	if err != nil {
		return nil, err
	}
	cert, err := s.signLeafFor(ctx, caller, req)
	if err != nil {
		if status.Code(err) == codes.PermissionDenied {
			s.logger.Warn("refused a leaf certificate", "caller", caller, "service", req.Service, "err", status.Convert(err).Message())
		}
		return nil, err
	}
	return &SignLeafResponse{Cert: cert.Raw}, nil
}

// SignLeaf signs a leaf for this server's own node (its LeafIssuer's
// signer), by the same rules as for any caller.
func (s *Server) SignLeaf(ctx context.Context, req *SignLeafRequest) (*x509.Certificate, error) {
	if s.cluster == nil {
		return nil, ErrNotInCluster
	}
	cert, err := s.signLeafFor(ctx, s.cluster.cfg.Identity.Name, req)
	if err != nil {
		return nil, rpcErr(err)
	}
	return cert, nil
}

// signLeafFor signs the leaf req asks for, for node caller only: its
// proxy's leaf (proxy/<caller>), or a service leaf if an instance of that
// service is registered on caller in this server's catalog (once the
// catalog has reached req.MinIndex). The certificate's names are the
// server's; only the CSR's public key is used. A refusal is
// PermissionDenied naming why; a server that cannot open the CA key, or
// lags, answers Unavailable so the caller tries another.
func (s *Server) signLeafFor(ctx context.Context, caller string, req *SignLeafRequest) (*x509.Certificate, error) {
	if req.Node != "" && req.Node != caller {
		return nil, status.Errorf(codes.PermissionDenied, "node %q may get leaf certificates only for itself, not for node %q", caller, req.Node)
	}
	csr, err := x509.ParseCertificateRequest(req.CSR)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "CSR: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "CSR: bad signature: %v", err)
	}
	if req.Service != "" {
		if err := s.waitIndex(ctx, req.MinIndex, leafIndexWait); err != nil {
			return nil, err
		}
		idx, insts, err := s.store.NodeInstances(nil, caller)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		if !slices.ContainsFunc(insts, func(in *discovery.Instance) bool { return in.Service == req.Service && in.InMesh() }) {
			return nil, status.Errorf(codes.PermissionDenied, "no instance of service %q is registered on node %q (catalog index %d): a node gets leaf certificates only for its own services", req.Service, caller, idx)
		}
	}
	ca, err := s.signingCA()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "this server cannot open the cluster CA key yet: %v", err)
	}
	cert, err := ca.signLeaf(csr.PublicKey, caller, req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return cert, nil
}

// signLeaf issues node's proxy leaf (req.Service "") or req.Service's
// leaf to pub, for req.TTL within the bounds. Who may ask is the
// caller's business.
func (ca *CA) signLeaf(pub any, node string, req *SignLeafRequest) (*x509.Certificate, error) {
	ttl := req.TTL
	if ttl <= 0 {
		ttl = DefaultLeafLifetime
	}
	ttl = clampDuration(ttl, MinLeafLifetime, MaxLeafLifetime)
	if req.Service == "" {
		return ca.signNodeLeaf(pub, node, ttl)
	}
	return ca.SignService(pub, req.Service, ttl)
}

// CALeafSigner signs node's leaves with the CA that src gives for store's
// CA record, asking no one: for tests and tools that hold the CA. Agents
// use Server.SignLeaf and Client.SignLeaf.
func CALeafSigner(store *discovery.Store, node string, src CASource) LeafSigner {
	return func(_ context.Context, req *SignLeafRequest) (*x509.Certificate, error) {
		_, root, err := store.CA(nil)
		if err != nil {
			return nil, err
		}
		if root == nil {
			return nil, errNoCAInCatalog
		}
		ca, err := src(root)
		if err != nil {
			return nil, err
		}
		csr, err := x509.ParseCertificateRequest(req.CSR)
		if err != nil {
			return nil, err
		}
		return ca.signLeaf(csr.PublicKey, node, req)
	}
}

// waitIndex waits, at most d, until this server's catalog has applied
// index; Unavailable if it does not.
func (s *Server) waitIndex(ctx context.Context, index uint64, d time.Duration) error {
	if s.fsm.applied.Load() >= index {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := s.waitApplied(wctx, index); err != nil {
		return status.Errorf(codes.Unavailable, "this server's catalog is at index %d, behind index %d that the caller saw; ask another server", s.fsm.applied.Load(), index)
	}
	return nil
}

// signNodeLeaf issues a short-lived leaf naming the node's proxy
// (spiffe://td/proxy/<node>), for its outbound connections (a transparently
// captured connection does not tell which local service opened it). It is
// not a node certificate: the cluster port refuses it.
func (ca *CA) signNodeLeaf(pub any, node string, lifetime time.Duration) (*x509.Certificate, error) {
	td, err := ca.TrustDomain()
	if err != nil {
		return nil, err
	}
	id, err := ProxyID(td, node)
	if err != nil {
		return nil, err
	}
	return ca.sign(pub, node, id.URL(), lifetime)
}

// Lifetime is how long the leaves it issues are valid.
func (l *LeafIssuer) Lifetime() time.Duration { return l.lifetime }
