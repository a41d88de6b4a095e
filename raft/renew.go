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
// (admitPeer). Past the grace, the node joins again with a token.

// RenewNodeRequest asks for a new node certificate for the caller.
type RenewNodeRequest struct {
	// CSR carries the new public key; its names are ignored.
	CSR []byte
	// TTL is the lifetime the node wants; the server grants at most its
	// own NodeCertTTL, and at least MinNodeCertTTL.
	TTL time.Duration
}

// RenewNodeResponse is the new node certificate.
type RenewNodeResponse struct{ Cert []byte }

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
	// The one RPC an expired node certificate may make (admitPeer).
	name, err := peerNodeFor(ctx, useRenewal, s.cluster.cfg.RenewGrace)
	if err != nil {
		if cert := peerCert(ctx); cert != nil {
			s.logger.Warn("refused a node certificate renewal", "err", err)
		}
		return nil, err
	}
	cert, err := s.signNodeCert(req.CSR, name, req.TTL)
	if err != nil {
		return nil, err
	}
	s.logger.Info("renewed a node certificate", "node", name, "not_after", cert.NotAfter.UTC().Format(time.RFC3339))
	return &RenewNodeResponse{Cert: cert.Raw}, nil
}

// signNodeCert signs csr as node name's certificate with the CA key this
// server holds; Unavailable when it cannot open it (the caller tries
// another server), InvalidArgument for a bad CSR.
func (s *Server) signNodeCert(csr []byte, name string, ttl time.Duration) (*x509.Certificate, error) {
	ca, err := s.signingCA()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "this server cannot open the cluster CA key yet: %v", err)
	}
	cert, err := ca.SignNode(csr, name, nodeCertTTL(ttl, s.cluster.cfg.NodeCertTTL))
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return cert, nil
}

// renewNodeCert is a server's signer for its own renewal: its own CA key,
// or, while it cannot open it, the other raft servers over RenewNode.
func (s *Server) renewNodeCert(ctx context.Context, csr []byte, ttl time.Duration) ([]byte, error) {
	cert, err := s.signNodeCert(csr, s.cluster.cfg.Identity.Name, ttl)
	if err == nil {
		return cert.Raw, nil
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
	var resp RenewNodeResponse
	if err := anyServer(ctx, s.cluster.clients, addrs, "RenewNode", &RenewNodeRequest{CSR: csr, TTL: ttl}, &resp); err != nil {
		return nil, err
	}
	return resp.Cert, nil
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

// savePair replaces node.pem and node-key.pem as one: both are written
// (0600, synced) under ".new" names, then the key and then the
// certificate are renamed over the old ones. A crash between the two
// renames leaves the new key beside the old certificate and the new
// certificate under its ".new" name, which loadPair puts in place.
func savePair(dir string, cert *x509.Certificate, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	certPath, keyPath := filepath.Join(dir, nodeFile), filepath.Join(dir, nodeKeyFile)
	if err := writeFileAtomic(keyPath+newSuffix, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(certPath+newSuffix, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o600); err != nil {
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

// loadPair reads node.pem and node-key.pem. If they do not match and the
// new certificate of an interrupted savePair matches the key, it
// completes that renewal; leftovers of a savePair that never got to its
// first rename are removed.
func loadPair(dir string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath, keyPath := filepath.Join(dir, nodeFile), filepath.Join(dir, nodeKeyFile)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading node certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("reading node key: %w", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	if key.PublicKey.Equal(cert.PublicKey) {
		os.Remove(keyPath + newSuffix)
		os.Remove(certPath + newSuffix)
		return cert, key, nil
	}
	if b, err := os.ReadFile(certPath + newSuffix); err == nil {
		if next, err := parseCertPEM(b); err == nil && key.PublicKey.Equal(next.PublicKey) {
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
	sign func(ctx context.Context, csr []byte, ttl time.Duration) ([]byte, error)
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
	der, err := r.sign(sctx, csr, r.ttl)
	cancel()
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("the renewed node certificate does not parse: %w", err)
	}
	name, err := r.id.verifyPeer([][]byte{cert.Raw}, useCluster, time.Now(), 0)
	if err != nil {
		return fmt.Errorf("the renewed node certificate: %w", err)
	}
	if name != r.id.Name {
		return fmt.Errorf("the renewed node certificate names node %q, not %q", name, r.id.Name)
	}
	var keep *ecdsa.PrivateKey
	if r.keep != nil {
		keep = r.keep()
	}
	if err := r.id.renew(r.dataDir, cert, key, keep); err != nil {
		return fmt.Errorf("installing the renewed node certificate: %w", err)
	}
	r.logger.Info("renewed the node certificate", "not_after", cert.NotAfter.UTC().Format(time.RFC3339))
	if r.renewed != nil {
		r.renewed(ctx)
	}
	return nil
}

// renew writes cert and key to dataDir (when set) and makes them the
// current pair. keep, when not nil, is an earlier key to keep beside
// them, in memory and in node-key.prev.pem, written before the new pair
// so that no crash loses the key a sealed CA key is sealed to; without
// it that file is removed.
func (id *Identity) renew(dataDir string, cert *x509.Certificate, key, keep *ecdsa.PrivateKey) error {
	if !key.PublicKey.Equal(cert.PublicKey) {
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
		if err := savePair(dir, cert, key); err != nil {
			return err
		}
		if keep == nil {
			if err := os.Remove(prevPath); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
	}
	id.prev.Store(keep)
	return id.setPair(cert, key, id.epoch()+1)
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
