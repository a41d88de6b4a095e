package raft

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/vmesh/vmesh/discovery"
)

// What the cluster port trusts, and what it no longer does.
//
// Roots. A node trusts the roots in its data dir (tls/ca.pem) until it
// follows a catalog (a server's raft state, a client's replica); from then
// on it trusts every root the catalog's CA record lists: the active one
// and those a rotation replaced that are not dropped yet (rotate.go). So
// a rotation reaches every verifier through raft or the replica stream,
// and a node that slept through one still verifies peers whose new
// certificates present the cross-signed chain down to the root it knows.
//
// Deny list. A node that leaves, or that an operator removes, is revoked
// (revoke.go): the catalog records its name and the raft index of the
// revocation. Every node certificate carries the raft index it was issued
// at (in its serial number, issuedSerial), so a certificate of that name
// issued at or before the revocation is refused on every handshake, while
// one issued after a new join (with a new token, at a later index) is not.
// Certificates from before issue indexes were recorded count as issued at
// index 0. A node that is only down, or reaped after its TTL, is never
// revoked and comes back with the certificate it has.

// ErrRevoked: a peer presented a node certificate the deny list refuses.
var ErrRevoked = errors.New("raft: node certificate revoked")

// issuedMark is the bit set in the serial number of a certificate that
// carries its issue index: serials drawn before are below 2^126, so
// they never have it. Bits 64..127 hold the index, bits 0..63 are random.
const issuedMark = 150

// issuedSerial is a serial number carrying issue index idx (at most 151
// bits: within X.509's 20 octets).
func issuedSerial(idx uint64) *big.Int {
	r, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	n := new(big.Int).Lsh(big.NewInt(1), issuedMark)
	n.Or(n, new(big.Int).Lsh(new(big.Int).SetUint64(idx), 64))
	return n.Or(n, r)
}

// issuedIndex is the raft index a node certificate was issued at; 0 for
// one that does not say.
func issuedIndex(cert *x509.Certificate) uint64 {
	sn := cert.SerialNumber
	if sn == nil || sn.Sign() <= 0 || sn.BitLen() != issuedMark+1 {
		return 0
	}
	return new(big.Int).Rsh(sn, 64).Uint64() // the low 64 bits: the mark is above them
}

// presentedChain is what a node sends on the cluster port: its
// certificate, the cross-signed chain, and the roots of its data dir,
// the oldest last. A joiner finds among them the root its token pins
// (membership.go); peers ignore what they do not need.
func presentedChain(cert *x509.Certificate, chain, roots []*x509.Certificate) [][]byte {
	out := [][]byte{cert.Raw}
	for _, c := range append(slices.Clone(chain), roots...) {
		out = append(out, c.Raw)
	}
	return out
}

func parseCertsPEM(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, not a CERTIFICATE", len(out)+1, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return out, nil
}

func encodeCertsPEM(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// caTrust is a CA record parsed: its roots, active first, and the chain
// the active key's certificates present (discovery.CARoot.ChainPEM).
type caTrust struct {
	roots []*x509.Certificate
	chain []*x509.Certificate
}

func parseCATrust(root *discovery.CARoot) (*caTrust, error) {
	roots, err := parseCertsPEM(root.RootsPEM())
	if err != nil {
		return nil, fmt.Errorf("the CA record's roots: %w", err)
	}
	t := &caTrust{roots: roots}
	if chain := root.ChainPEM(); len(chain) > 0 {
		if t.chain, err = parseCertsPEM(chain); err != nil {
			return nil, fmt.Errorf("the CA record's cross-signed chain: %w", err)
		}
	}
	return t, nil
}

// trustDERs is what a node certificate the active key of root signs
// travels with (JoinResponse, RenewNodeResponse): the cross-signed chain
// down to the oldest root still trusted and the previous roots, newest
// first, DER.
func trustDERs(root *discovery.CARoot) (chain, roots [][]byte, err error) {
	ct, err := parseCATrust(root)
	if err != nil {
		return nil, nil, err
	}
	for _, c := range ct.chain {
		chain = append(chain, c.Raw)
	}
	for _, c := range ct.roots[1:] {
		roots = append(roots, c.Raw)
	}
	return chain, roots, nil
}

// pinnedRoot is the fingerprint a join token pins: the oldest root still
// trusted, the one every node's presented chain ends at (presentedChain),
// whether its certificate was signed before or after the rotations since.
func pinnedRoot(root *discovery.CARoot) string {
	if n := len(root.PreviousRoots); n > 0 {
		return root.PreviousRoots[n-1].Fingerprint
	}
	return root.Fingerprint
}

// catalogTrust makes an Identity trust what a catalog says: the roots its
// CA record lists and its deny list.
type catalogTrust struct {
	store  *discovery.Store
	logger *slog.Logger

	mu     sync.Mutex
	record *discovery.CARoot // the record cached is parsed from
	cached *x509bundle.Bundle
	logged map[string]time.Time // node+serial -> last refusal logged
}

// followCatalog makes id trust what store's CA record and deny list say,
// from now on, on every handshake.
func (id *Identity) followCatalog(store *discovery.Store, logger *slog.Logger) {
	id.trust.Store(&catalogTrust{store: store, logger: logger, logged: map[string]time.Time{}})
}

// bundle is the catalog's roots for td, or nil while the catalog holds no
// CA (a client before its first snapshot: the data dir's roots serve).
func (t *catalogTrust) bundle(td spiffeid.TrustDomain) *x509bundle.Bundle {
	_, root, err := t.store.CA(nil)
	if err != nil || root == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if root != t.record { // catalog records are immutable: a new one is a new pointer
		ct, err := parseCATrust(root)
		if err != nil {
			t.logger.Error("cluster port: the catalog's CA record does not parse; trusting the data dir's roots", "err", err)
			return nil
		}
		t.record, t.cached = root, x509bundle.FromX509Authorities(td, ct.roots)
	}
	return t.cached
}

// logEvery bounds how often one refused certificate is logged: a revoked
// node retries every few seconds.
const logEvery = time.Minute

// check refuses a certificate of node name issued at or before the
// node's revocation, naming the node and the reason in the error and,
// once a minute per certificate, in the log.
func (t *catalogTrust) check(name string, cert *x509.Certificate) error {
	rev, err := t.store.Revocation(nil, name)
	if err != nil || rev == nil {
		return err
	}
	issued := issuedIndex(cert)
	if issued > rev.Index {
		return nil // issued after the revocation: a new join
	}
	at := time.Unix(rev.At, 0).UTC().Format(time.RFC3339)
	err = fmt.Errorf("%w: node %q: %s at %s (raft index %d); this certificate (serial %x) was issued before, at index %d; join again with a new token",
		ErrRevoked, name, rev.Reason, at, rev.Index, cert.SerialNumber, issued)
	if t.shouldLog(name+"/"+cert.SerialNumber.String(), time.Now()) {
		t.logger.Warn("cluster port: refused a revoked node certificate", "node", name, "reason", rev.Reason, "revoked_at", at,
			"revocation_index", rev.Index, "issued_index", issued, "serial", fmt.Sprintf("%x", cert.SerialNumber))
	}
	return err
}

// shouldLog says whether the refusal of key is logged now: once per
// logEvery.
func (t *catalogTrust) shouldLog(key string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if last, ok := t.logged[key]; ok && now.Sub(last) < logEvery {
		return false
	}
	if len(t.logged) >= 1024 { // forget rather than grow without bound
		clear(t.logged)
	}
	t.logged[key] = now
	return true
}
