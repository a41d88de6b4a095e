package raft

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Renewal of node certificates.
//
// A node certificate lives NodeCertTTL (24 h by default) and is renewed at
// about half its life: the node makes a fresh key and sends a CSR for it
// in RenewNode, authenticated by its current node certificate; a server
// signs for the caller's own node name only (the certificate's, never the
// request's), taking nothing from the CSR but its public key. A client
// asks the servers it knows in turn; a server signs its own with the CA
// key it holds, and asks another server only while it cannot open it.
// The new pair is written to the data dir (savePair) and swapped into the
// Identity, which every later TLS handshake on the cluster port reads.
//
// A node that was away longer than its certificate's life comes back by
// itself: the cluster port accepts an expired node certificate (signed by
// the cluster CA) for RenewNode only, up to RenewGrace (30 days by
// default) after its expiry, and refuses it for raft and every other RPC
// (admitPeer). Past the grace, the node joins again with a token. A node
// that left or was removed is refused even within the grace: admitPeer
// applies the deny list (trust.go) to every use, renewal included.
//
// A signer issues with SignNodeAt at its catalog's index, read before it
// checks the caller against the deny list, with the active CA key, and
// answers the CA, the cross-signed chain and the previous roots with the
// certificate: after a CA rotation, a node moves to the new key with its
// next renewal, and its data dir's roots follow (ca.pem).

// RenewNodeRequest asks for a new node certificate for the caller.
type RenewNodeRequest struct {
	// CSR carries the new public key; its names are ignored.
	CSR []byte
	// TTL is the lifetime the node wants; the server grants at most its
	// own NodeCertTTL, and at least MinNodeCertTTL.
	TTL time.Duration
}

// RenewNodeResponse is the new node certificate and what it chains to,
// as JoinResponse has them (DER): the CA that signed it, the chain from
// that CA down to the oldest root still trusted (cross-signed roots,
// newest first) and the previous roots (newest first). After a CA
// rotation the certificate is the new key's, so the node moves to it with
// its next renewal. An older server sends only Cert.
type RenewNodeResponse struct {
	Cert  []byte
	CA    []byte   `json:",omitempty"`
	Chain [][]byte `json:",omitempty"`
	Roots [][]byte `json:",omitempty"`
}

// nodeCertTTL is the lifetime a server grants to a request for want.
func nodeCertTTL(want, max time.Duration) time.Duration {
	if want <= 0 || want > max {
		want = max
	}
	return clampDuration(want, MinNodeCertTTL, MaxNodeCertTTL)
}

func clampDuration(d, lo, hi time.Duration) time.Duration {
	return min(max(d, lo), hi)
}

func (s *Server) rpcRenewNode(ctx context.Context, req *RenewNodeRequest) (*RenewNodeResponse, error) {
	// The issue index is read before the deny list (trust.go): a
	// revocation this server has not applied yet is at a higher index,
	// so what it signs now is denied once it has.
	issued := s.store.LastIndex()
	// The one RPC an expired node certificate may make, and only one that
	// is not revoked (admitPeer): a node that left or was removed does not
	// come back by renewing within the grace.
	name, err := s.peerNodeFor(ctx, useRenewal, s.cluster.cfg.RenewGrace)
	if err != nil {
		if cert := peerCert(ctx); cert != nil {
			s.logger.Warn("refused a node certificate renewal", "err", err)
		}
		return nil, err
	}
	resp, cert, err := s.signNodeCert(req.CSR, name, issued, req.TTL)
	if err != nil {
		return nil, err
	}
	s.logger.Info("renewed a node certificate", "node", name, "not_after", cert.NotAfter.UTC().Format(time.RFC3339), "issued_index", issued)
	return resp, nil
}

// signNodeCert signs csr as node name's certificate, issued at raft index
// issued, with the active CA key this server holds, and returns it with
// the chain and roots that go with it; Unavailable when it cannot open
// the key (the caller tries another server), InvalidArgument for a bad
// CSR.
func (s *Server) signNodeCert(csr []byte, name string, issued uint64, ttl time.Duration) (*RenewNodeResponse, *x509.Certificate, error) {
	ca, root, err := s.signingCARecord()
	if err != nil {
		return nil, nil, status.Errorf(codes.Unavailable, "this server cannot open the cluster CA key yet: %v", err)
	}
	cert, err := ca.SignNodeAt(csr, name, issued, nodeCertTTL(ttl, s.cluster.cfg.NodeCertTTL))
	if err != nil {
		return nil, nil, status.Error(codes.InvalidArgument, err.Error())
	}
	chain, roots, err := trustDERs(root)
	if err != nil {
		return nil, nil, status.Error(codes.Internal, err.Error())
	}
	return &RenewNodeResponse{Cert: cert.Raw, CA: ca.Cert.Raw, Chain: chain, Roots: roots}, cert, nil
}

// renewNodeCert is a server's signer for its own renewal: its own CA key,
// or, while it cannot open it, the other raft servers over RenewNode.
func (s *Server) renewNodeCert(ctx context.Context, csr []byte, ttl time.Duration) (*RenewNodeResponse, error) {
	id := s.cluster.cfg.Identity
	issued := s.store.LastIndex() // before the deny list, as rpcRenewNode
	// A server signs its own only while the deny list lets its current
	// certificate in: one that was removed does not sign itself back. (Its
	// expiry does not matter here: a server that holds the CA key renews
	// itself however long it was away.)
	if err := id.admitPeer(id.Name, id.Cert(), useHandshake, time.Now(), 0); err != nil {
		return nil, err
	}
	resp, _, err := s.signNodeCert(csr, id.Name, issued, ttl)
	if err == nil {
		return resp, nil
	}
	if status.Code(err) != codes.Unavailable {
		return nil, rpcErr(err)
	}
	f := s.raft.GetConfiguration()
	if ferr := f.Error(); ferr != nil {
		return nil, ferr
	}
	var addrs []string
	for _, srv := range f.Configuration().Servers {
		if string(srv.Address) != s.Addr() {
			addrs = append(addrs, string(srv.Address))
		}
	}
	if len(addrs) == 0 {
		return nil, rpcErr(err)
	}
	var remote RenewNodeResponse
	if err := anyServer(ctx, s.cluster.clients, addrs, "RenewNode", &RenewNodeRequest{CSR: csr, TTL: ttl}, &remote); err != nil {
		return nil, err
	}
	return &remote, nil
}

// anyServer calls method on addrs in turn until one answers. It moves on
// from a server it cannot reach or that is Unavailable (it cannot open
// the CA key yet, say), and returns any other refusal as it is.
func anyServer(ctx context.Context, clients *rpcClients, addrs []string, method string, req, resp any) error {
	var last error
	for _, addr := range addrs {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := clients.call(cctx, addr, method, req, resp)
		cancel()
		if err == nil {
			return nil
		}
		last = fmt.Errorf("%s: %w", addr, rpcErr(err))
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unavailable && st.Code() != codes.DeadlineExceeded {
			return last
		}
		if ctx.Err() != nil {
			break
		}
	}
	if last == nil {
		last = errors.New("no server known")
	}
	return fmt.Errorf("no server signed: %w", last)
}

// savePair replaces node.pem (certs: the node certificate, then its
// chain) and node-key.pem as one: both are written (0600, synced) under
// ".new" names, then the key and then the certificate are renamed over
// the old ones. A crash between the two renames leaves the new key beside
// the old certificate and the new certificate under its ".new" name,
// which loadPair puts in place.
func savePair(dir string, certs []*x509.Certificate, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(dir, nodeFile), filepath.Join(dir, nodeKeyFile)
	if err := writeFileAtomic(keyPath+newSuffix, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(certPath+newSuffix, encodeCertsPEM(certs), 0o600); err != nil {
		return err
	}
	if err := os.Rename(keyPath+newSuffix, keyPath); err != nil {
		return err
	}
	if err := os.Rename(certPath+newSuffix, certPath); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes the renames in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// loadPair reads node.pem (the node certificate, then its chain) and
// node-key.pem. If they do not match and the new certificate of an
// interrupted savePair matches the key, it completes that renewal;
// leftovers of a savePair that never got to its first rename are removed.
func loadPair(dir string) ([]*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(dir, nodeFile), filepath.Join(dir, nodeKeyFile)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading node certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading node key: %w", err)
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	if key.PublicKey.Equal(certs[0].PublicKey) {
		os.Remove(keyPath + newSuffix)
		os.Remove(certPath + newSuffix)
		return certs, key, nil
	}
	if b, err := os.ReadFile(certPath + newSuffix); err == nil {
		if next, err := parseCertsPEM(b); err == nil && key.PublicKey.Equal(next[0].PublicKey) {
			if err := os.Rename(certPath+newSuffix, certPath); err != nil {
				return nil, nil, fmt.Errorf("completing an interrupted node certificate renewal: %w", err)
			}
			return next, key, nil
		}
	}
	return nil, nil, fmt.Errorf("%s does not match the key in %s", certPath, keyPath)
}

// renewal is how a node renews its certificate: how long it wants it,
// where it writes it, who signs.
type renewal struct {
	id      *Identity
	dataDir string
	ttl     time.Duration
	// sign has the CSR signed for this node's own name.
	sign func(ctx context.Context, csr []byte, ttl time.Duration) (*RenewNodeResponse, error)
	// keep, when set, names the earlier key to keep (a server's CA key
	// may be sealed to it; custody.go). A client keeps none.
	keep func() *ecdsa.PrivateKey
	// renewed runs after the new pair is in use.
	renewed func(ctx context.Context)
	logger  *slog.Logger
}

// renewAt is when cert is due: at half its life (not counting the
// backdate), or at once when its life is over twice ttl (a certificate
// from before the lifetime was shortened, such as the five-year ones of
// older agents).
func renewAt(cert *x509.Certificate, ttl time.Duration) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore) - certBackdate
	if life > 2*ttl {
		return cert.NotBefore
	}
	return cert.NotAfter.Add(-life / 2)
}

// run renews the certificate whenever it is due, until ctx ends. A failed
// attempt is retried with back-off (1 s doubling to 1 min).
func (r *renewal) run(ctx context.Context) {
	backoff := time.Second
	for {
		wait := time.Until(renewAt(r.id.Cert(), r.ttl))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := r.renewOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			cert := r.id.Cert()
			args := []any{"err", err, "not_after", cert.NotAfter.UTC().Format(time.RFC3339), "retry_in", backoff}
			if time.Now().After(cert.NotAfter) {
				r.logger.Error("renewing the expired node certificate failed; if it expired longer ago than the servers' cluster.node_cert_grace, join again with a new token", args...)
			} else {
				r.logger.Warn("renewing the node certificate failed", args...)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Minute)
			continue
		}
		backoff = time.Second
	}
}

// renewOnce makes a new key, has it signed, checks the answer, saves the
// pair and puts it in use.
func (r *renewal) renewOnce(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: r.id.Name}}, key)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	resp, err := r.sign(sctx, csr, r.ttl)
	cancel()
	if err != nil {
		return err
	}
	next, err := r.id.renewedPair(resp, key)
	if err != nil {
		return fmt.Errorf("the renewed node certificate: %w", err)
	}
	var keep *ecdsa.PrivateKey
	if r.keep != nil {
		keep = r.keep()
	}
	if err := r.id.renew(r.dataDir, next, keep); err != nil {
		return fmt.Errorf("installing the renewed node certificate: %w", err)
	}
	r.logger.Info("renewed the node certificate", "not_after", next.cert.NotAfter.UTC().Format(time.RFC3339), "ca", Fingerprint(next.roots[0]))
	if r.renewed != nil {
		r.renewed(ctx)
	}
	return nil
}

// renewedPair checks a signer's answer for key and makes it a pair: the
// certificate is for key, names this node, and verifies, through the
// chain that came with it, against the roots this node trusts now; and it
// is not one the deny list refuses. An answer without a CA (an older
// server) keeps the current roots and chain.
func (id *Identity) renewedPair(resp *RenewNodeResponse, key *ecdsa.PrivateKey) (*nodePair, error) {
	cert, err := x509.ParseCertificate(resp.Cert)
	if err != nil {
		return nil, fmt.Errorf("does not parse: %w", err)
	}
	cur := id.cur.Load()
	chain, roots := cur.chain, cur.roots
	if len(resp.CA) == 0 {
		// An older server: it can only have signed with the CA this node
		// already has, or the data dir would not verify what it holds.
		if err := cert.CheckSignatureFrom(cur.roots[0]); err != nil {
			return nil, fmt.Errorf("the signer sent no CA and this node's CA did not sign it: %w", err)
		}
	} else {
		ca, err := x509.ParseCertificate(resp.CA)
		if err != nil {
			return nil, fmt.Errorf("its CA does not parse: %w", err)
		}
		if chain, err = parseDERs(resp.Chain); err != nil {
			return nil, fmt.Errorf("its chain does not parse: %w", err)
		}
		prev, err := parseDERs(resp.Roots)
		if err != nil {
			return nil, fmt.Errorf("its previous roots do not parse: %w", err)
		}
		if err := cert.CheckSignatureFrom(ca); err != nil {
			return nil, fmt.Errorf("not signed by the CA that came with it: %w", err)
		}
		roots = append([]*x509.Certificate{ca}, prev...)
	}
	pair, err := id.newPair(cert, key, chain, roots, cur.epoch+1)
	if err != nil {
		return nil, err
	}
	// The roots this node trusts now (its catalog's, else its data
	// dir's) decide, not the ones the answer brought.
	name, err := id.verifyChain(append([]*x509.Certificate{cert}, chain...), id.trustBundle(), time.Now())
	if err != nil {
		return nil, err
	}
	if name != id.Name {
		return nil, fmt.Errorf("names node %q, not %q", name, id.Name)
	}
	if err := id.admitPeer(name, cert, useCluster, time.Now(), 0); err != nil {
		return nil, err
	}
	return pair, nil
}

// renew writes next (a pair renewedPair made) to dataDir (when set) and
// makes it the current pair. keep, when not nil, is an earlier key to
// keep beside it, in memory and in node-key.prev.pem, written before the
// new pair so that no crash loses the key a sealed CA key is sealed to;
// without it that file is removed. The roots (ca.pem) are written before
// the pair: the current certificate verifies against them too, since the
// signer trusted it (a crash in between loads the old pair under the new
// roots).
func (id *Identity) renew(dataDir string, next *nodePair, keep *ecdsa.PrivateKey) error {
	if !next.key.PublicKey.Equal(next.cert.PublicKey) {
		return errors.New("raft: the node key does not match the renewed certificate")
	}
	if dataDir != "" {
		dir := tlsDir(dataDir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		prevPath := filepath.Join(dir, prevKeyFile)
		if keep != nil {
			der, err := x509.MarshalECPrivateKey(keep)
			if err != nil {
				return err
			}
			if err := writeFileAtomic(prevPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
				return err
			}
		}
		if !slices.EqualFunc(next.roots, id.Roots(), (*x509.Certificate).Equal) {
			if err := writeFileAtomic(filepath.Join(dir, caFile), encodeCertsPEM(next.roots), 0o600); err != nil {
				return err
			}
		}
		if err := savePair(dir, append([]*x509.Certificate{next.cert}, next.chain...), next.key); err != nil {
			return err
		}
		if keep == nil {
			if err := os.Remove(prevPath); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	id.prev.Store(keep)
	next.epoch = id.epoch() + 1
	id.cur.Store(next)
	return nil
}

// nodeRenewal is this server's renewal: it signs its own certificate, and
// keeps the earlier node key while its sealed CA key is sealed to it.
func (s *Server) nodeRenewal() *renewal {
	id := s.cluster.cfg.Identity
	return &renewal{
		id: id, dataDir: s.dataDir, ttl: s.cluster.cfg.NodeCertTTL, sign: s.renewNodeCert,
		keep: func() *ecdsa.PrivateKey {
			_, root, _ := s.store.CA(nil)
			if root == nil {
				return nil
			}
			return custodyKey(root, id)
		},
		renewed: func(ctx context.Context) {
			// The leader seals its own blob to its new key; another
			// server's is sealed again by the leader on its next heartbeat
			// (healCustody), which the new certificate carries.
			if s.IsLeader() {
				if err := s.sealCAFor(ctx, id.Name, &id.Key().PublicKey); err != nil {
					s.logger.Warn("sealing the CA key to the renewed node key", "err", err)
				}
			}
		},
		logger: s.logger.With("component", "node-cert"),
	}
}

// renewLoop renews this server's node certificate until Close.
func (s *Server) renewLoop() {
	defer s.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-s.done
		cancel()
	}()
	s.nodeRenewal().run(ctx)
}
