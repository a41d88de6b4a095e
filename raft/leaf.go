package raft

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/vmesh/vmesh/discovery"
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
	renewAt  time.Time
}

// Leaves is what the local proxy needs for mTLS: the CA roots, a leaf per
// local service and one for the node.
type Leaves struct {
	RootsPEM []byte
	Node     *Leaf
	Services []*Leaf // by name
}

// LeafIssuer keeps a leaf certificate for every service registered on this
// node (spiffe://<td>/svc/<name>) and one for the node's proxy
// (spiffe://<td>/proxy/<node>), signed by the cluster CA from the local
// catalog, and renews each at half its lifetime. Keys never leave the
// process. The CA key comes from its CASource (a server's: its sealed
// key, opened with its node key) only when a leaf is due, and is dropped
// after signing. Changed is closed whenever the set changes.
type LeafIssuer struct {
	store    *discovery.Store
	node     string
	ca       CASource
	lifetime time.Duration
	logger   *slog.Logger

	mu      sync.Mutex
	caFP    string
	caErr   string // the last CASource error logged
	leaves  Leaves
	byName  map[string]*Leaf
	changed chan struct{}
}

// NewLeafIssuer prepares an issuer for node that signs with the CA from
// ca; Run does the work.
func NewLeafIssuer(store *discovery.Store, node string, ca CASource, lifetime time.Duration, logger *slog.Logger) *LeafIssuer {
	if lifetime <= 0 {
		lifetime = DefaultLeafLifetime
	}
	return &LeafIssuer{store: store, node: node, ca: ca, lifetime: lifetime, logger: logger,
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
		next := l.sync(ws, time.Now())
		wait, cancel := context.WithTimeout(ctx, time.Until(next))
		ws.WatchCtx(wait)
		cancel()
		if ctx.Err() != nil {
			return
		}
	}
}

// sync brings the leaves in line with the catalog at now and returns when
// it must run again.
func (l *LeafIssuer) sync(ws memdb.WatchSet, now time.Time) time.Time {
	next := now.Add(time.Hour)
	_, root, err := l.store.CA(ws)
	if err != nil || root == nil {
		return next
	}
	_, insts, err := l.store.NodeInstances(ws, l.node)
	if err != nil {
		return now.Add(5 * time.Second)
	}
	want := map[string]bool{"": true} // "" is the node's leaf
	for _, in := range insts {
		want[in.Service] = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
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
	var ca *CA // opened for the first leaf due, dropped on return
	for name := range want {
		cur := l.byName[name]
		if cur != nil && now.Before(cur.renewAt) {
			continue
		}
		if ca == nil {
			var err error
			if ca, err = l.ca(root); err != nil {
				// A new server gets its sealed key from the leader
				// right after it joins: the CA record changes and
				// wakes this loop.
				if err.Error() != l.caErr {
					l.logger.Warn("cannot sign leaf certificates yet", "err", err)
					l.caErr = err.Error()
				}
				next = now.Add(10 * time.Second)
				break
			}
		}
		l.caErr = ""
		leaf, err := l.issue(ca, name, now)
		if err != nil {
			l.logger.Error("issuing a leaf certificate", "service", name, "err", err)
			next = now.Add(10 * time.Second)
			continue
		}
		// After a rotation, the chain down to the oldest root: a peer
		// that knows only that root still verifies the leaf.
		leaf.CertPEM = append(leaf.CertPEM, root.ChainPEM()...)
		l.byName[name], dirty = leaf, true
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

func (l *LeafIssuer) issue(ca *CA, name string, now time.Time) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	var cert *x509.Certificate
	if name == "" {
		cert, err = ca.signNodeLeaf(&key.PublicKey, l.node, l.lifetime)
	} else {
		cert, err = ca.SignService(&key.PublicKey, name, l.lifetime)
	}
	if err != nil {
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
		renewAt:  now.Add(l.lifetime / 2),
	}, nil
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
