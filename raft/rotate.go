package raft

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/vmesh/vmesh/discovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// CA rotation, on the leader:
//
//  1. It opens the current CA key (its sealed copy) and creates a new CA
//     of the same trust domain.
//  2. It cross-signs the new root with the old key: a certificate with
//     the new root's subject and key, issued by the old root. Whatever
//     the new key signs then presents it (discovery.CARoot.ChainPEM), so
//     a peer that still trusts only the old root verifies it.
//  3. It seals the new key to every server that holds the old one
//     (custody.go; a server missing then gets it on its next heartbeat).
//  4. It writes one CA record: the new root active, the old one first in
//     PreviousRoots. Every verifier trusts every root the record lists:
//     the cluster port (trust.go), and every proxy through the roots its
//     agent serves over xDS.
//
// From then on the leader signs node certificates with the new key, each
// server's leaf issuer reissues its leaves under it (the fingerprint
// changed), and node certificates move to it when they are next renewed.
// A previous root is dropped previousRootKeep after the rotation: by then
// no certificate it signed is valid. A second rotation before that keeps
// it, so the record may list several previous roots, each cross-signed by
// the one before.

// previousRootKeep is how long a replaced root stays trusted: the longest
// a certificate it signed can live (a node certificate, NodeCertTTL; a
// node renews at half of it, onto the new key; leaves are shorter and
// reissued at once), with an hour for clocks. A node that was away longer
// than that cannot renew its certificate of the old key any more: it
// joins again with a new token.
func (s *Server) previousRootKeep() time.Duration {
	return s.cluster.cfg.NodeCertTTL + time.Hour
}

// RotateCAResponse answers a rotation with the raft index that carries it.
type RotateCAResponse struct {
	Index       uint64
	Fingerprint string
}

// RotateCA replaces the cluster CA with a new one, cross-signed by the
// current one, and returns the new record (without keys) once this node's
// catalog holds it. A follower forwards it to the leader.
func (s *Server) RotateCA(ctx context.Context) (*discovery.CARoot, error) {
	if s.cluster == nil {
		return nil, ErrNotInCluster
	}
	var resp RotateCAResponse
	if s.IsLeader() {
		idx, err := s.rotateCA(ctx, s.cluster.cfg.Identity.Name)
		if err != nil {
			return nil, rpcErr(err)
		}
		resp.Index = idx
	} else if err := s.leaderCall(ctx, "RotateCA", &Empty{}, &resp, false); err != nil {
		return nil, err
	}
	if err := s.waitApplied(ctx, resp.Index); err != nil {
		return nil, err
	}
	_, root, err := s.store.CA(nil)
	if err != nil || root == nil {
		return nil, errors.Join(errNoCAInCatalog, err)
	}
	return root.Public(), nil
}

func (s *Server) rpcRotateCA(ctx context.Context, _ *Empty) (*RotateCAResponse, error) {
	caller, err := s.serverCallerAtLeader(ctx, "rotating the CA")
	if err != nil {
		return nil, err
	}
	idx, err := s.rotateCA(ctx, caller)
	if err != nil {
		return nil, err
	}
	_, root, _ := s.store.CA(nil)
	return &RotateCAResponse{Index: idx, Fingerprint: root.Fingerprint}, nil
}

// rotateCA is the rotation on the leader; by names the server the
// operator asked. It returns gRPC statuses.
func (s *Server) rotateCA(ctx context.Context, by string) (uint64, error) {
	s.custody.mu.Lock() // the record is rewritten whole, as custody does
	defer s.custody.mu.Unlock()
	_, cur, err := s.store.CA(nil)
	if err != nil {
		return 0, status.Error(codes.Internal, err.Error())
	}
	if cur == nil {
		return 0, status.Error(codes.Unavailable, errNoCAInCatalog.Error())
	}
	old, err := s.UnsealCA(cur)
	if err != nil {
		return 0, status.Errorf(codes.Unavailable, "this leader cannot open the current CA key to cross-sign the new one: %v", err)
	}
	next, cross, err := newCrossSignedCA(old, cur.TrustDomain)
	if err != nil {
		return 0, status.Errorf(codes.Internal, "creating the new CA: %v", err)
	}
	now := time.Now()
	rec := discovery.CARoot{
		CertPEM:        pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: next.Cert.Raw}),
		TrustDomain:    cur.TrustDomain,
		Fingerprint:    Fingerprint(next.Cert),
		CrossSignedPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cross.Raw}),
		PreviousRoots: append([]discovery.TrustedRoot{{
			CertPEM: cur.CertPEM, Fingerprint: cur.Fingerprint, CrossSignedPEM: cur.CrossSignedPEM,
			RetiredAt: now.Unix(), DropAfter: now.Add(s.previousRootKeep()).Unix(),
		}}, cur.PreviousRoots...),
	}
	// Every server that holds the old key gets the new one, sealed to the
	// same node key.
	for _, sk := range cur.SealedKeys {
		pub, err := ecdh.P256().NewPublicKey(sk.Recipient)
		if err != nil {
			s.logger.Warn("rotating the CA: a server's recorded node key does not parse; it gets the new key on its next heartbeat", "node", sk.Node, "err", err)
			continue
		}
		sealed, err := sealCAKeyTo(next, sk.Node, pub)
		if err != nil {
			return 0, status.Errorf(codes.Internal, "sealing the new CA key to %s: %v", sk.Node, err)
		}
		rec.SealedKeys = append(rec.SealedKeys, sealed)
	}
	if self := s.cluster.cfg.Identity; rec.SealedFor(self.Name) == nil { // it opened a legacy clear key
		sealed, err := SealCAKey(next, self.Name, &self.Key().PublicKey)
		if err != nil {
			return 0, status.Errorf(codes.Internal, "sealing the new CA key to this leader: %v", err)
		}
		rec.SealedKeys = append(rec.SealedKeys, sealed)
	}
	idx, err := s.applyCmd(ctx, discovery.SetCARequest{CA: rec})
	if err != nil {
		return 0, status.Errorf(codes.Unavailable, "writing the new CA: %v", err)
	}
	s.logger.Info("rotated the cluster CA", "by", by, "old", cur.Fingerprint, "new", rec.Fingerprint,
		"sealed_to", len(rec.SealedKeys), "old_root_trusted_until", time.Unix(rec.PreviousRoots[0].DropAfter, 0).UTC().Format(time.RFC3339))
	return idx, nil
}

// newCrossSignedCA creates a CA of trust domain td and its root
// cross-signed by old: same subject and key, issued by old's root, valid
// no longer than either.
func newCrossSignedCA(old *CA, td string) (*CA, *x509.Certificate, error) {
	id := make([]byte, 4)
	rand.Read(id)
	next, err := newCA(td, time.Now().UTC().Format("20060102")+"-"+hex.EncodeToString(id))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		RawSubject:            next.Cert.RawSubject,
		SubjectKeyId:          next.Cert.SubjectKeyId,
		NotBefore:             next.Cert.NotBefore,
		NotAfter:              next.Cert.NotAfter,
		KeyUsage:              next.Cert.KeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
		URIs:                  next.Cert.URIs,
	}
	if old.Cert.NotAfter.Before(tmpl.NotAfter) {
		tmpl.NotAfter = old.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, old.Cert, &next.Key.PublicKey, old.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("cross-signing the new root: %w", err)
	}
	cross, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return next, cross, nil
}

// dropRetiredRoots, on the leader, stops trusting previous roots past
// their DropAfter.
func (s *Server) dropRetiredRoots(ctx context.Context, now time.Time) {
	err := s.updateCustody(ctx, func(root *discovery.CARoot) (bool, error) {
		var keep []discovery.TrustedRoot
		for _, r := range root.PreviousRoots {
			if now.Unix() < r.DropAfter {
				keep = append(keep, r)
			} else {
				s.logger.Info("dropped a previous CA root: no certificate it signed is valid any more", "root", r.Fingerprint)
			}
		}
		if len(keep) == len(root.PreviousRoots) {
			return false, nil
		}
		root.PreviousRoots = keep
		return true, nil
	})
	if err != nil && !errors.Is(err, errNoCAInCatalog) {
		s.logger.Warn("dropping previous CA roots", "err", err)
	}
}
